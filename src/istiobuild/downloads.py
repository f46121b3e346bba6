"""Files upstream scripts would download (istio's init.sh: 1.5.x wasm plugins, 1.4.x helm).

istiobuild never lets them download anything unpinned: it places every file itself, from the
user's `downloads` directory or fetched with requests and checked against a pinned sha256, and
points init.sh's download URLs at a dead file:// URL so a missed skip fails instead of fetching.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from istiobuild.errors import SourceError

OFFLINE_URL = "file:///nonexistent/istiobuild-offline"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Download:
    """One file, as the release data describes it (templates already filled in)."""

    name: str  # file name in the downloads directory and in the cache
    url: str
    sha256: str  # "" = no pin known: never downloaded, must be supplied by the user
    into: str  # "envoy_dir" (next to the local envoy) or "istio_out" (ISTIO_OUT)
    place: tuple[str, ...]  # names to place it under (the whole file, or `extract` from it)
    extract: str = ""  # member of a .tar.gz to place instead of the archive
    touch: tuple[str, ...] = ()  # empty stamp files init scripts check


def fill(template: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def obtain(item: Download, *, supplied: Path | None, cache: Path) -> tuple[Path, str]:
    """The file, from the user's directory or the cache or a pinned download; returns (path, source)."""
    if supplied is not None and (supplied / item.name).is_file():
        path = supplied / item.name
        digest = sha256_file(path)
        if item.sha256 and digest != item.sha256:
            raise SourceError(
                f"{path} has sha256 {digest}, but the release pins {item.sha256}",
                hint="the supplied file is not the pinned one: replace it, or remove it to let istiobuild download it",
            )
        return path, "supplied"
    cached = cache / item.name
    if item.sha256 and cached.is_file() and sha256_file(cached) == item.sha256:
        return cached, "cache"
    if not item.sha256:
        where = str(supplied) if supplied else "a directory named by the `downloads` setting (ISTIOBUILD_DOWNLOADS)"
        raise SourceError(
            f"{item.name} is needed and no sha256 is pinned for it, so istiobuild will not download it",
            hint=f"fetch {item.url} yourself, check it, and put it in {where}",
        )
    return _download(item, cached), "download"


def _download(item: Download, dest: Path) -> Path:
    import requests

    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        try:
            with requests.get(item.url, stream=True, timeout=60) as response:
                response.raise_for_status()
                for chunk in response.iter_content(1 << 20):
                    digest.update(chunk)
                    tmp.write(chunk)
        except requests.RequestException as exc:
            Path(tmp.name).unlink(missing_ok=True)
            raise SourceError(
                f"cannot download {item.url}: {type(exc).__name__}",
                hint="check the network, or supply the file in the `downloads` directory (ISTIOBUILD_DOWNLOADS)",
            ) from None
    if digest.hexdigest() != item.sha256:
        Path(tmp.name).unlink(missing_ok=True)
        raise SourceError(
            f"{item.url} has sha256 {digest.hexdigest()}, but the release pins {item.sha256}",
            hint="the file changed upstream or the download was tampered with; nothing was placed",
        )
    Path(tmp.name).replace(dest)
    return dest


def place(item: Download, source: Path, directory: Path) -> list[Path]:
    """Put the file (or the member `extract` of it) under every name in `place`, plus stamps."""
    directory.mkdir(parents=True, exist_ok=True)
    placed = []
    if item.extract:
        with tarfile.open(source, "r:gz") as archive:
            try:
                member = archive.getmember(item.extract)
            except KeyError:
                raise SourceError(
                    f"{item.name} has no {item.extract}", hint="the archive is not what the release expects"
                ) from None
            fh = archive.extractfile(member)
            if fh is None:
                raise SourceError(f"{item.extract} in {item.name} is not a file")
            data = fh.read()
        for name in item.place:
            (directory / name).write_bytes(data)
            (directory / name).chmod(0o755)
            placed.append(directory / name)
    else:
        for name in item.place:
            (directory / name).parent.mkdir(parents=True, exist_ok=True)  # e.g. release/ under istio's out dir
            shutil.copyfile(source, directory / name)
            placed.append(directory / name)
    for stamp in item.touch:
        (directory / stamp).touch()
        placed.append(directory / stamp)
    return placed

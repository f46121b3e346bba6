"""Release archives: deterministic tar.gz files laid out as a release line's ArchiveSpec says, and their checks.

Same inputs, same bytes: entries sorted by name, every directory listed, owner 0:0 without names, modes 0755
(directories, executables) or 0644, mtimes SOURCE_DATE_EPOCH, gzip without a name or a time.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from istiobuild import elf, fsutil
from istiobuild.arch import Arch
from istiobuild.archivespec import ArchiveSpec
from istiobuild.errors import StepFailed


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """One file of an archive: its name inside, and its bytes (from a file, or made here)."""

    name: str
    source: Path | None = None
    data: bytes = b""
    executable: bool = False

    def content(self) -> bytes:
        return self.source.read_bytes() if self.source is not None else self.data


def install_entries(
    spec: ArchiveSpec, istio: Path, istioctl: Path, manifest: str, top: str, tracked: Collection[str] | None = None
) -> list[Entry]:
    """The install archive's files: `files` as they are, `dirs` filtered by their patterns, `copies`, istioctl,
    manifest.yaml; from the istio tree only the files in `tracked` (what git tracks there) when given."""
    entries = [Entry(name=f"{top}/{spec.istioctl}", source=istioctl, executable=True)]
    entries.append(Entry(name=f"{top}/manifest.yaml", data=manifest.encode()))
    for name in spec.files:
        path = istio / name
        if not path.is_file():
            raise StepFailed(f"the release archive takes {name} from the istio tree, which has no such file")
        entries.append(_entry(f"{top}/{name}", path))
    for directory, keep in spec.dirs:
        for path in _files(istio / directory, istio, tracked):
            if any(fnmatch.fnmatch(path.name, p) for p in keep):
                entries.append(_entry(f"{top}/{path.relative_to(istio).as_posix()}", path))
    for source, dest in spec.copies:
        root = istio / source
        if not root.exists():
            raise StepFailed(f"the release archive takes {source} from the istio tree, which has no such path")
        for path in [root] if root.is_file() else _files(root, istio, tracked):
            entries.append(_entry(f"{top}/{dest}{path.as_posix()[len(root.as_posix()) :]}", path))
    return entries


def _files(root: Path, tree: Path, tracked: Collection[str] | None) -> list[Path]:
    found = (p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    return sorted(p for p in found if tracked is None or p.relative_to(tree).as_posix() in tracked)


def _entry(name: str, path: Path) -> Entry:
    return Entry(name=name, source=path, executable=bool(path.stat().st_mode & 0o111))


def tar_gz(entries: Sequence[Entry], epoch: int) -> bytes:
    """The archive's bytes: the entries and every directory above them, sorted by name."""
    files = {e.name: e for e in entries}
    dirs = {str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."}
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name in sorted(dirs | set(files)):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = epoch, 0, 0, "", ""
            if name in dirs:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            data = files[name].content()
            info.size, info.mode = len(data), 0o755 if files[name].executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_with_sha256(path: Path, data: bytes) -> str:
    """Write the archive and `<name>.sha256` (`<hex>  <name>`, as sha256sum prints it); return the hex."""
    digest = hashlib.sha256(data).hexdigest()
    fsutil.write_atomic(path, data)
    fsutil.write_atomic(path.with_name(f"{path.name}.sha256"), f"{digest}  {path.name}\n")
    return digest


def members(archive: Path) -> Iterator[tuple[str, bytes]]:
    """Every regular file of a tar.gz: (name, bytes)."""
    with tarfile.open(archive, mode="r:gz") as tar:
        for info in tar:
            handle = tar.extractfile(info) if info.isfile() else None
            if handle is not None:
                yield info.name, handle.read()


def wrong_elves(archive: Path, arch: Arch) -> tuple[int, list[str]]:
    """How many ELF files the archive holds, and those not built for `arch` ("path: machine")."""
    count, wrong = 0, []
    for name, data in members(archive):
        if not data.startswith(b"\x7fELF"):
            continue
        count += 1
        info = elf.parse(io.BytesIO(data))
        if info.arch is not arch:
            wrong.append(f"{name}: {info.machine_name}")
    return count, wrong


def check_sha256_file(archive: Path) -> None:
    """The `.sha256` next to an archive names it and its digest."""
    sums = archive.with_name(f"{archive.name}.sha256")
    expected = f"{hashlib.sha256(archive.read_bytes()).hexdigest()}  {archive.name}\n"
    if not sums.is_file() or sums.read_text() != expected:
        raise StepFailed(f"{sums} does not hold the sha256 of {archive.name}")


def names_defaults(text: str, hub: str, tag: str) -> list[str]:
    """What is missing from `text` for it to name hub and tag as its defaults (`hub: X` / `tag: Y` lines, or their
    JSON form `"hub": "X",`)."""
    missing = []
    for key, value in (("hub", hub), ("tag", tag)):
        found = (
            line.split(":", 1)[1].strip().rstrip(",").strip().strip("'\"")
            for line in (raw.strip() for raw in text.splitlines())
            if line.startswith((f"{key}:", f'"{key}":'))
        )
        if value not in found:
            missing.append(f"{key}: {value}")
    return missing


def manifest_yaml(data: Mapping[str, object], indent: int = 0) -> str:
    """A YAML document of nested mappings/lists of strings and numbers (scalars written as JSON strings)."""
    lines = []
    pad = "  " * indent
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{key}:\n{manifest_yaml(value, indent + 1).rstrip()}")
        elif isinstance(value, list) and value:
            lines.append(f"{pad}{key}:")
            for item in value:
                body = manifest_yaml(item, indent + 2).strip() if isinstance(item, Mapping) else json.dumps(item)
                lines.append(f"{pad}  - {body}")
        else:
            lines.append(f"{pad}{key}: {json.dumps(value)}")  # also an empty list or mapping: [] / {}
    return "\n".join(lines) + "\n"

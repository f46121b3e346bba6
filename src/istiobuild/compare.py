"""Where two build outputs differ: files (with the ELF section), docker images (config fields and the
first differing layer, file by file) and digests. For `rebuild`, which builds twice and explains any
difference; numbers a user reads count from 1 (`layer 3 of 5`, `history entry 2`)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

from istiobuild import elf
from istiobuild.errors import UsageError

CHUNK = 1 << 20  # bytes read at a time from each side
EXCERPT = 16  # bytes shown from each side at the first difference
MAX_LINES = 20  # config fields or files listed before "... and N more"
SHORT = 60  # longest value shown whole
NOT_ELF = "(not ELF)"
XATTR = "SCHILY.xattr."  # pax header prefix of extended attributes in a layer tar


@dataclasses.dataclass(frozen=True)
class Difference:
    artifact: str  # what was compared: "envoy", "istio/proxyv2:1.5.0"
    summary: str  # one line: where they differ
    details: tuple[str, ...]  # the evidence, one line each

    def render(self) -> tuple[str, ...]:
        """The lines a user reads: `artifact: summary`, then each detail indented."""
        return (f"{self.artifact}: {self.summary}", *(f"  {line}" for line in self.details))


def compare_digests(name: str, a: str, b: str) -> Difference | None:
    """For subjects known only by digest (a pushed manifest): None when the digests are equal."""
    if a == b:
        return None
    return Difference(name, "digests differ", (f"a: {a}", f"b: {b}"))


# -- files ------------------------------------------------------------------------------------------


def compare_files(a: Path, b: Path, *, artifact: str = "") -> Difference | None:
    """None when byte-identical; otherwise sizes, the first differing offset, for an ELF the section
    holding it on each side, and the 16 bytes there from each side. Reads both in 1 MiB chunks."""
    with a.open("rb") as fa, b.open("rb") as fb:
        offset = _first_difference(fa, fb)
        if offset is None:
            return None
        size_a, size_b = fa.seek(0, 2), fb.seek(0, 2)
        where = (_where(fa, offset), _where(fb, offset))
        excerpts = (_excerpt(fa, offset), _excerpt(fb, offset))
    sizes = f"{size_a} bytes" if size_a == size_b else f"{size_a} vs {size_b} bytes"
    section = [] if where == (NOT_ELF, NOT_ELF) else [where[0] if where[0] == where[1] else " vs ".join(where)]
    details = [f"a: {a}", f"b: {b}", f"size: {sizes}", f"first difference at offset {offset:#x} ({offset})"]
    details += [f"section: {name}" for name in section] + [f"a {excerpts[0]}", f"b {excerpts[1]}"]
    place = "".join(f" {name}" if name.startswith("(") else f" in {name}" for name in section)
    summary = f"differs at offset {offset:#x}{place} ({sizes})"
    return Difference(artifact or a.name, summary, tuple(details))


def _first_difference(fa: BinaryIO, fb: BinaryIO) -> int | None:
    offset = 0
    while True:
        chunk_a, chunk_b = fa.read(CHUNK), fb.read(CHUNK)
        if chunk_a != chunk_b:
            return offset + _common_prefix(chunk_a, chunk_b)
        if not chunk_a:
            return None
        offset += len(chunk_a)


def _common_prefix(x: bytes, y: bytes) -> int:
    """Length of the common prefix: bisect with slice compares (memcmp), then byte by byte."""
    lo, hi = 0, min(len(x), len(y))
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if x[lo:mid] == y[lo:mid]:
            lo = mid
        else:
            hi = mid
    while lo < hi and x[lo] == y[lo]:
        lo += 1
    return lo


def _where(fh: BinaryIO, offset: int) -> str:
    """The name of the ELF region at offset."""
    fh.seek(0)
    if fh.read(4) != elf.MAGIC:
        return NOT_ELF
    if offset >= fh.seek(0, 2):
        return "(end of file)"
    try:
        return elf.region_at(elf.layout(fh), offset)
    except ValueError as exc:
        return f"(unreadable ELF: {exc})"


def _excerpt(fh: BinaryIO, offset: int) -> str:
    """`00001a2f  68 65 6c 6c 6f 20 77 6f  72 6c 64 00 ...  |hello world.|` at offset."""
    fh.seek(offset)
    data = fh.read(EXCERPT)
    if not data:
        return f"{offset:08x}  (end of file)"
    cells = [f"{byte:02x}" for byte in data]
    hexes = " ".join(cells[:8]) + ("  " + " ".join(cells[8:]) if len(cells) > 8 else "")
    text = "".join(chr(byte) if 32 <= byte < 127 else "." for byte in data)
    tail = "" if len(data) == EXCERPT else "  (end of file)"
    return f"{offset:08x}  {hexes:<48}  |{text}|{tail}"


# -- images -----------------------------------------------------------------------------------------


def compare_images(cli: Any, a: str, b: str, scratch: Path, *, artifact: str = "") -> Difference | None:
    """Two local docker images: None when their IDs are equal. Otherwise the config fields that
    differ and the first differing layer with its files, from `docker save` archives written under
    `scratch` (removed again before returning)."""
    images = [_image(cli, name) for name in (a, b)]
    if images[0].id == images[1].id:
        return None
    with _private_dir(scratch) as tmp:
        archives = (tmp / "a.tar", tmp / "b.tar")
        for image, archive in zip(images, archives, strict=True):
            _save(image, archive)
        found = compare_archives(*archives, artifact=artifact or a)
    ids = (f"image ID: {images[0].id} vs {images[1].id}",)
    if found is None:  # same fields, same layers: the config JSON is only encoded differently
        return Difference(artifact or a, "image IDs differ, config fields and layers are equal", ids)
    return dataclasses.replace(found, details=ids + found.details)


def compare_archives(a: Path, b: Path, *, artifact: str) -> Difference | None:
    """Two `docker save` archives (legacy `<id>/layer.tar` or OCI `blobs/sha256/...` layout, both
    named by manifest.json): None when config and layers are equal."""
    with _archive(a) as saved_a, _archive(b) as saved_b:
        parts = [_layers_part(saved_a, saved_b), _config_part(saved_a.config, saved_b.config)]
    found = [part for part in parts if part is not None]
    if not found:
        return None
    return Difference(artifact, "; ".join(s for s, _ in found), tuple(line for _, lines in found for line in lines))


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Archive:
    tar: tarfile.TarFile
    config: Mapping[str, Any]
    layers: tuple[str, ...]  # member names, in diff_ids order
    diff_ids: tuple[str, ...]  # rootfs.diff_ids: the sha256 of each uncompressed layer tar


def _layers_part(a: _Archive, b: _Archive) -> tuple[str, list[str]] | None:
    """The first differing layer (by diff_id, in order) and its files, or None."""
    ids_a, ids_b = a.diff_ids, b.diff_ids
    differing = [i for i in range(max(len(ids_a), len(ids_b))) if _at(ids_a, i) != _at(ids_b, i)]
    if not differing:
        return None
    first = differing[0]
    with _layer(a, first) as files_a, _layer(b, first) as files_b:
        files = _layer_changes(files_a, files_b)
    count = str(len(ids_a)) if len(ids_a) == len(ids_b) else f"{len(ids_a)} vs {len(ids_b)}"
    lines = [f"layer {first + 1} diff_id: {_at(ids_a, first) or '(none)'} vs {_at(ids_b, first) or '(none)'}"]
    if len(differing) > 1:
        lines.append(f"layers that differ: {', '.join(str(i + 1) for i in differing)} (files of the first)")
    lines += _capped(files, "files") or ["no file differs: the layer tars differ in entry order or headers"]
    return f"layer {first + 1} of {count} differs: {len(files)} files", lines


def _config_part(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    fields = _config_changes(a, b)
    if not fields:
        return None
    names = ", ".join(key for key, _line in fields[:3]) + (", ..." if len(fields) > 3 else "")
    return f"config differs ({len(fields)} fields: {names})", _capped([line for _key, line in fields], "fields")


def _image(cli: Any, name: str) -> Any:
    import docker

    try:
        return cli.images.get(name)
    except docker.errors.ImageNotFound:
        raise UsageError(f"image {name} does not exist", hint="build it first (`docker images` lists them)") from None


def _save(image: Any, dest: Path) -> None:
    import docker
    import requests

    from istiobuild.dockerapi import DockerError

    try:
        with dest.open("wb") as fh:
            for chunk in image.save():
                fh.write(chunk)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise DockerError(f"docker save {image.id} failed: {exc}", hint="is the daemon still running?") from None
    except OSError as exc:
        raise UsageError(f"cannot write {dest}: {exc.strerror}", hint="free disk space") from None


@contextlib.contextmanager
def _private_dir(scratch: Path) -> Iterator[Path]:
    """A fresh directory under scratch, removed afterwards (scratch too, when this made it)."""
    made = not scratch.exists()
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="compare-", dir=scratch))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if made:
            shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _archive(path: Path) -> Iterator[_Archive]:
    """A `docker save` archive of one image: its config and layer member names, from manifest.json."""
    with tarfile.open(path) as tar:
        try:
            manifest = json.loads(_read(tar, "manifest.json"))
            if not isinstance(manifest, list) or len(manifest) != 1:
                raise ValueError(f"manifest.json lists {len(manifest)} images, not one")
            config = json.loads(_read(tar, manifest[0]["Config"]))
            layers = tuple(str(name) for name in manifest[0]["Layers"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(
                f"{path} is not a `docker save` archive of one image: {exc}", hint="save one image: `docker save IMAGE`"
            ) from None
        diff_ids = tuple(str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or ())
        yield _Archive(tar=tar, config=config, layers=layers, diff_ids=diff_ids)


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    if (member := tar.extractfile(name)) is None:
        raise ValueError(f"{name} is not a file")
    return member.read()


def _at(items: Sequence[str], index: int) -> str:
    return items[index] if index < len(items) else ""


def _capped(lines: Sequence[str], what: str) -> list[str]:
    shown = list(lines[:MAX_LINES])
    if len(lines) > MAX_LINES:
        shown.append(f"... and {len(lines) - MAX_LINES} more {what}")
    return shown


# -- image config -----------------------------------------------------------------------------------


def _config_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(field, `field: value-a vs value-b`) for every differing field (rootfs is compared as layers)."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    missing = object()
    changes = []
    for key in [*flat_a, *(k for k in flat_b if k not in flat_a)]:
        va, vb = flat_a.get(key, missing), flat_b.get(key, missing)
        if va != vb:
            changes.append((key, f"{key}: {_show(va, missing)} vs {_show(vb, missing)}"))
    return changes


def _flatten(config: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _into(out, "", {key: value for key, value in config.items() if key != "rootfs"})
    return out


def _into(out: dict[str, Any], key: str, value: Any) -> None:
    """Dicts by key (config.Labels.x), history by entry (history entry 2.created), Env lists by
    variable (config.Env.PATH), anything else whole."""
    if isinstance(value, dict):
        for sub, item in value.items():
            _into(out, f"{key}.{sub}" if key else sub, item)
    elif key == "history" and isinstance(value, list):
        for index, entry in enumerate(value):
            _into(out, f"history entry {index + 1}", entry)
    elif key.endswith(".Env") and isinstance(value, list):
        for item in value:
            name, _, setting = str(item).partition("=")
            out[f"{key}.{name}"] = setting
    else:
        out[key] = value


def _show(value: Any, missing: object) -> str:
    text = "(absent)" if value is missing else json.dumps(value)
    return text if len(text) <= SHORT else f"{text[: SHORT - 20]}...{text[-17:]}"


# -- layers -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Entry:
    kind: str  # file, dir, symlink, hardlink, other
    mode: int
    owner: str  # uid:gid
    mtime: float
    link: str  # symlink or hardlink target
    size: int
    sha256: str  # regular files only
    xattrs: tuple[tuple[str, str], ...]  # security.capability and friends, from the pax headers


@contextlib.contextmanager
def _layer(saved: _Archive, index: int) -> Iterator[dict[str, _Entry]]:
    """The entries of layer `index` by absolute path ({} when the image has fewer layers)."""
    if index >= len(saved.layers):
        yield {}
        return
    blob = saved.tar.extractfile(saved.layers[index])
    if blob is None:
        raise UsageError(f"layer {saved.layers[index]} is missing from the saved image")
    with blob, tarfile.open(fileobj=blob, mode="r|*") as layer:
        yield dict(_entries(layer))


def _entries(layer: tarfile.TarFile) -> Iterator[tuple[str, _Entry]]:
    for member in layer:
        digest = ""
        if member.isreg():
            content = layer.extractfile(member)
            assert content is not None  # a regular member always has content
            digest = _sha256(content)
        kind = "file" if member.isreg() else "dir" if member.isdir() else "symlink" if member.issym() else "other"
        entry = _Entry(
            kind="hardlink" if member.islnk() else kind,
            mode=stat.S_IMODE(member.mode),
            owner=f"{member.uid}:{member.gid}",
            mtime=member.mtime,
            link=member.linkname,
            size=member.size,
            sha256=digest,
            xattrs=tuple(
                sorted((k.removeprefix(XATTR), v) for k, v in member.pax_headers.items() if k.startswith(XATTR))
            ),
        )
        yield posixpath.normpath("/" + member.name.lstrip("/")), entry


def _sha256(content: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := content.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _layer_changes(a: Mapping[str, _Entry], b: Mapping[str, _Entry]) -> list[str]:
    lines = []
    for path in sorted(a.keys() | b.keys()):
        if path not in a:
            lines.append(f"{path}: added ({_describe(b[path])})")
        elif path not in b:
            lines.append(f"{path}: removed ({_describe(a[path])})")
        elif a[path] != b[path]:
            lines.append(f"{path}: {'; '.join(_entry_changes(a[path], b[path]))}")
    return lines


def _describe(entry: _Entry) -> str:
    if entry.kind == "file":
        return f"file, {entry.size} bytes"
    return f"{entry.kind} -> {entry.link}" if entry.link else entry.kind


def _entry_changes(a: _Entry, b: _Entry) -> Iterator[str]:
    if a.kind != b.kind:
        yield f"type {_describe(a)} vs {_describe(b)}"
    elif a.sha256 != b.sha256:
        yield f"content sha256 {a.sha256[:12]} vs {b.sha256[:12]} ({a.size} vs {b.size} bytes)"
    if a.mode != b.mode:
        yield f"mode {a.mode:04o} vs {b.mode:04o}"
    if a.owner != b.owner:
        yield f"uid:gid {a.owner} vs {b.owner}"
    if a.mtime != b.mtime:
        yield f"mtime {_time(a.mtime)} vs {_time(b.mtime)}"
    if a.link != b.link:
        yield f"link target {a.link or '(none)'} vs {b.link or '(none)'}"
    if a.xattrs != b.xattrs:
        yield f"xattrs {_show(dict(a.xattrs), None)} vs {_show(dict(b.xattrs), None)}"


def _time(mtime: float) -> str:
    return datetime.datetime.fromtimestamp(mtime, tz=datetime.timezone.utc).isoformat().replace("+00:00", "Z")

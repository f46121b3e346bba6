"""An image's filesystem read in one pass: every regular file with its sha256, size, mode and ELF machine, and
the Go build info (`go version -m`) of every Go binary.

    scan(stream, scratch) -> ImageScan               a filesystem tar (`docker export`: bytes chunks), read once
    scan_image(cli, image, scratch, platform=None)   the same, exporting `image` through the docker API
    go_info(binary, name="") -> GoInfo               `go version -m` of one Go binary
    parse_go_version(go_version, body) -> GoInfo     the same from its output

The SBOM (sbom.py) is made from an ImageScan; the ELF machines make verify's arch check possible from the same
pass. Go binaries are found by Go's build-info magic at a 16-byte aligned offset (where Go's debug/buildinfo
looks) in ELF, PE and Mach-O files: while the stream passes, such a file is copied to a private directory under
`scratch`, `go version -m` reads the copy and it is removed (the directory too, when the scan ends). Docker's
runtime files (RUNTIME_FILES, empty in every export) are not the image's and are left out.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import io
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from istiobuild.elf import MAGIC as ELF_MAGIC
from istiobuild.errors import StepFailed
from istiobuild.run import run

GO_MAGIC = b"\xff Go buildinf:"
_GO_ALIGN = 16  # Go aligns the build info to 16 bytes (debug/buildinfo)
# Formats `go version -m` reads: ELF, PE, Mach-O (32/64-bit, both byte orders).
_EXECUTABLE = (ELF_MAGIC, b"MZ", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe")
_BLOCK = 1 << 20
_SPOOL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC  # executable: go version -m wants x
# What docker's init layer puts into every container (empty files masking the image's own): not the image's.
RUNTIME_FILES = frozenset({"/.dockerenv", "/dev/console", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf"})


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileEntry:
    path: str  # absolute, normalized: /usr/local/bin/envoy
    sha256: str
    size: int
    mode: int  # permission bits (0o755)
    elf_machine: int | None  # ELF e_machine (62 x86_64, 183 aarch64), None for a file that is not ELF


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoModule:
    path: str
    version: str  # (devel) for the main module of a local build and for a directory replacement
    sum: str = ""  # h1:... when the binary records one
    replace: GoModule | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class GoInfo:
    go_version: str  # go1.19.8
    package: str  # the main package's import path
    main: GoModule | None  # None for a binary built outside module mode
    deps: tuple[GoModule, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()  # build settings: (-trimpath, true), (GOARCH, amd64), ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageScan:
    files: tuple[FileEntry, ...]  # every regular file (hard links too), sorted by path
    go: Mapping[str, GoInfo]  # path -> build info of each Go binary


class _Chunks(io.RawIOBase):
    """An iterable of bytes chunks as a file; a read copies only what it returns."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._view = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._view:
            try:
                self._view = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(target), len(self._view))
        target[:n] = self._view[:n]
        self._view = self._view[n:]
        return n


def _go_magic_at(block: bytes, offset: int) -> bool:
    """Whether GO_MAGIC is in `block` (read at file `offset`) at a 16-byte aligned file offset. Blocks are full
    _BLOCK reads (a multiple of 16), so an aligned magic never spans two of them."""
    i = block.find(GO_MAGIC)
    while i >= 0 and (offset + i) % _GO_ALIGN:
        i = block.find(GO_MAGIC, i + 1)
    return i >= 0


def _consume(fh: IO[bytes], spool: Path) -> tuple[str, bytes, bool]:
    """Read one file: (its sha256, its first 20 bytes, whether it is a Go binary, then left at `spool`)."""
    digest, offset, is_go = hashlib.sha256(), 0, False
    block = fh.read(_BLOCK)
    head = block[:20]
    out = os.fdopen(os.open(spool, _SPOOL, 0o700), "wb") if head.startswith(_EXECUTABLE) else None
    try:
        while block:
            digest.update(block)
            if out is not None:
                out.write(block)
                is_go = is_go or _go_magic_at(block, offset)
            offset += len(block)
            block = fh.read(_BLOCK)
    finally:
        if out is not None:
            out.close()
    if out is not None and not is_go:
        spool.unlink()
    return digest.hexdigest(), head, is_go


def _elf_machine(head: bytes) -> int | None:
    if len(head) < 20 or not head.startswith(ELF_MAGIC):
        return None
    return int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")


def _path(name: str) -> str:
    return posixpath.normpath("/" + name.lstrip("/"))


def scan(stream: Iterable[bytes], scratch: Path) -> ImageScan:
    """Read a filesystem tar (`docker export`) once: every regular file with its sha256, size, mode and ELF
    machine, and `go version -m` of every Go binary (copied to a private directory under `scratch` while it
    passes, removed right after). Docker's runtime files (RUNTIME_FILES) are left out."""
    entries: dict[str, FileEntry] = {}
    go: dict[str, GoInfo] = {}
    scratch.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="sbom-", dir=scratch))
    try:
        with tarfile.open(fileobj=_Chunks(stream), mode="r|") as tar:
            for member in tar:
                path = _path(member.name)
                if path in RUNTIME_FILES:
                    continue
                if member.islnk():  # a hard link: the same file under another name
                    target = entries.get(_path(member.linkname))
                    if target is not None:
                        entries[path] = dataclasses.replace(target, path=path, mode=member.mode & 0o7777)
                        if target.path in go:
                            go[path] = go[target.path]
                    continue
                fh = tar.extractfile(member) if member.isfile() else None
                if fh is None:
                    continue
                spool = work / "binary"
                sha, head, is_go = _consume(fh, spool)
                entries[path] = FileEntry(
                    path=path, sha256=sha, size=member.size, mode=member.mode & 0o7777, elf_machine=_elf_machine(head)
                )
                if is_go:
                    try:
                        go[path] = go_info(spool, name=path)
                    finally:
                        spool.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ImageScan(files=tuple(entries[p] for p in sorted(entries)), go=go)


def scan_image(cli: Any, image: str, scratch: Path, *, platform: str | None = None) -> ImageScan:
    """`scan` of `image`'s filesystem, exported through the docker API from a created (never started) container."""
    import docker

    try:
        container = cli.containers.create(image, entrypoint=["/nonexistent"], platform=platform)
    except docker.errors.ImageNotFound:
        raise StepFailed(
            f"cannot read the files of {image}: there is no such image",
            hint="build it first, or name an image `docker images` lists",
        ) from None
    try:
        return scan(container.export(), scratch)
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):  # already being removed
            container.remove(force=True)


# ---------------------------------------------------------------------------------------------
# Go build info


def go_info(binary: Path, *, name: str = "") -> GoInfo:
    """The build info `go version -m` reads from `binary` (`name`: how messages call it)."""
    shown = name or str(binary)
    result = run(
        ["go", "version", "-m", "--", str(binary)],
        cwd=binary.parent,  # no go.mod there: no toolchain switch
        env={"GOFLAGS": "", "GOENV": "off", "GOTOOLCHAIN": "local"},
        capture=True,
        what=f"read the Go build info of {shown} (go version -m)",
    )
    first, _, rest = result.stdout.partition("\n")
    prefix = f"{binary}: "
    if not first.startswith(prefix):
        raise StepFailed(
            f"go version -m could not read the Go build info of {shown}",
            hint="\n".join(
                [
                    *result.tail[-5:],
                    "it holds Go's build-info marker; if a newer Go built it, put that go first on PATH",
                ]
            ).replace(str(binary), shown),
        )
    return parse_go_version(first[len(prefix) :], rest)


def _module(fields: list[str]) -> GoModule:
    fields = [*fields, "", ""]
    return GoModule(path=fields[0], version=fields[1], sum=fields[2])


def _setting(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    if value.startswith('"') and value.endswith('"') and len(value) > 1:  # Go's strconv.Quote
        with contextlib.suppress(ValueError, SyntaxError):
            value = str(ast.literal_eval(value))
    return key, value


def parse_go_version(go_version: str, body: str) -> GoInfo:
    """GoInfo from `go version -m` output: the version after `FILE: ` and the tab-indented lines below."""
    package, main, deps, settings = "", None, [], []
    for line in body.splitlines():
        kind, _, rest = line.strip("\t").partition("\t")
        fields = rest.split("\t")
        if kind == "path":
            package = rest
        elif kind == "mod":
            main = _module(fields)
        elif kind == "dep":
            deps.append(_module(fields))
        elif kind == "=>" and deps:
            deps[-1] = dataclasses.replace(deps[-1], replace=_module(fields))
        elif kind == "build":
            settings.append(_setting(rest))
    return GoInfo(go_version=go_version.strip(), package=package, main=main, deps=tuple(deps), settings=tuple(settings))

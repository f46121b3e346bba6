"""Just enough ELF to prove what was built: machine, the compiler in .comment, LOAD alignment."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from istiobuild.arch import Arch

MAGIC = b"\x7fELF"
MACHINES = {a.elf_machine: a for a in Arch}
MACHINE_NAMES = {
    3: "i386",
    8: "mips",
    20: "ppc",
    21: "ppc64",
    22: "s390",
    40: "arm",
    62: "x86_64",
    183: "aarch64",
    243: "riscv",
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElfInfo:
    machine: int
    bits: int
    comment: tuple[str, ...]  # .comment strings: compiler and linker identities
    load_align: tuple[int, ...]  # p_align of every PT_LOAD segment

    @property
    def arch(self) -> Arch | None:
        return MACHINES.get(self.machine)

    @property
    def machine_name(self) -> str:
        return MACHINE_NAMES.get(self.machine, f"machine {self.machine}")

    @property
    def compilers(self) -> set[str]:
        """{'clang'} or {'gcc'} (or both) as the .comment section tells."""
        found = set()
        for text in self.comment:
            if "clang version" in text:
                found.add("clang")
            elif text.startswith("GCC:"):
                found.add("gcc")
        return found

    @property
    def compiler(self) -> str:
        """The compiler of the program's own code: clang when clang is there (crt files add GCC)."""
        found = self.compilers
        return "clang" if "clang" in found else ("gcc" if "gcc" in found else "unknown")


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def read(path: Path) -> ElfInfo:
    with path.open("rb") as fh:
        return parse(fh)


def parse(fh: BinaryIO) -> ElfInfo:
    ident = fh.read(16)
    if ident[:4] != MAGIC:
        raise ValueError("not an ELF file")
    bits = 64 if ident[4] == 2 else 32
    endian = "<" if ident[5] == 1 else ">"
    if bits == 64:
        head = struct.unpack(endian + "HHIQQQIHHHHHH", fh.read(48))
    else:
        head = struct.unpack(endian + "HHIIIIIHHHHHH", fh.read(36))
    _type, machine, _version, _entry, phoff, shoff, _flags, _ehsize, phentsize, phnum, shentsize, shnum, shstrndx = head
    aligns = tuple(_load_aligns(fh, endian, bits, phoff, phentsize, phnum))
    comment = tuple(_comment(fh, endian, bits, shoff, shentsize, shnum, shstrndx))
    return ElfInfo(machine=machine, bits=bits, comment=comment, load_align=aligns)


def _load_aligns(fh: BinaryIO, endian: str, bits: int, off: int, size: int, count: int) -> Iterator[int]:
    for i in range(count):
        fh.seek(off + i * size)
        if bits == 64:
            p_type, _f, _o, _v, _p, _fs, _ms, align = struct.unpack(endian + "IIQQQQQQ", fh.read(56))
        else:
            p_type, _o, _v, _p, _fs, _ms, _f, align = struct.unpack(endian + "IIIIIIII", fh.read(32))
        if p_type == 1:  # PT_LOAD
            yield align


def _sections(fh: BinaryIO, endian: str, bits: int, off: int, size: int, count: int) -> list[tuple[int, int, int]]:
    out = []
    for i in range(count):
        fh.seek(off + i * size)
        if bits == 64:
            name, _t, _fl, _a, offset, length = struct.unpack(endian + "IIQQQQ", fh.read(40))
        else:
            name, _t, _fl, _a, offset, length = struct.unpack(endian + "IIIIII", fh.read(24))
        out.append((name, offset, length))
    return out


def _comment(fh: BinaryIO, endian: str, bits: int, off: int, size: int, count: int, strndx: int) -> Iterator[str]:
    if not off or not count or strndx >= count:
        return
    sections = _sections(fh, endian, bits, off, size, count)
    _n, str_off, str_len = sections[strndx]
    fh.seek(str_off)
    names = fh.read(str_len)
    for name, offset, length in sections:
        end = names.find(b"\0", name)
        if names[name:end] == b".comment":
            fh.seek(offset)
            for part in fh.read(length).split(b"\0"):
                if part.strip():
                    yield part.decode(errors="replace").strip()


def elf_files(root: Path) -> Iterator[Path]:
    """Every regular ELF file under root (symlinks not followed)."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and is_elf(path):
            yield path


@dataclasses.dataclass(frozen=True, kw_only=True)
class Region:
    """A named byte range [start, end) of an ELF file: a header table or a section's contents."""

    name: str
    start: int
    end: int


SHT_NOBITS = 8  # .bss and friends: a size but no bytes in the file
SHN_XINDEX = 0xFFFF  # e_shstrndx is in section 0's sh_link (extended numbering)


def layout(fh: BinaryIO) -> tuple[Region, ...]:
    """The ELF header, program headers, section headers and every section with bytes in the file,
    by file offset; 32/64-bit, either endianness. ValueError for a non-ELF or truncated file."""
    fh.seek(0)
    ident = fh.read(16)
    if len(ident) < 16 or ident[:4] != MAGIC or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise ValueError("not an ELF file")
    bits = 64 if ident[4] == 2 else 32
    endian = "<" if ident[5] == 1 else ">"
    try:
        fmt = endian + ("HHIQQQIHHHHHH" if bits == 64 else "HHIIIIIHHHHHH")
        head = struct.unpack(fmt, fh.read(struct.calcsize(fmt)))
        _t, _m, _v, _e, phoff, shoff, _f, ehsize, phentsize, phnum, shentsize, shnum, shstrndx = head
        regions = [Region(name="ELF header", start=0, end=ehsize)]
        if phoff and phnum:
            regions.append(Region(name="program headers", start=phoff, end=phoff + phnum * phentsize))
        if shoff:
            table = _section_headers(fh, endian, bits, shoff, shentsize, shnum)
            regions.append(Region(name="section headers", start=shoff, end=shoff + len(table) * shentsize))
            if shstrndx == SHN_XINDEX:
                shstrndx = table[0][4]
            regions.extend(_section_regions(fh, table, shstrndx))
    except struct.error:
        raise ValueError("truncated ELF file") from None
    return tuple(sorted(regions, key=lambda r: (r.start, r.end)))


def _section_headers(
    fh: BinaryIO, endian: str, bits: int, off: int, size: int, count: int
) -> list[tuple[int, int, int, int, int]]:
    """(name, type, offset, size, link) of every section header (count 0: extended numbering)."""
    fmt = endian + ("IIQQQQII" if bits == 64 else "IIIIIIII")
    fh.seek(off)
    first = struct.unpack(fmt, fh.read(struct.calcsize(fmt)))
    count = count or first[5]
    fh.seek(off)
    table = fh.read(count * size)
    out = []
    for i in range(count):
        name, kind, _flags, _addr, offset, length, link, _info = struct.unpack_from(fmt, table, i * size)
        out.append((name, kind, offset, length, link))
    return out


def _section_regions(fh: BinaryIO, table: Sequence[tuple[int, int, int, int, int]], strndx: int) -> Iterator[Region]:
    names = b""
    if 0 < strndx < len(table):
        _n, _k, str_off, str_len, _l = table[strndx]
        fh.seek(str_off)
        names = fh.read(str_len)
    for index, (name, kind, offset, length, _link) in enumerate(table):
        if index == 0 or kind == SHT_NOBITS or not length:
            continue
        end = names.find(b"\0", name)
        text = names[name:end].decode(errors="replace") if 0 <= name < end else ""
        yield Region(name=text or f"section {index}", start=offset, end=offset + length)


def region_at(regions: Sequence[Region], offset: int) -> str:
    """The name of the region (section or header table) holding `offset`; '(between sections)' otherwise."""
    for region in regions:
        if region.start <= offset < region.end:
            return region.name
    return "(between sections)"

"""Kernel fit: the page size and virtual address bits of the build host and of the deployment target.

Envoy's tcmalloc and V8 must be built for a 64K-page kernel (series condition `page_size=64k`); allocators that
assume 48-bit addresses fail on kernels with fewer (istio#51708). `--target-kernel` names the kernel envoy will
run on; `page_size=auto` follows it."""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from istiobuild.arch import Arch
from istiobuild.errors import UsageError
from istiobuild.grammar import fail

PAGE_SIZES = ("4k", "16k", "64k")
SERIES_PAGE_SIZES = ("4k", "64k")  # the page sizes patch series are written for (patches.CONDITION_KEYS)
VA_BITS = (39, 42, 47, 48, 52, 57)  # arm64 CONFIG_ARM64_VA_BITS choices; x86_64 4- or 5-level paging
ALLOCATOR_VA_BITS = 48  # what Google's tcmalloc assumes (kAddressBits)
# What a kernel of each arch is built with: page size -> virtual address bits (arm64 Kconfig; x86_64 paging levels).
FITS: Mapping[Arch, Mapping[str, tuple[int, ...]]] = {
    Arch.AARCH64: {"4k": (39, 48, 52), "64k": (42, 48, 52)},
    Arch.X86_64: {"4k": (48, 57)},
}
KERNEL_HALF = 1 << 63  # mappings at or above it are the kernel's (x86_64's [vsyscall])
TARGET_FIX = "give page_size=4k|64k[,va_bits=39|42|47|48|52|57], e.g. page_size=64k,va_bits=48"
VA_WARNING = (
    "{bits}-bit virtual addresses: allocators that assume 48-bit addresses may fail (istio#51708, "
    "envoy's Google tcmalloc in Istio 1.22+); 1.22+ builds take gperftools for such a target (--allocator)"
)
ALLOCATORS = ("auto", "tcmalloc", "gperftools")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Kernel:
    """A kernel's page size (4k, 16k, 64k) and virtual address bits (None: unknown, or not given)."""

    page_size: str
    va_bits: int | None = None
    source: str = ""  # where va_bits came from

    def spec(self) -> str:
        """As --target-kernel takes it: page_size=64k,va_bits=48."""
        return f"page_size={self.page_size}" + (f",va_bits={self.va_bits}" if self.va_bits is not None else "")

    def describe(self) -> str:
        bits = f"{self.va_bits}-bit VA" if self.va_bits is not None else "VA bits unknown"
        return f"{self.page_size.upper()} pages, {bits}" + (f" ({self.source})" if self.source else "")


def cpuinfo_va_bits(cpuinfo: str) -> tuple[int, str] | None:
    """x86_64: the bits the kernel maps with, and how we know, from /proc/cpuinfo.

    `address sizes : 46 bits physical, 57 bits virtual` is the CPU's; the kernel uses 57 only with
    5-level paging, which it shows as the `la57` flag (it clears the flag when it runs 4-level).
    """
    sizes = re.search(r"^address sizes\s*:\s*\d+ bits physical, (\d+) bits virtual", cpuinfo, re.M)
    if sizes is None:
        return None
    cpu = int(sizes.group(1))
    flags = re.search(r"^flags\s*:(.*)$", cpuinfo, re.M)
    if cpu <= ALLOCATOR_VA_BITS or (flags is not None and "la57" in flags.group(1).split()):
        return cpu, "/proc/cpuinfo"
    return ALLOCATOR_VA_BITS, f"/proc/cpuinfo: CPU {cpu}, 4-level paging"


def config_va_bits(config: str) -> int | None:
    """arm64: CONFIG_ARM64_VA_BITS=N of a kernel configuration (.config, /proc/config.gz)."""
    match = re.search(r"^CONFIG_ARM64_VA_BITS=(\d+)$", config, re.M)
    return int(match.group(1)) if match else None


def maps_va_bits(maps: str) -> int | None:
    """arm64: the VA bits the highest user address in /proc/<pid>/maps implies (the kernel's TASK_SIZE, rounded
    up to a CONFIG_ARM64_VA_BITS choice). A 52-bit kernel maps below 2^48 unless a program asks: it shows 48."""
    top = 0
    for line in maps.splitlines():
        match = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if match and int(match.group(1), 16) < KERNEL_HALF:
            top = max(top, int(match.group(2), 16))
    if not top:
        return None
    needed = (top - 1).bit_length()
    return next((bits for bits in VA_BITS if bits >= needed), None)


def read_config(paths: Sequence[Path]) -> tuple[str, Path] | None:
    """The first readable kernel configuration of `paths` (a .gz one decompressed) and its path."""
    for path in paths:
        try:
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            continue
        return data.decode("utf-8", "replace"), path
    return None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def host_kernel(
    arch: Arch,
    *,
    page_bytes: int | None = None,
    cpuinfo: Path = Path("/proc/cpuinfo"),
    configs: Sequence[Path] | None = None,
    maps: Path = Path("/proc/self/maps"),
) -> Kernel:
    """This machine's kernel: the page size (sysconf) and the virtual address bits, read where `arch` keeps them;
    the kernel configuration is /proc/config.gz (CONFIG_IKCONFIG_PROC), else /boot/config-<release>."""
    page = f"{(page_bytes if page_bytes is not None else os.sysconf('SC_PAGE_SIZE')) // 1024}k"
    match arch:
        case Arch.X86_64:
            found = cpuinfo_va_bits(_read(cpuinfo))
            return Kernel(page_size=page, va_bits=found[0], source=found[1]) if found else Kernel(page_size=page)
        case Arch.AARCH64:
            config = read_config(
                (Path("/proc/config.gz"), Path(f"/boot/config-{os.uname().release}")) if configs is None else configs
            )
            bits = config_va_bits(config[0]) if config else None
            if config and bits:
                return Kernel(page_size=page, va_bits=bits, source=f"CONFIG_ARM64_VA_BITS, {config[1]}")
            bits = maps_va_bits(_read(maps))
            return Kernel(page_size=page, va_bits=bits, source=f"inferred from {maps}" if bits else "")


def check_target_kernel(text: str, what: str = "target_kernel") -> Kernel:
    """page_size=4k|16k|64k[,va_bits=39|42|47|48|52|57], keys in any order, any case; 16k is refused for now."""
    values: dict[str, str] = {}  # as written (for messages)
    for part in text.split(","):
        key, eq, value = part.partition("=")
        key = key.strip().lower()
        if not eq:
            raise fail(what, text, f"has {part.strip()!r}, not KEY=VALUE", TARGET_FIX)
        if key not in ("page_size", "va_bits"):
            raise fail(what, text, f"has an unknown key {key!r} (known: page_size, va_bits)", TARGET_FIX)
        if key in values:
            raise fail(what, text, f"sets {key} twice", "give each key once")
        values[key] = value.strip()
    if "page_size" not in values:
        raise fail(what, text, "has no page_size", TARGET_FIX)
    page, bits = values["page_size"].lower(), values.get("va_bits")
    if page not in PAGE_SIZES:
        raise fail(what, text, f"has page_size {values['page_size']!r}, not one of {', '.join(PAGE_SIZES)}", TARGET_FIX)
    if bits is not None and not (bits.isascii() and bits.isdigit() and int(bits) in VA_BITS):
        raise fail(what, text, f"has va_bits {bits!r}, not one of {', '.join(map(str, VA_BITS))}", TARGET_FIX)
    if page not in SERIES_PAGE_SIZES:
        raise fail(what, text, f"names a {page.upper()}-page kernel: no patch series supports {page} pages yet",
                   "build for a 4k or 64k kernel")  # fmt: skip
    return Kernel(page_size=page, va_bits=int(bits) if bits is not None else None)


def check_fits(target: Kernel, arch: Arch) -> None:
    """A kernel for `arch` can have that page size and those address bits (a typo fails here, not on the target)."""
    fits = FITS[arch]
    if target.page_size not in fits or (target.va_bits is not None and target.va_bits not in fits[target.page_size]):
        kinds = "; ".join(f"{page} pages with va_bits {'/'.join(map(str, bits))}" for page, bits in fits.items())
        raise UsageError(
            f"target kernel {target.spec()} is not an {arch} kernel: {arch} kernels have {kinds}",
            hint="fix --target-kernel (ISTIOBUILD_TARGET_KERNEL), or the --arch it is for",
        )


def build_page_size(page_size: str, target_kernel: str, *, arch: Arch, host: Arch, host_page_size: str) -> str:
    """The page size a build for `arch` assumes: the target kernel's (validate refused a page_size contradicting it);
    else page_size; `auto` is this kernel's when it is also the target, else 4k (a cross build)."""
    if target_kernel:
        target = check_target_kernel(target_kernel)
        check_fits(target, arch)
        return target.page_size
    if page_size != "auto":
        return page_size
    return host_page_size if arch == host else "4k"


def advice(kernel: Kernel, page_size: str, *, page_fix: bool = True) -> str:
    """What to do or know about building with `page_size` for `kernel`: "" when it fits."""
    parts = [f"pass --page-size {kernel.page_size}"] if page_fix and kernel.page_size != page_size else []
    if kernel.va_bits is not None and kernel.va_bits < ALLOCATOR_VA_BITS:
        parts.append("warning: " + VA_WARNING.format(bits=kernel.va_bits))
    return "; ".join(parts)


def plan_note(target_kernel: str) -> list[str]:
    """The plan's note on the target kernel: none without one."""
    if not target_kernel:
        return []
    target = check_target_kernel(target_kernel)
    warning = advice(target, target.page_size)
    return [f"target kernel {target.spec()}: built for {target.page_size} pages" + (f"; {warning}" if warning else "")]


def choose_allocator(requested: str, line: str, target_kernel: str) -> tuple[str, str]:
    """(allocator, why) for a release whose line's mechanism says `line` (mechanism.Allocator): `tcmalloc` (Google's,
    envoy's default from 1.22) or `gperftools`. `auto` takes gperftools on 1.22+ when the deployment kernel has
    fewer than 48 virtual address bits (istio#51708); a choice the line cannot make is a UsageError."""
    target = check_target_kernel(target_kernel) if target_kernel else None
    if line != "tcmalloc_default_gperftools_optin":
        built = "gperftools"  # 1.8-1.21 force it in the proxy .bazelrc; envoy up to 1.7 has nothing else
        if requested == "tcmalloc":
            raise UsageError(
                "--allocator tcmalloc: this release's envoy is built with gperftools (the proxy's .bazelrc forces it "
                "up to 1.21, and older envoys have no other)",
                hint="leave --allocator at auto; Google tcmalloc is envoy's default from Istio 1.22",
            )
        return built, "the line's only allocator"
    small = target is not None and target.va_bits is not None and target.va_bits < ALLOCATOR_VA_BITS
    if requested == "tcmalloc" and small and target is not None:
        raise UsageError(
            f"--allocator tcmalloc contradicts the target kernel's {target.va_bits}-bit virtual addresses: Google "
            "tcmalloc assumes 48 and envoy fails to start there (istio#51708)",
            hint="leave --allocator at auto (gperftools for this kernel) or give gperftools",
        )
    if requested != "auto":
        return requested, f"--allocator {requested}"
    if small and target is not None:
        return "gperftools", f"the target kernel has {target.va_bits}-bit virtual addresses (tcmalloc assumes 48)"
    return (
        "tcmalloc",
        "envoy's default (give --allocator gperftools, or --target-kernel with va_bits, for kernels "
        "with fewer than 48-bit addresses)",
    )

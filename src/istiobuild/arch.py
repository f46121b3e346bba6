"""One Arch type and explicit tables mapping it to every naming scheme the build touches."""

from __future__ import annotations

import enum
import platform

from istiobuild.errors import UsageError


class Arch(enum.Enum):
    """A target (or host) CPU architecture, named canonically as `uname -m` prints it."""

    AARCH64 = "aarch64"
    X86_64 = "x86_64"

    def __str__(self) -> str:
        return self.value

    @property
    def goarch(self) -> str:
        """Go GOARCH and Istio TARGET_ARCH."""
        return _GOARCH[self]

    @property
    def bazel_cpu(self) -> str:
        """bazel --cpu and the bazel-out/<cpu>-opt directory prefix."""
        return _BAZEL_CPU[self]

    @property
    def oci_platform(self) -> str:
        """docker --platform / OCI image platform."""
        return f"linux/{_GOARCH[self]}"

    @property
    def triple(self) -> str:
        """GNU/clang target triple."""
        return _TRIPLE[self]

    @property
    def gn_cpu(self) -> str:
        """gn target_cpu."""
        return _GN_CPU[self]

    @property
    def elf_machine(self) -> int:
        """ELF e_machine value of binaries for this arch."""
        return _ELF_MACHINE[self]

    @property
    def qemu(self) -> str:
        """qemu-user binary name used to run this arch on another host."""
        return _QEMU[self]


_GOARCH = {Arch.AARCH64: "arm64", Arch.X86_64: "amd64"}
_BAZEL_CPU = {Arch.AARCH64: "aarch64", Arch.X86_64: "k8"}
_TRIPLE = {Arch.AARCH64: "aarch64-linux-gnu", Arch.X86_64: "x86_64-linux-gnu"}
_GN_CPU = {Arch.AARCH64: "arm64", Arch.X86_64: "x64"}
_ELF_MACHINE = {Arch.AARCH64: 183, Arch.X86_64: 62}
_QEMU = {Arch.AARCH64: "qemu-aarch64", Arch.X86_64: "qemu-x86_64"}

# Every spelling users and tools use, to the canonical arch.
_ALIASES = {
    "aarch64": Arch.AARCH64,
    "arm64": Arch.AARCH64,
    "armv8": Arch.AARCH64,
    "armv8l": Arch.AARCH64,
    "linux/arm64": Arch.AARCH64,
    "linux/arm64/v8": Arch.AARCH64,
    "x86_64": Arch.X86_64,
    "amd64": Arch.X86_64,
    "x64": Arch.X86_64,
    "k8": Arch.X86_64,
    "linux/amd64": Arch.X86_64,
}


def parse_arch(text: str) -> Arch:
    """Accept any known alias; raise a UsageError naming the accepted spellings otherwise."""
    arch = _ALIASES.get(text.strip().lower())
    if arch is None:
        known = ", ".join(a.value for a in Arch)
        raise UsageError(
            f"unknown arch {text!r}",
            hint=f"use one of: {known} (aliases: arm64, amd64)",
        )
    return arch


def host_arch(machine: str | None = None) -> Arch:
    """The arch of this machine (`uname -m`)."""
    return parse_arch(machine if machine is not None else platform.machine())

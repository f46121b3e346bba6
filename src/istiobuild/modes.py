"""Build modes: how a build for the target arch runs on this host, decided before anything runs.

- native: the host is the target (on the host, or with --in-container in a builder of the same arch);
- cross: compiled on the host for another arch, only where the release's build takes its target from
  the plan and not from `uname -m` (`cross = [...]` in releases/*.toml: the example);
- emulated: every stage that compiles or runs target code (toolchain, proxy, istio, images) runs in a
  builder container for the target platform under qemu-user (--in-container on a foreign host).

Any other combination would build for the host while claiming the target (the real 1.4/1.5 wee8
genrule picks target_cpu from `uname -m`, 1.4's GOARCH_LOCAL too): it is refused before any work.
"""

from __future__ import annotations

import enum

from istiobuild.arch import Arch
from istiobuild.errors import UsageError
from istiobuild.release import Release

# How much longer a build takes under qemu-user than natively (compilers, bazel's JVM, Go: all emulated).
EMULATION_SLOWDOWN = 10


class Mode(enum.Enum):
    NATIVE = "native"
    EMULATED = "emulated"
    CROSS = "cross"

    def __str__(self) -> str:
        return self.value


def alternatives(target: Arch) -> str:
    """The modes that would work for `target` when this host cannot cross-build it."""
    return (
        f"run on an {target} host, or use --in-container --builder <{target.goarch} builder> "
        f"(emulated, ~{EMULATION_SLOWDOWN}x slower)"
    )


def refusal(release: Release, target: Arch, host: Arch) -> str:
    """The one line that refuses a cross build the release's build does not support, naming what works."""
    return f"cross-building {release.version} for {target} on {host} is not supported: {alternatives(target)}"


def decide(*, host: Arch, target: Arch, release: Release, in_container: bool) -> Mode:
    """The mode for (host, target, release, --in-container), or a UsageError naming the modes that work."""
    if host == target:
        return Mode.NATIVE
    if in_container:
        return Mode.EMULATED
    if target in release.cross:
        return Mode.CROSS
    raise UsageError(refusal(release, target, host))


def describe(mode: Mode, *, host: Arch, target: Arch, builder: str = "") -> str:
    """The mode in words, for the plan's notes and the doctor."""
    if mode is Mode.NATIVE:
        where = f" in {builder}" if builder else ""
        return f"native: {target} built on this {host} host{where}"
    if mode is Mode.CROSS:
        return f"cross: {target} compiled on this {host} host; the release's build takes its target from the plan"
    return (
        f"emulated: the toolchain, proxy, istio and images commands run in {builder} for {target.oci_platform} "
        f"under qemu-user on this {host} host: slow, expect ~{EMULATION_SLOWDOWN}x the native build time"
    )

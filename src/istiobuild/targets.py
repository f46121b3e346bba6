"""Running target-arch binaries: natively, through binfmt_misc, or under qemu-user."""

from __future__ import annotations

from pathlib import Path

from istiobuild.arch import Arch
from istiobuild.errors import ToolError
from istiobuild.run import run, which

BINFMT = Path("/proc/sys/fs/binfmt_misc")


def runner(arch: Arch, host: Arch) -> list[str]:
    """The argv prefix that runs an `arch` binary on `host` ([] when it runs as is)."""
    if arch == host or (BINFMT / arch.qemu).exists():
        return []
    qemu = which(f"{arch.qemu}-static") or which(arch.qemu)
    if qemu is None:
        raise ToolError(
            f"cannot run {arch} binaries on this {host} host: no binfmt registration and no {arch.qemu}",
            hint="install qemu-user-static and register binfmt (as root: "
            "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable)",
        )
    return [qemu]


def run_target(binary: Path, *args: str, arch: Arch, host: Arch, log: Path) -> str:
    """Run a target-arch binary and return its output."""
    argv = [*runner(arch, host), str(binary), *args]
    return run(argv, capture=True, log=log, what=f"run {binary.name} {' '.join(args)} for {arch}").stdout.strip()

from __future__ import annotations

import pytest

from istiobuild.arch import Arch, host_arch, parse_arch
from istiobuild.errors import UsageError


@pytest.mark.parametrize(
    ("text", "arch"),
    [
        ("aarch64", Arch.AARCH64),
        ("arm64", Arch.AARCH64),
        ("ARM64", Arch.AARCH64),
        ("linux/arm64", Arch.AARCH64),
        ("x86_64", Arch.X86_64),
        ("amd64", Arch.X86_64),
        ("k8", Arch.X86_64),
    ],
)
def test_aliases(text: str, arch: Arch) -> None:
    assert parse_arch(text) is arch


def test_maps_are_explicit_and_complete() -> None:
    a, x = Arch.AARCH64, Arch.X86_64
    assert (a.goarch, a.bazel_cpu, a.oci_platform, a.triple, a.gn_cpu, a.elf_machine) == (
        "arm64",
        "aarch64",
        "linux/arm64",
        "aarch64-linux-gnu",
        "arm64",
        183,
    )
    assert (x.goarch, x.bazel_cpu, x.oci_platform, x.triple, x.gn_cpu, x.elf_machine) == (
        "amd64",
        "k8",
        "linux/amd64",
        "x86_64-linux-gnu",
        "x64",
        62,
    )


def test_unknown_arch_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown arch 'riscv64'") as err:
        parse_arch("riscv64")
    assert "aarch64" in err.value.hint


def test_host_arch() -> None:
    assert host_arch("aarch64") is Arch.AARCH64
    assert host_arch() in set(Arch)

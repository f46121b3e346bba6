"""Toolchain profiles and the toolchain stage, with the real compilers (native and cross to aarch64)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from helpers import execute
from istiobuild import elf, release, toolchain
from istiobuild.arch import Arch, host_arch
from istiobuild.errors import ToolError
from istiobuild.plan import make_plan
from istiobuild.targets import run_target

HOST = host_arch()


def toolchain_stage(settings_for, arch: Arch, tc: toolchain.Toolchain) -> Path:  # type: ignore[no-untyped-def]
    """Run the toolchain stage; returns the probe it built."""
    settings = settings_for()
    rel = release.get("example")
    plan = make_plan(rel, arch, tc, settings, host=HOST)
    execute(plan, "toolchain", settings, rel)
    return plan.layout.probe / "probe"


def test_profiles_load() -> None:
    names = set(toolchain.profiles())
    assert {"clang", "clang-9", "gcc", "gcc-7.3"} <= names
    assert toolchain.get("clang-9").accepts("9.0.1") and not toolchain.get("clang-9").accepts("14.0.6")
    assert toolchain.get("gcc-7.3").accepts("7.3.0") and not toolchain.get("gcc-7.3").accepts("12.2.0")
    assert toolchain.get("gcc").accepts("12.2.0") and not toolchain.get("gcc").accepts("4.8.5")
    assert toolchain.get("clang").bazel_configs == ("libc++", "release")
    assert "libc++" not in toolchain.get("gcc").bazel_configs


@pytest.mark.parametrize("arch", list(Arch))
@pytest.mark.parametrize("name", ["gcc", "clang"])
def test_toolchain_stage_proves_compiler_and_arch(settings_for, arch: Arch, name: str) -> None:  # type: ignore[no-untyped-def]
    probe = toolchain_stage(settings_for, arch, toolchain.get(name))
    info = elf.read(probe)
    assert info.arch is arch
    assert info.compiler == name
    # the probe runs: natively, or under qemu-user for a foreign arch
    assert run_target(probe, arch=arch, host=HOST, log=probe.parent / "run.log") == "probe"


def test_missing_toolchain_is_a_clear_error(settings_for) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ToolError, match=r"gcc-7 is not installed") as err:
        toolchain_stage(settings_for, HOST, toolchain.get("gcc-7.3"))
    assert "doctor" in err.value.hint


def test_too_old_or_too_new_is_refused(settings_for) -> None:  # type: ignore[no-untyped-def]
    strict = dataclasses.replace(toolchain.get("gcc"), name="gcc-99", min_version="99")
    with pytest.raises(ToolError, match="toolchain gcc-99 needs >= 99"):
        toolchain_stage(settings_for, HOST, strict)


def test_elf_reader_on_real_binaries(tmp_path: Path) -> None:
    src = tmp_path / "m.c"
    src.write_text("int main(void){return 0;}\n")
    cases = {
        "gcc": (["gcc", "-static"], Arch.X86_64, "gcc"),
        "clang": (["clang", "-static"], Arch.X86_64, "clang"),
        "a64-gcc": (["aarch64-linux-gnu-gcc", "-static"], Arch.AARCH64, "gcc"),
        "a64-clang": (["clang", "--target=aarch64-linux-gnu", "-static"], Arch.AARCH64, "clang"),
        "a64-64k": (["aarch64-linux-gnu-gcc", "-static", "-Wl,-z,max-page-size=0x10000"], Arch.AARCH64, "gcc"),
    }
    for name, (cc, arch, compiler) in cases.items():
        out = tmp_path / name
        subprocess.run([*cc, str(src), "-o", str(out)], check=True)
        info = elf.read(out)
        assert (info.arch, info.compiler) == (arch, compiler), name
    assert set(elf.read(tmp_path / "a64-64k").load_align) == {0x10000}
    assert not elf.is_elf(src)
    assert [p.name for p in elf.elf_files(tmp_path)] == sorted(cases)

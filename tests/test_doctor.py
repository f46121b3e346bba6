"""The doctor, the preflight that stops a build before any work, and secrets that never show."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from helpers import invoke
from istiobuild import doctor, release, toolchain
from istiobuild.arch import Arch
from istiobuild.config import Settings

REPO = Path(__file__).resolve().parent.parent


def checks_for(settings: Settings, tmp_path: Path, **overrides: Any) -> list[doctor.Check]:
    args: dict[str, Any] = {
        "arch": Arch.AARCH64,
        "host": Arch.X86_64,
        "page_size": "4k",
        "release": release.get("1.5.0"),
        "toolchain": toolchain.get("clang"),
        "settings": settings,
        "proxy_dir": tmp_path / "proxy",
    }
    return doctor.run_checks(**{**args, **overrides})


def named(checks: list[doctor.Check], name: str) -> doctor.Check:
    return next(c for c in checks if c.name == name)


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Put scripts that print a given first line first on PATH."""
    bindir = tmp_path / "fake-bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")

    def make(**tools: str) -> None:
        for name, line in tools.items():
            script = bindir / name
            script.write_text(f"#!/bin/sh\necho '{line}'\n")
            script.chmod(0o755)

    return make


def test_checks_cover_what_a_build_needs(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    checks = checks_for(settings_for(), tmp_path)
    names = [c.name for c in checks]
    for expected in (
        "git",
        "clang",
        "clang++",
        "make",
        "bazel",
        "java",
        "gn",
        "ninja",
        "libc++",
        "go",
        "docker",
        "run aarch64 on x86_64",
        "free disk",
        "cores / memory",
        "kernel page size",
    ):
        assert expected in names, expected
    bazel = named(checks, "bazel")
    assert bazel.required.startswith("2.0.0") and not bazel.ok  # only bazel 4 is installed here
    assert "bazel_version" in bazel.fix


def test_run_checks_takes_keywords_only(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError):
        doctor.run_checks(Arch.X86_64, Arch.X86_64)  # type: ignore[misc]


def test_stages_select_the_checks(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    names = {c.name for c in checks_for(settings_for(), tmp_path, arch=Arch.X86_64, stages={"checkout"})}
    assert names == {"git", "free disk", "cores / memory", "kernel page size"}
    istio = {c.name for c in checks_for(settings_for(), tmp_path, stages={"istio"})}
    assert {"go", "make", "run aarch64 on x86_64"} <= istio and "bazel" not in istio


# (tool, what it prints, stages, the check's name, ok)
VERSIONS = [
    ("git", "git version 1.8.0", {"checkout"}, "git", False),
    ("git", "git version 2.19.9", {"checkout"}, "git", False),
    ("git", "git version 2.20.0", {"checkout"}, "git", True),
    ("git", "git version 2.39.5", {"checkout"}, "git", True),
    ("clang", "clang version 3.4 (tags/RELEASE_34/final)", {"toolchain"}, "clang", False),
    ("clang++", "clang version 3.4 (tags/RELEASE_34/final)", {"toolchain"}, "clang++", False),
    ("clang", "Debian clang version 14.0.6", {"toolchain"}, "clang", True),
    ("go", "go version go1.10.4 linux/amd64", {"istio"}, "go", False),
    ("go", "go version go1.19.8 linux/amd64", {"istio"}, "go", True),
    ("docker", "19.03.13", {"images"}, "docker", False),
    ("docker", "20.10.24+dfsg1", {"images"}, "docker", True),
    ("docker", "24.0.7", {"images"}, "docker", True),
    ("make", "bmake-20200710", {"istio"}, "make", False),
    ("make", "GNU Make 4.3", {"istio"}, "make", True),
]


@pytest.mark.parametrize(("tool", "line", "stages", "name", "ok"), VERSIONS)
def test_versions_are_compared(  # type: ignore[no-untyped-def]
    settings_for, fake_tools, tmp_path: Path, tool: str, line: str, stages: set[str], name: str, ok: bool
) -> None:
    fake_tools(**{tool: line})
    rel = release.get("example")  # go 1.19
    check = named(checks_for(settings_for(), tmp_path, release=rel, arch=Arch.X86_64, stages=stages), name)
    assert check.found == line
    assert check.ok is ok, check
    assert bool(check.fix) is not ok


def test_old_git_names_the_minimum(settings_for, fake_tools, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake_tools(git="git version 1.8.0")
    git = named(checks_for(settings_for(), tmp_path, stages={"checkout"}), "git")
    assert (git.ok, git.required) == (False, ">= 2.20")
    assert "2.20" in git.fix


def test_old_compiler_names_the_profile_range(settings_for, fake_tools, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    fake_tools(clang="clang version 3.4 (tags/RELEASE_34/final)")
    clang = named(checks_for(settings_for(), tmp_path, stages={"toolchain"}), "clang")
    assert clang.required == "clang: >= 9" and not clang.ok
    assert "--toolchain" in clang.fix


@pytest.mark.parametrize(
    ("line", "free", "mem", "disk_ok", "mem_ok"),
    [
        ("example", 3.0, 2.5, True, True),
        ("example", 1.0, 1.0, False, False),
        ("1.5", 30.0, 4.0, False, False),
        ("1.5", 100.0, 7.7, True, True),  # an "8 GiB" machine
        ("1.5", 100.0, 0.0, True, True),  # memory unknown: not judged
    ],
)
def test_disk_and_memory_against_what_the_release_needs(  # type: ignore[no-untyped-def]
    settings_for,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    line: str,
    free: float,
    mem: float,
    disk_ok: bool,
    mem_ok: bool,
) -> None:
    monkeypatch.setattr(doctor, "_free_gib", lambda path: free)
    monkeypatch.setattr(doctor, "_mem_gb", lambda: mem)
    rel = release.get("example" if line == "example" else "1.5.0")
    checks = checks_for(settings_for(), tmp_path, release=rel, stages={"checkout"})
    disk, memory = named(checks, "free disk"), named(checks, "cores / memory")
    assert (disk.ok, memory.ok) == (disk_ok, mem_ok)
    assert disk.required == (
        ">= 2 GiB for the example release" if line == "example" else ">= 60 GiB for a real envoy build (1.5.0)"
    )
    assert bool(disk.fix) is not disk_ok and bool(memory.fix) is not mem_ok
    if not disk_ok:
        assert "--workdir" in disk.fix
    if not mem_ok:
        assert "GiB or more" in memory.fix


def test_page_size_check_uses_the_given_page_size(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    host_page = doctor.host_page_size()
    other = "64k" if host_page == "4k" else "4k"
    native = checks_for(settings_for(), tmp_path, arch=Arch.X86_64, page_size=other, stages=set())
    page = named(native, "kernel page size")
    assert page.required == f"the build assumes {other}" and f"--page-size {host_page}" in page.fix


# -- end to end (tasks.py and build.py call run_checks) ----------------------------------------


def test_missing_tool_stops_the_build_before_any_work(tmp_path: Path) -> None:
    work = tmp_path / "w"
    proc = invoke(
        "build",
        "--release",
        "example",
        "--arch",
        "x86_64",
        "--toolchain",
        "gcc",
        "--workdir",
        str(work),
        env={"ISTIOBUILD_NINJA": "no-such-ninja"},
    )
    assert proc.returncode == 6, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no-such-ninja: found missing, need ninja on PATH (wee8 genrule)" in errors[0]
    assert "apt-get install ninja-build" in proc.stderr and "invoke doctor" in proc.stderr
    assert not (work / "example").exists()  # nothing was checked out


def test_doctor_table_and_json() -> None:
    proc = invoke("doctor", "--release", "example", "--arch", "aarch64", "--toolchain", "gcc", "--json")
    checks = json.loads(proc.stdout)
    assert {c["name"] for c in checks} >= {"git", "aarch64-linux-gnu-gcc", "bazel", "go", "kernel page size"}
    text = invoke("doctor", "--release", "example", "--arch", "aarch64", "--toolchain", "gcc").stdout
    assert text.splitlines()[0].split() == ["check", "found", "required", "fix"]


def test_remote_header_is_never_printed(tmp_path: Path) -> None:
    secret = "s3cr3t-t0ken"
    env = {
        "ISTIOBUILD_REMOTE_HEADER": f"x-api-key={secret}",
        "ISTIOBUILD_REMOTE_CACHE": "https://user:pw@cache.example.org/b",
    }
    plan = invoke(
        "plan",
        "--release",
        "1.5.0",
        "--arch",
        "aarch64",
        "--host",
        "aarch64",
        "--json",
        "--workdir",
        str(tmp_path),
        env=env,
    )
    assert plan.returncode == 0, plan.stderr
    assert secret not in plan.stdout and ":pw@" not in plan.stdout
    debug = invoke("plan", "--release", "9.9", env={**env, "ISTIOBUILD_DEBUG": "1"})
    assert secret not in debug.stderr + debug.stdout
    bad = invoke("plan", "--release", "1.5.0", env={**env, "ISTIOBUILD_REMOTE_HEADER": f"x-api-key: {secret}"})
    assert bad.returncode == 2 and secret not in bad.stderr + bad.stdout

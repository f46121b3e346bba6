"""The doctor, the preflight that stops a build before any work, and secrets that never show."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import invoke
from istiobuild import doctor, release, toolchain
from istiobuild.arch import Arch
from istiobuild.plan import make_plan

REPO = Path(__file__).resolve().parent.parent


def test_checks_cover_what_the_plan_needs(settings_for) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for()
    rel = release.get("1.5.0")
    tc = toolchain.get("clang")
    plan = make_plan(rel, Arch.AARCH64, tc, settings, host=Arch.X86_64)
    names = [c.name for c in doctor.run_checks(plan, rel, tc, settings)]
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
    bazel = next(c for c in doctor.run_checks(plan, rel, tc, settings) if c.name == "bazel")
    assert bazel.required.startswith("2.0.0") and not bazel.ok  # only bazel 4 is installed here
    assert "bazel_version" in bazel.fix


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
    secret = "x-api-key: s3cr3t-t0ken"
    env = {"ISTIOBUILD_REMOTE_HEADER": secret, "ISTIOBUILD_REMOTE_CACHE": "https://user:pw@cache.example.org/b"}
    plan = invoke("plan", "--release", "1.5.0", "--arch", "aarch64", "--json", "--workdir", str(tmp_path), env=env)
    assert plan.returncode == 0, plan.stderr
    assert "s3cr3t" not in plan.stdout and ":pw@" not in plan.stdout
    assert "--flagfile=" in plan.stdout
    debug = invoke("plan", "--release", "9.9", env={**env, "ISTIOBUILD_DEBUG": "1"})
    assert "s3cr3t" not in debug.stderr + debug.stdout

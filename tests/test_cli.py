"""The commands as users run them (`invoke ...` and the `istiobuild` console script), end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import invoke, one_error

REPO = Path(__file__).resolve().parent.parent


def one_clear_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Non-zero exit, no traceback, exactly one `error:` line; returns all of stderr."""
    one_error(proc)
    return proc.stderr


def test_build_example_end_to_end_offline(tmp_path: Path) -> None:
    """The README's first command: offline, one pass; a rerun with nothing changed skips every stage."""
    work = tmp_path / "work"
    args = ("build", "--release", "example", "--arch", "aarch64", "--toolchain", "gcc", "--workdir", str(work))
    try:
        first = invoke(*args)
        assert first.returncode == 0, first.stderr
        assert "start checkout" in first.stderr and "done istio" in first.stderr
        assert first.stderr.lstrip().startswith("[")  # plain timestamped lines without a TTY
        for comp in ("proxy", "envoy", "istio"):
            assert (work / "example" / comp / ".git").is_dir()
        record = json.loads((work / "example-aarch64" / "patches.json").read_text())
        assert record["envoy"] and record["proxy"] and record["istio"]
        assert all(len(p["sha256"]) == 64 for comp in record.values() for p in comp)
        assert (work / "example-aarch64" / "artifacts" / "envoy").is_file()
        second = invoke(*args)
        assert second.returncode == 0, second.stderr
        for stage in ("checkout", "patch", "toolchain", "proxy", "istio"):
            assert f"skip {stage}: up to date" in second.stderr
        assert "start " not in second.stderr
        third = invoke(*args, "--from", "istio")
        assert "skip proxy: up to date" in third.stderr and "done istio" in third.stderr
    finally:
        shutdown_bazel(work)


def shutdown_bazel(work: Path) -> None:
    root = work / "cache" / "bazel-root"
    proxy = work / "example" / "proxy"
    if root.exists() and proxy.exists():
        subprocess.run(
            ["bazel", f"--output_user_root={root}", "shutdown"],
            cwd=proxy,
            capture_output=True,
            check=False,
            timeout=120,
        )


def test_plan_json_and_releases_json(tmp_path: Path) -> None:
    # planned as on an aarch64 machine (here, 1.5.0 for arm64 is refused: no cross build)
    proc = invoke(
        "plan", "--release", "1.5.0", "--arch", "arm64", "--host", "aarch64", "--json", "--workdir", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["arch"] == "aarch64" and plan["mode"] == "native"
    assert [s["name"] for s in plan["stages"]] == [
        "checkout", "patch", "toolchain", "proxy", "istio", "images", "verify", "release", "record",
    ]  # fmt: skip
    releases = json.loads(invoke("releases", "--json").stdout)
    assert [r["release"] for r in releases if not r["line"].startswith("example") and r["buildable"]][-1] == "1.28.10"
    assert next(r for r in releases if r["release"] == "1.5.7")["envoy"]["public_repo"] == "istio/envoy"


def test_console_script_exposes_the_same_tasks() -> None:
    exe = Path(sys.executable).parent / "istiobuild"
    proc = subprocess.run([str(exe), "--list"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for name in ("releases", "plan", "checkout", "patch", "build", "doctor", "check-patches", "example"):
        assert name in proc.stdout


def test_every_flag_has_help() -> None:
    for name in ("releases", "plan", "checkout", "patch", "build", "doctor", "check-patches", "example"):
        text = invoke(name, "--help").stdout
        options = text.split("Options:", 1)[1] if "Options:" in text else ""
        for line in options.splitlines():
            if line.strip().startswith("-"):
                assert len(line.split("  ")) > 1 and line.split("  ")[-1].strip(), (name, line)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (("plan", "--release", "9.9.9"), "unknown release '9.9.9'"),
        (("plan", "--release", "1.5.0; rm -rf /"), "is not a release name"),
        (("plan", "--release", "$(id)"), "is not a release name"),
        (("plan", "--arch", "riscv64"), "unknown arch 'riscv64'"),
        (("plan", "--toolchain", "icc"), "unknown toolchain 'icc'"),
        (("check-patches", "--mirrors", "/nonexistent"), "no upstream mirrors"),
    ],
)
def test_bad_input_is_one_clear_line(args: tuple[str, ...], expect: str) -> None:
    stderr = one_clear_error(invoke(*args))
    assert expect in stderr


def test_unknown_release_lists_the_known_ones() -> None:
    stderr = one_clear_error(invoke("plan", "--release", "2.0"))
    assert "known releases: 1.4.0" in stderr and "1.5.10" in stderr and "example" in stderr


def test_unknown_config_key_suggests(tmp_path: Path) -> None:
    (tmp_path / "istiobuild.toml").write_text('mirorr = "x"\n')
    stderr = one_clear_error(invoke("plan", cwd=tmp_path))
    assert "unknown config key 'mirorr'" in stderr and "did you mean 'mirror'" in stderr
    env_err = one_clear_error(invoke("plan", env={"ISTIOBUILD_WORKDRI": "/x"}))
    assert "ISTIOBUILD_WORKDIR" in env_err


def test_unreachable_mirror(tmp_path: Path) -> None:
    proc = invoke(
        "checkout", "--release", "example", "--workdir", str(tmp_path / "w"), "--mirror", str(tmp_path / "gone")
    )
    stderr = one_clear_error(proc)
    assert "cannot reach" in stderr and "gone/proxy" in stderr


def test_pinned_sha_missing_from_remote(tmp_path: Path, example_upstream: Path) -> None:
    # the envoy URL points at a repository that does not hold the pinned envoy commit
    proc = invoke(
        "checkout",
        "--release",
        "example",
        "--workdir",
        str(tmp_path / "w"),
        env={"ISTIOBUILD_MIRROR": str(example_upstream), "ISTIOBUILD_REPOS_ENVOY": str(example_upstream / "istio")},
    )
    stderr = one_clear_error(proc)
    assert "pinned commit" in stderr and "is not in" in stderr


def test_dirty_checkout_error_and_force(tmp_path: Path, example_upstream: Path) -> None:
    env = {"ISTIOBUILD_MIRROR": str(example_upstream), "ISTIOBUILD_WORKDIR": str(tmp_path / "w")}
    assert invoke("checkout", "--release", "example", env=env).returncode == 0
    note = tmp_path / "w" / "example" / "proxy" / "NOTES"
    note.write_text("mine")
    stderr = one_clear_error(invoke("checkout", "--release", "example", env=env))
    assert "local changes or untracked files" in stderr and "--force" in stderr
    assert note.read_text() == "mine"
    forced = invoke("checkout", "--release", "example", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert "refs/istiobuild/saved/" in forced.stderr

"""Failing mid-way, Ctrl-C and resuming, with the real example build (bazel, Go) and a stand-in `go`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import invoke
from istiobuild.errors import UsageError
from istiobuild.stamps import workdir_lock

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

FAKE_GO = """#!/bin/sh
# a go that answers `go version` and then fails (or hangs) when asked to build
if [ "$1" = version ]; then exec {real} version; fi
echo "fake go: compiling pilot-agent"
if [ -n "$FAKE_GO_HANG" ]; then echo $$ > "$FAKE_GO_HANG"; sleep 300; fi
echo "fake go: error: something broke" >&2
exit 2
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A workdir where the example was built once for x86_64 with gcc."""
    work = tmp_path_factory.mktemp("resume") / "work"
    proc = invoke("build", *common(work))
    assert proc.returncode == 0, proc.stderr
    yield work
    root, proxy = work / "cache" / "bazel-root", work / "example" / "proxy"
    subprocess.run(["bazel", f"--output_user_root={root}", "shutdown"], cwd=proxy, capture_output=True, check=False)


def common(work: Path) -> tuple[str, ...]:
    return ("--release", "example", "--arch", "x86_64", "--toolchain", "gcc", "--workdir", str(work))


def env_with_fake_go(tmp_path: Path, **extra: str) -> dict[str, str]:
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    go = bindir / "go"
    go.write_text(FAKE_GO.format(real=shutil.which("go")))
    go.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    env.update(extra)
    return env


def test_failure_names_stage_log_and_tail_then_resumes(built: Path, tmp_path: Path) -> None:
    failed = invoke("build", *common(built), "--from", "istio", env=env_with_fake_go(tmp_path))
    assert failed.returncode == 7 and "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: stage istio"), failed.stderr
    assert "fake go: error: something broke" in failed.stderr  # the tail, on screen
    log = built / "logs" / "example-x86_64-istio.log"
    assert f"full log: {log}" in failed.stderr and "something broke" in log.read_text()
    resumed = invoke("build", *common(built))
    assert resumed.returncode == 0, resumed.stderr
    for stage in ("checkout", "patch", "toolchain", "proxy"):
        assert f"skip {stage}: up to date" in resumed.stderr
    assert "done istio" in resumed.stderr


def test_ctrl_c_stops_everything_exits_130_and_resumes(built: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "go.pid"
    proc = subprocess.Popen(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "build", *common(built), "--from", "istio"],
        env=env_with_fake_go(tmp_path, FAKE_GO_HANG=str(pidfile)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for _ in range(600):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.1)
    go_pid = int(pidfile.read_text())
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr and "again to resume" in stderr
    time.sleep(0.5)
    state = Path(f"/proc/{go_pid}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    resumed = invoke("build", *common(built))
    assert resumed.returncode == 0, resumed.stderr
    assert "skip proxy: up to date" in resumed.stderr and "done istio" in resumed.stderr


def test_one_build_per_workdir(tmp_path: Path) -> None:
    with workdir_lock(tmp_path), pytest.raises(UsageError, match="already running"), workdir_lock(tmp_path):
        pass
    with workdir_lock(tmp_path):  # released
        pass

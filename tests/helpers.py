"""Running the commands as users do, for the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def invoke(
    *args: str, cwd: Path = REPO, env: Mapping[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`invoke ARGS` from this checkout, without the caller's ISTIOBUILD_* settings (plus `env`)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
        cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Non-zero exit, no traceback, exactly one `error:` line; returns that line."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def execute(plan, name: str, settings, rel, **options):  # type: ignore[no-untyped-def]
    """Run one stage of a plan through the executor, as the pipeline does (without stamps or preflight)."""
    from istiobuild.console import Console
    from istiobuild.executor import Executor

    ex = Executor(settings=settings, release=rel, layout=plan.layout, console=Console(tty=False), **options)
    ex.stage = plan.stage(name)
    for step in ex.stage.steps:
        ex.step(step)
    return ex


def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` every 50 ms until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()

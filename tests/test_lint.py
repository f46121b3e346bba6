"""Type-check and lint as part of the suite, with the real tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "src", "tests", "tasks.py", "bench"],
        cwd=REPO,
        capture_output=True,
        check=False,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, check=False, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

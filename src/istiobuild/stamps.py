"""Resumable builds: per-stage stamps keyed by the stage's inputs, and one lock per workdir."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from istiobuild.errors import UsageError


def key(previous: str, *parts: Any) -> str:
    """A stage's cache key: its own inputs chained to the previous stage's key."""
    blob = json.dumps([previous, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Stamps:
    """<dir>/<stage>.json holds the key a stage last completed with."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, stage: str) -> Path:
        return self.directory / f"{stage}.json"

    def matches(self, stage: str, stage_key: str) -> bool:
        try:
            data = json.loads(self._path(stage).read_text())
        except (OSError, ValueError):
            return False
        outputs = [Path(p) for p in data.get("outputs", [])]
        return bool(data.get("key") == stage_key and all(p.exists() for p in outputs))

    def write(self, stage: str, stage_key: str, outputs: list[str], extra: Mapping[str, Any] | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self._path(stage)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": stage_key, "outputs": outputs, **(extra or {})}, indent=2) + "\n")
        tmp.replace(path)

    def clear(self, stage: str) -> None:
        self._path(stage).unlink(missing_ok=True)


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Only one build per workdir at a time."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / ".istiobuild.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = path.read_text().strip() or "another process"
            raise UsageError(
                f"another istiobuild is already running in {workdir} (pid {holder})",
                hint="wait for it to finish, or use a different --workdir",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

"""Resumable builds: per-stage stamps keyed by the stage's inputs, and one lock per workdir."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild.fsutil import workdir_lock as workdir_lock  # noqa: PLC0414 (explicit re-export)


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

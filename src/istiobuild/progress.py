"""What a long step's output tells about its progress, and the warnings worth showing from it.

A step's output goes to its log (see run.py); the live view follows the log (`LogFollower`) and feeds
every new line to a `Tracker`, which knows three counters: bazel's `[1,234 / 5,678]` actions, the
classic docker builder's `Step 3/7 :` and Go packages (`go build -v` prints each one's import path,
`go build -x` its compile command; no total is known, so they are only counted). `warnings` picks the
lines worth a CI warning out of a finished stage's log: bazel failing to use its remote cache.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

FOLLOW_MAX = 1 << 20  # a poll reads at most this much new log; beyond it, only the newest TAIL bytes
TAIL = 64 << 10
SCAN_CHUNK = 8 << 20
MAX_WARNINGS = 5  # distinct warnings reported per stage (GitHub shows 10 warning annotations per step)

_BAZEL = re.compile(r"^\[(?P<done>\d[\d,.']*) / (?P<total>\d[\d,.']*)\]")
_DOCKER_STEP = re.compile(r"^Step (?P<done>\d+)/(?P<total>\d+) : ")
_DOCKER_BUILD = re.compile(r"^docker build .*?(?:-t|--tag)[ =](?P<image>\S+)")
_GO_COMPILE = re.compile(r"/compile -o \S*/_pkg_\.a .*? -p (?P<package>\S+)")
# `go build -v`: one import path per line; only domain-qualified ones (istio.io/..., github.com/...) are
# told apart from other one-word lines with certainty.
_GO_PACKAGE = re.compile(r"^(?P<package>[a-z0-9][a-z0-9-]*(?:\.[a-z0-9-]+)+(?:/[A-Za-z0-9_.~+-]+)+)$")
_WARNING = re.compile(r"^WARNING: (?P<text>.*\b[Rr]emote [Cc]ache\b.*)$")
_WARNING_NEEDLE = b"emote Cache"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Progress:
    """How far a step is: `done` of `total` (None: unknown, counted only) units of `what`."""

    what: str
    done: int
    total: int | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


def _number(text: str) -> int:
    """bazel groups digits by the locale: 1,234 or 1.234 or 1'234."""
    return int(re.sub(r"\D", "", text))


class Tracker:
    """Reads output lines in order; `current` is the progress the newest counting line told."""

    def __init__(self) -> None:
        self.current: Progress | None = None
        self._packages: set[str] = set()
        self._image = ""

    def feed(self, line: str) -> Progress | None:
        text = line.rstrip("\r\n")
        found = self._parse(text)
        if found is not None:
            self.current = found
        return self.current

    def _parse(self, text: str) -> Progress | None:
        if match := _BAZEL.match(text):
            return Progress(what="bazel actions", done=_number(match["done"]), total=_number(match["total"]))
        if match := _DOCKER_BUILD.match(text):
            self._image = match["image"]
            return None
        if match := _DOCKER_STEP.match(text):
            what = f"docker build steps ({self._image})" if self._image else "docker build steps"
            return Progress(what=what, done=int(match["done"]), total=int(match["total"]))
        match = _GO_COMPILE.search(text) or _GO_PACKAGE.match(text)
        if match:
            self._packages.add(match["package"])
            return Progress(what="Go packages", done=len(self._packages))
        return None


class LogFollower:
    """The complete lines appended to a log since the follower was made (the log may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = size(path)
        self._partial = b""

    def lines(self) -> list[str]:
        try:
            fh = self.path.open("rb")
        except OSError:
            return []
        with fh:
            end = os.fstat(fh.fileno()).st_size
            if end < self._offset:  # replaced or truncated: follow the new file from its start
                self._offset, self._partial = 0, b""
            if end - self._offset > FOLLOW_MAX:  # a flood: keep up with its newest part only
                self._offset, self._partial = end - TAIL, b""
            fh.seek(self._offset)
            data = self._partial + fh.read(end - self._offset)
        self._offset = end
        *complete, self._partial = data.split(b"\n")
        return [line.decode(errors="replace") for line in complete]


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def warnings(path: Path, start: int = 0) -> list[str]:
    """bazel's remote cache warnings in the log from byte `start` on, each once, at most MAX_WARNINGS.

    bazel puts the reason on the line after `WARNING: Reading from Remote Cache:`; it is joined in.
    """
    found: list[str] = []
    try:
        fh = path.open("rb")
    except OSError:
        return found
    with fh:
        fh.seek(start)
        carry = b""
        while len(found) < MAX_WARNINGS:
            chunk = fh.read(SCAN_CHUNK)
            data = carry + chunk
            if _WARNING_NEEDLE not in data:  # the common case stays at memchr speed, however long the log
                carry = data[data.rfind(b"\n") + 1 :]
            else:  # keep the last two lines (one may be partial) for the next round: a reason may follow
                lines = data.split(b"\n")
                keep = 2 if chunk else 0
                _collect(lines, len(lines) - keep, found)
                carry = b"\n".join(lines[len(lines) - keep :])
            if not chunk:
                break
    return found[:MAX_WARNINGS]


def _collect(lines: list[bytes], upto: int, found: list[str]) -> None:
    for index in range(max(0, upto)):
        match = _WARNING.match(lines[index].decode(errors="replace").rstrip("\r"))
        if not match:
            continue
        text = match["text"]
        if text.endswith(":") and index + 1 < len(lines):
            text = f"{text} {lines[index + 1].decode(errors='replace').strip()}"
        if text not in found:
            found.append(text)

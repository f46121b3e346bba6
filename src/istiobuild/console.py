"""Output for humans and CI: rich on a TTY, plain timestamped lines without one."""

from __future__ import annotations

import datetime
import os
import sys
from typing import TextIO

from rich.console import Console as RichConsole


def is_tty(stream: TextIO) -> bool:
    if os.environ.get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Console:
    """Progress lines on stderr; results (tables, JSON, plans) on stdout."""

    def __init__(self, *, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = is_tty(self.stream) if tty is None else tty
        self._rich = (
            RichConsole(file=self.stream, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)
            if self.tty
            else None
        )

    def _plain(self, text: str) -> None:
        now = datetime.datetime.now().strftime("%H:%M:%S")
        self.stream.write(f"[{now}] {text}\n")
        self.stream.flush()

    def info(self, text: str) -> None:
        if self._rich is not None:
            self._rich.print(f"[dim]·[/dim] {text}", markup=True, soft_wrap=True)
        else:
            self._plain(text)

    def start(self, stage: str, summary: str) -> None:
        if self._rich is not None:
            self._rich.print(f"[bold cyan]▶ {stage}[/] {summary}", soft_wrap=True)
        else:
            self._plain(f"start {stage}: {summary}")

    def done(self, stage: str, seconds: float, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        if self._rich is not None:
            self._rich.print(f"[bold green]✔ {stage}[/] {seconds:.1f}s{extra}", soft_wrap=True)
        else:
            self._plain(f"done {stage} in {seconds:.1f}s{extra}")

    def skip(self, stage: str, why: str) -> None:
        if self._rich is not None:
            self._rich.print(f"[yellow]- {stage}[/] {why}", soft_wrap=True)
        else:
            self._plain(f"skip {stage}: {why}")

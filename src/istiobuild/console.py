"""Output for humans and CI: rich on a TTY, plain timestamped lines without one."""

from __future__ import annotations

import collections
import contextlib
import datetime
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.panel import Panel

LIVE_LINES = 8


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
        self.github = os.environ.get("GITHUB_ACTIONS") == "true"
        self._rich = None
        if self.tty:  # rich only costs its import time where it is used: on a terminal
            from rich.console import Console as RichConsole

            self._rich = RichConsole(file=self.stream, no_color=bool(os.environ.get("NO_COLOR")), highlight=False)

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
        if self.github:
            self.stream.write(f"::group::{stage}: {summary}\n")
        if self._rich is not None:
            self._rich.print(f"[bold cyan]▶ {stage}[/] {summary}", soft_wrap=True)
        else:
            self._plain(f"start {stage}: {summary}")

    def done(self, stage: str, seconds: float, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        if self.github:
            self.stream.write("::endgroup::\n")
            summary = os.environ.get("GITHUB_STEP_SUMMARY")
            if summary:
                with open(summary, "a") as fh:  # noqa: PTH123
                    fh.write(f"| {stage} | {seconds:.1f} s | {detail} |\n")
        if self._rich is not None:
            self._rich.print(f"[bold green]✔ {stage}[/] {seconds:.1f}s{extra}", soft_wrap=True)
        else:
            self._plain(f"done {stage} in {seconds:.1f}s{extra}")

    def skip(self, stage: str, why: str) -> None:
        if self._rich is not None:
            self._rich.print(f"[yellow]- {stage}[/] {why}", soft_wrap=True)
        else:
            self._plain(f"skip {stage}: {why}")

    @contextlib.contextmanager
    def live(self, title: str, log: Path) -> Iterator[Callable[[str], None] | None]:
        """On a TTY, a live panel with the step's last lines; otherwise nothing on screen.

        Yields the callback the runner calls with new output lines (None without a TTY).
        """
        if self._rich is None:
            yield None
            return
        from rich.live import Live
        from rich.panel import Panel
        from rich.text import Text

        lines: collections.deque[str] = collections.deque(maxlen=LIVE_LINES)

        def panel() -> Panel:
            body = Text("\n".join(lines) or "starting...", overflow="ellipsis", no_wrap=True)
            return Panel(body, title=f"[bold]{title}[/]", subtitle=str(log), border_style="cyan")

        with Live(panel(), console=self._rich, refresh_per_second=4, transient=True) as view:

            def on_line(text: str) -> None:
                lines.append(text)
                view.update(panel())

            yield on_line

"""Output for humans and CI: rich on a TTY, plain timestamped lines without one, CI-native in CI.

Every stage is started, done, skipped or failed through the Console, which keeps what happened to each
(`results`) for the summary every build ends with: stages with times and cache state, images with
their IDs or digests and verification, the record path (a rich table on a TTY, plain lines without
one; on GitHub Actions also the job summary and the step outputs, see cioutput.py). rich is imported
only on a TTY: `invoke --list` and CI runs never pay for it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from istiobuild import cioutput, fsutil, progress

if TYPE_CHECKING:
    from rich.console import Console as RichConsole
    from rich.console import ConsoleOptions, RenderableType, RenderResult

    from istiobuild.errors import IstiobuildError
    from istiobuild.layout import Layout

LIVE_LINES = 8
ANNOTATION_LINES = 10
StageState = Literal["done", "up to date", "failed"]


def is_tty(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    if (os.environ if env is None else env).get("FORCE_COLOR"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageResult:
    name: str
    state: StageState
    seconds: float = 0.0
    log: Path | None = None
    began: float = 0.0  # wall-clock start (time.time()); 0 for a stage that was up to date


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageResult:
    reference: str
    image_id: str  # the local image ID the verify stage recorded ("" when it did not finish)
    digest: str  # the registry digest, when the publish stage pushed it
    findings: tuple[tuple[bool, str], ...]  # the verify stage's checks: (ok, what)

    @property
    def identity(self) -> str:
        return self.digest or self.image_id


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildSummary:
    title: str
    stages: tuple[StageResult, ...]
    images: tuple[ImageResult, ...]
    out_dir: Path
    record: Path | None  # the build record, when this build wrote it or found it up to date
    error: str = ""  # why the build failed ("" = it did not)


def summarize(layout: Layout, stages: Sequence[StageResult], *, error: str = "") -> BuildSummary:
    """The build's summary from its records, each only if this run wrote it or found it up to date."""
    by_name = {s.name: s for s in stages}

    def current(stage: str, path: Path) -> bool:
        result = by_name.get(stage)
        if result is None or not path.is_file():
            return False
        # a failed stage's record counts when the stage wrote it (verify.json names what failed)
        return result.state != "failed" or path.stat().st_mtime >= result.began

    stamp = layout.stamps / "verify.json"
    ids = (
        (fsutil.read_json_object(stamp) or {}).get("outputs", {}).get("images", {}) if current("verify", stamp) else {}
    )
    pushed = layout.record("pushed")
    digests = (fsutil.read_json_object(pushed) or {}) if current("publish", pushed) else {}
    findings = _findings(layout.record("verify")) if current("verify", layout.record("verify")) else []
    images = [
        ImageResult(reference=ref, image_id=str(ids.get(ref, "")), digest=str(digests.get(ref, "")), findings=found)
        for ref, found in _by_final_name(list(ids), findings).items()
    ]
    record = layout.record("build-record")
    return BuildSummary(
        title=f"{layout.release} for {layout.arch.value}",
        stages=tuple(stages),
        images=tuple(images),
        out_dir=layout.out_dir,
        record=record if current("record", record) else None,
        error=error,
    )


def _findings(path: Path) -> list[tuple[str, bool, str]]:
    """(image, ok, what) of each check in verify.json."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    items = data if isinstance(data, list) else []
    return [(str(f.get("image", "")), bool(f.get("ok")), str(f.get("what", ""))) for f in items if isinstance(f, dict)]


def _by_final_name(finals: list[str], findings: list[tuple[str, bool, str]]) -> dict[str, tuple[tuple[bool, str], ...]]:
    """Findings grouped under the final image names (verify checks the images under their build tag:
    the same repository, a longer tag); an image with no final name keeps the name it was checked under."""
    repo = {name.rpartition(":")[0]: name for name in finals}
    grouped: dict[str, list[tuple[bool, str]]] = {name: [] for name in finals}
    for image, ok, what in findings:
        grouped.setdefault(repo.get(image.rpartition(":")[0], image), []).append((ok, what))
    return {name: tuple(found) for name, found in grouped.items()}


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Running:
    name: str
    log: Path | None
    offset: int  # the log's size when the stage started: its warnings are after it
    began: float


class Console:
    """A build's progress, warnings and closing summary, on stderr (other tasks print their results on stdout).

    `env` decides the CI framing (GitHub Actions, GitLab CI, none) and where GitHub's files are.
    """

    def __init__(
        self, *, stream: TextIO | None = None, tty: bool | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        self.env = os.environ if env is None else env
        self.stream = stream or sys.stderr
        self.tty = is_tty(self.stream, self.env) if tty is None else tty
        self.ci = cioutput.flavor(self.env)
        self.results: list[StageResult] = []
        self._running: _Running | None = None
        self._rich: Any = None
        if self.tty:  # rich only costs its import time where it is used: on a terminal
            from rich.console import Console as RichConsole

            self._rich = RichConsole(
                file=self.stream, force_terminal=True, no_color=bool(self.env.get("NO_COLOR")), highlight=False
            )

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def _plain(self, text: str) -> None:
        now = datetime.datetime.now().strftime("%H:%M:%S")
        self._write(f"[{now}] {text}\n")

    def _say(self, mark: str, text: str, plain: str) -> None:
        """`mark` (rich markup) and `text` (shown as is) on a terminal, else the plain timestamped line."""
        if self._rich is not None:
            from rich.markup import escape

            self._rich.print(f"{mark} {escape(text)}", soft_wrap=True)
        else:
            self._plain(plain)

    def info(self, text: str) -> None:
        self._say("[dim]·[/dim]", text, text)

    def warning(self, text: str) -> None:
        if self.ci == "github":
            self._write(cioutput.command("warning", text))
        else:
            self._say("[bold yellow]! warning:[/]", text, f"warning: {text}")

    def start(self, stage: str, summary: str, log: Path | None = None) -> None:
        self._close()
        self._running = _Running(name=stage, log=log, offset=progress.size(log) if log else 0, began=time.time())
        if self.ci == "github":
            self._write(cioutput.group(f"{stage}: {summary}"))
        elif self.ci == "gitlab":
            self._write(cioutput.section_start(stage, f"{stage}: {summary}"))
        self._say(f"[bold cyan]▶ {stage}[/]", summary, f"start {stage}: {summary}")

    def done(self, stage: str, seconds: float, detail: str = "") -> None:
        running = self._close()
        self.results.append(StageResult(name=stage, state="done", seconds=seconds, **_where(running)))
        extra = f" ({detail})" if detail else ""
        self._say(f"[bold green]✔ {stage}[/]", f"{seconds:.1f}s{extra}", f"done {stage} in {seconds:.1f}s{extra}")

    def skip(self, stage: str, why: str) -> None:
        self._close()
        self.results.append(StageResult(name=stage, state="up to date"))
        self._say(f"[yellow]- {stage}[/]", why, f"skip {stage}: {why}")

    def failed(self, stage: str, seconds: float, error: IstiobuildError) -> None:
        """A stage failed: the CI annotation (the error itself is printed once, by the task)."""
        running = self._close()
        self.results.append(StageResult(name=stage, state="failed", seconds=seconds, **_where(running)))
        if self.ci == "github":
            message = error.message.removeprefix(f"stage {stage} failed: ").removeprefix(f"stage {stage}: ")
            self._write(cioutput.command("error", _annotation(message, error), title=f"stage {stage} failed"))
        self._say(f"[bold red]✘ {stage}[/]", f"failed after {seconds:.1f}s", f"failed {stage} after {seconds:.1f}s")

    def error(self, error: IstiobuildError) -> None:
        """A failure outside any stage (preflight, the workdir lock): annotated on GitHub, like a stage's."""
        if self.ci == "github" and not any(r.state == "failed" for r in self.results):
            self._write(cioutput.command("error", _annotation(error.message, error), title="istiobuild build failed"))

    def _close(self) -> _Running | None:
        """End the running stage's group or section; its log's warnings (bazel's remote cache) shown once."""
        running, self._running = self._running, None
        if running is None:
            return None
        if self.ci == "github":
            self._write(cioutput.endgroup())
        elif self.ci == "gitlab":
            self._write(cioutput.section_end(running.name))
        if running.log is not None:
            for text in progress.warnings(running.log, running.offset):
                self.warning(f"{running.name}: bazel: {text}")
        return running

    def finish(self, layout: Layout, *, error: str = "", summary: bool = True) -> BuildSummary | None:
        """End the last group or section; then the summary every build ends with (None: no stage was reached)."""
        self._close()
        if not summary or not self.results:
            return None
        result = summarize(layout, self.results, error=error)
        if self._rich is not None:
            self._rich.print(rich_summary(result), crop=False)  # the record path is printed whole (see rich_summary)
        else:
            self._write("".join(f"{line}\n" for line in plain_summary(result)))
        if self.ci == "github":
            cioutput.write_summary(self.env, cioutput.markdown(result))
            cioutput.write_outputs(self.env, cioutput.outputs(result))
        return result

    @contextlib.contextmanager
    def live(self, title: str, log: Path) -> Iterator[Callable[[str], None] | None]:
        """On a TTY, a live panel: the step's progress (when its output tells it), elapsed time, last lines.

        Yields the callback the runner calls with new output lines (None without a TTY).
        """
        if self._rich is None:
            yield None
            return
        from rich.live import Live

        view = LiveView(title, log)
        with Live(view, console=self._rich, refresh_per_second=4, transient=True):
            yield view.update


def _annotation(message: str, error: IstiobuildError) -> str:
    """`<message> (log: <path>)`, then the hint (a failed command's last lines, or what to do)."""
    log = f" (log: {error.log})" if error.log else ""
    hint = "\n".join(error.hint.splitlines()[-ANNOTATION_LINES:])
    return f"{message}{log}" + (f"\n{hint}" if hint else "")


def _where(running: _Running | None) -> dict[str, Any]:
    return {"log": running.log, "began": running.began} if running else {}


def _elapsed(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds)))


def _cut_start(text: str, width: int) -> str:
    """`text` in at most `width` characters, its start elided: a long path keeps its file name."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1 :]


class LiveView:
    """What the live panel shows; rendered afresh a few times a second (the elapsed time moves on its own)."""

    def __init__(self, title: str, log: Path) -> None:
        self.title = title
        self.log = log
        self.lines: collections.deque[str] = collections.deque(maxlen=LIVE_LINES)
        self.tracker = progress.Tracker()
        self.began = time.monotonic()
        self._follower = progress.LogFollower(log)
        self._spinner: Any = None

    def update(self, newest: str) -> None:
        """The runner's newest line; every line the log gained since the last call feeds the progress."""
        for line in self._follower.lines():
            self.tracker.feed(line)
        self.tracker.feed(newest)
        self.lines.append(newest)

    def __rich_console__(self, console: RichConsole, options: ConsoleOptions) -> RenderResult:
        from rich.console import Group
        from rich.markup import escape
        from rich.panel import Panel
        from rich.text import Text

        body = Text("\n".join(self.lines) or "starting...", overflow="ellipsis", no_wrap=True)
        elapsed = _elapsed(time.monotonic() - self.began)
        parts: list[RenderableType] = [body]
        if self.tracker.current is not None:
            parts.insert(0, self._progress(self.tracker.current, elapsed))
        title = f"[bold]{escape(self.title)}[/] {elapsed}"
        log = _cut_start(str(self.log), options.max_width - 6)  # the bottom border: corners, padding, one rule each
        yield Panel(Group(*parts), title=title, subtitle=escape(log), border_style="cyan")

    def _progress(self, now: progress.Progress, elapsed: str) -> RenderableType:
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        grid.add_column(no_wrap=True, overflow="ellipsis", max_width=48)  # what is counted: one line, however long
        if now.total:
            percent = f"{100 * (now.fraction or 0):.0f}%"
            bar = ProgressBar(total=now.total, completed=min(now.done, now.total), width=30)
            grid.add_row(now.what, bar, f"{now.done:,}/{now.total:,}", percent, elapsed)
        else:
            if self._spinner is None:
                self._spinner = Spinner("dots")
            grid.add_row(self._spinner, f"{now.done:,} {now.what}", elapsed)
        return grid


def rich_summary(summary: BuildSummary) -> RenderableType:
    """The summary on a terminal: a table of stages, one of images, the record path.

    The path is one line however long: the terminal wraps it where it must, so it is copied whole (print it
    with `crop=False`); rich would break it into lines, or cut it.
    """
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    color = {"done": "green", "up to date": "yellow", "failed": "bold red"}
    status = f"[bold red]failed[/]: {escape(summary.error)}" if summary.error else "[bold green]built[/]"
    stages = Table()
    for name in ("stage", "result", "time"):
        stages.add_column(name, justify="right" if name == "time" else "left")
    for s in summary.stages:
        shown = f"{s.seconds:.1f}s" if s.state != "up to date" else ""
        stages.add_row(s.name, f"[{color[s.state]}]{s.state}[/]", shown)
    parts: list[RenderableType] = [f"[bold]{escape(summary.title)}[/]: {status}", stages]
    if summary.images:
        images = Table(title="images", title_justify="left")
        pushed = any(i.digest for i in summary.images)
        images.add_column("image")
        for name in ("image ID", *(("registry digest",) if pushed else ())):
            images.add_column(name, overflow="fold")  # never cut: they are there to be copied
        images.add_column("verification", overflow="fold")
        for i in summary.images:
            digest = (i.digest or "-",) if pushed else ()
            images.add_row(i.reference, i.image_id or "-", *digest, escape(cioutput.verdict(i)))
        parts.append(images)
    where = summary.record or summary.out_dir
    label = "build record" if summary.record else "output"
    parts.append(Text(f"{label}: {where}", no_wrap=True, overflow="ignore"))
    return Group(*parts)


def plain_summary(summary: BuildSummary) -> list[str]:
    """The summary without a terminal: one line per stage and per image, then the record path."""
    now = datetime.datetime.now().strftime("%H:%M:%S")
    status = f"failed: {summary.error}" if summary.error else "built"
    lines = [f"[{now}] summary: {summary.title}, {status}"]
    for s in summary.stages:
        lines.append(f"  {s.name:<10} {s.state:<10} " + (f"{s.seconds:.1f}s" if s.state != "up to date" else ""))
    for i in summary.images:
        digest = f" digest {i.digest}" if i.digest else ""
        lines.append(f"  image {i.reference} {i.image_id or '-'}{digest} {cioutput.verdict(i)}")
    lines.append(f"  build record {summary.record}" if summary.record else f"  output {summary.out_dir}")
    return [line.rstrip() for line in lines]

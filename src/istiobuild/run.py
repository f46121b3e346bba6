"""The one subprocess entry point: argv lists, an env delta, a cwd, a log file, dry-run, exit codes.

Every external command istiobuild runs (git, make, bazel, go, docker CLI) goes through `run`.
Children never outlive istiobuild: Ctrl-C, SIGTERM and SIGHUP (see `signals_as_interrupts`) stop the
child's whole process group and the bazel servers it started; a watchdog does the same if istiobuild
itself is killed (see procs.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from istiobuild import procs
from istiobuild.errors import Interrupted, StepFailed, ToolError
from istiobuild.procs import stop_bazel_servers, stop_process_group
from istiobuild.secrets import Redactor, child_environ, registered_secrets

__all__ = [
    "HungUp",
    "Result",
    "Terminated",
    "clean_environ",
    "format_command",
    "redact",
    "run",
    "signals_as_interrupts",
    "stop_bazel_servers",
    "stop_process_group",
    "which",
]

TAIL_LINES = 25
_CHUNK = 1 << 20
RESUME = "run the same command again to resume"


class Terminated(Interrupted):
    """istiobuild received SIGTERM."""

    exit_code = 143
    reason = "terminated (SIGTERM)"

    def __init__(self, message: str = "", *, hint: str = RESUME, log: Path | None = None) -> None:
        super().__init__(message or self.reason, hint=hint, log=log)


class HungUp(Interrupted):
    """istiobuild received SIGHUP (its terminal went away)."""

    exit_code = 129
    reason = "hung up (SIGHUP)"

    def __init__(self, message: str = "", *, hint: str = RESUME, log: Path | None = None) -> None:
        super().__init__(message or self.reason, hint=hint, log=log)


_SIGNAL_ERRORS: dict[int, Callable[[], Interrupted]] = {signal.SIGTERM: Terminated, signal.SIGHUP: HungUp}


def _raise_for(signum: int, frame: FrameType | None) -> None:
    raise _SIGNAL_ERRORS[signum]()


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated (exit 143) and SIGHUP raises HungUp (exit 129).

    Like Ctrl-C (KeyboardInterrupt), they stop a running child's whole process tree. A signal that
    was ignored when entering (SIGHUP under nohup) stays ignored. Main thread only; elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in _SIGNAL_ERRORS}
    try:
        for sig in _SIGNAL_ERRORS:
            if previous[sig] not in (signal.SIG_IGN, None):
                signal.signal(sig, _raise_for)
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str  # captured output (only with capture=True)
    tail: tuple[str, ...]  # last lines of combined output
    seconds: float


def clean_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a child may see (see secrets.child_environ): no GIT_*, no ISTIOBUILD_*, no secrets."""
    return child_environ(environ)


def redact(text: str, secrets: Iterable[str]) -> str:
    return Redactor(secrets).text(text)


def format_command(
    argv: Sequence[str], *, cwd: Path | None, env: Mapping[str, str], secrets: Iterable[str] = ()
) -> str:
    """`+ [cwd] K=V ... argv` with secrets masked, as echoed and logged."""
    delta = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    cmd = shlex.join(argv)
    where = f"[{cwd}] " if cwd else ""
    return Redactor(secrets).text(f"+ {where}{delta + ' ' if delta else ''}{cmd}")


def which(name: str, path: str | None = None) -> str | None:
    return shutil.which(name, path=path)


@dataclasses.dataclass
class _Run:
    """One child's plumbing: where its output goes and how it is masked."""

    argv: tuple[str, ...]
    log: Path | None
    log_fh: IO[bytes] | None
    redactor: Redactor
    capture: bool
    stdin: str | None
    on_line: Callable[[str], None] | None
    tail: collections.deque[str] = dataclasses.field(default_factory=lambda: collections.deque(maxlen=TAIL_LINES))

    @property
    def direct(self) -> bool:
        # Without a live view or secrets to mask, the child writes straight into the log: no copying
        # through Python at all, however many gigabytes a `-s --sandbox_debug` build prints.
        return self.log_fh is not None and not self.capture and not self.redactor


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    log: Path | None = None,
    capture: bool = False,
    check: bool = True,
    secrets: Iterable[str] = (),
    on_line: Callable[[str], None] | None = None,
    stdin: str | None = None,
    what: str = "",
    bazel_roots: Sequence[Path] = (),
) -> Result:
    """Run argv (never through a shell) and return its Result.

    env is the delta on top of base_env (default: os.environ), which passes through
    secrets.child_environ (no GIT_*, no ISTIOBUILD_*, nothing holding a secret). Output goes to `log`
    (appended) when given; `capture` keeps stdout in the result (stderr then goes to the log or the
    tail). The given and the registered secrets are masked in the echo, the log, the tail and the live
    line. Ctrl-C (and SIGTERM/SIGHUP under signals_as_interrupts) stops the child's whole process
    group, then the bazel servers under `bazel_roots` (output user roots), which are also stopped
    when the child dies of a signal; a watchdog stops both if istiobuild itself is killed.
    """
    argv = tuple(argv)
    delta = dict(env or {})
    redactor = Redactor((*secrets, *registered_secrets()))
    line = format_command(argv, cwd=cwd, env=delta, secrets=redactor.secrets)
    full_env = child_environ(os.environ if base_env is None else base_env, redactor.secrets)
    full_env.update(delta)
    _require(argv, full_env, redactor, what)
    log_fh = _open_log(log, line)
    state = _Run(argv, log, log_fh, redactor, capture, stdin, on_line)
    start = time.monotonic()
    try:
        returncode, stdout = _supervise(state, cwd, full_env, tuple(bazel_roots))
    finally:
        if log_fh:
            log_fh.close()
    result = Result(
        argv=argv, returncode=returncode, stdout=stdout, tail=tuple(state.tail), seconds=time.monotonic() - start
    )
    if check and returncode != 0:
        raise StepFailed(
            f"{what or shlex.join(argv[:3])} failed (exit {returncode})",
            hint=redactor.text("\n".join(result.tail[-10:])),
            log=log,
        )
    return result


def _require(argv: tuple[str, ...], env: Mapping[str, str], redactor: Redactor, what: str) -> None:
    exe = argv[0]
    if os.sep not in exe and which(exe, env.get("PATH")) is None:
        raise ToolError(
            redactor.text(f"{exe} is not installed (needed to {what or 'run ' + shlex.join(argv[:2])})"),
            hint=f"install {exe} and make sure it is on PATH; `invoke doctor` lists every tool",
        )


def _open_log(log: Path | None, line: str) -> IO[bytes] | None:
    """The step's log, opened for appending, starting with the (masked) command line."""
    if log is None:
        return None
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = log.open("ab")
    fh.write((line + "\n").encode())
    fh.flush()
    return fh


def _supervise(state: _Run, cwd: Path | None, env: dict[str, str], roots: tuple[Path, ...]) -> tuple[int, str]:
    """Start the child and its watchdog, collect its output; stop everything on any interruption."""
    proc: subprocess.Popen[bytes] | None = None
    guard: procs.Watchdog | None = None
    try:
        proc = _start(state, cwd, env)
        guard = _watchdog(proc, roots)
        stdout = _collect(proc, state)
        if roots and procs.killed_by_signal(proc.returncode):
            for root in roots:
                stop_bazel_servers(root)
    except BaseException as exc:
        if proc is not None and proc.returncode is None:
            _abort(proc, roots)
        if isinstance(exc, (KeyboardInterrupt, Interrupted)):
            raise _interruption(exc, state) from None
        raise
    finally:
        if guard is not None and proc is not None and proc.returncode is None:
            guard.keep_armed()  # the stop itself was cut short: the watchdog acts when we exit
        elif guard is not None:
            guard.release()
    return proc.returncode, stdout


def _start(state: _Run, cwd: Path | None, env: dict[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            state.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE if state.stdin is not None else subprocess.DEVNULL,
            stdout=state.log_fh if state.direct else subprocess.PIPE,
            stderr=subprocess.PIPE if state.capture else subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise ToolError(f"could not start {state.argv[0]}: {exc.strerror}", log=state.log) from exc


def _watchdog(proc: subprocess.Popen[bytes], roots: tuple[Path, ...]) -> procs.Watchdog:
    try:
        return procs.Watchdog(proc.pid, roots)
    except OSError as exc:
        raise ToolError(f"could not start a watchdog process: {exc.strerror}") from exc


def _abort(proc: subprocess.Popen[bytes], roots: tuple[Path, ...]) -> None:
    """Stop the child's group and the bazel servers, whatever signals arrive meanwhile."""
    with procs.shielded(reraise=False):
        stop_process_group(proc)
        for root in roots:
            stop_bazel_servers(root)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _interruption(exc: BaseException, state: _Run) -> Interrupted:
    """The Interrupted to raise for a Ctrl-C (KeyboardInterrupt) or a signal's Interrupted."""
    cls = type(exc) if isinstance(exc, Interrupted) else Interrupted
    reason = getattr(cls, "reason", "interrupted")
    return cls(f"{reason} while running {state.argv[0]}", hint=RESUME, log=state.log)


def _collect(proc: subprocess.Popen[bytes], state: _Run) -> str:
    """Feed stdin, copy the output to the log and the tail, wait; the captured stdout."""
    if state.capture:
        out, err = proc.communicate(state.stdin.encode() if state.stdin is not None else None)
        err = state.redactor.feed(err) + state.redactor.flush()
        if state.log_fh:
            state.log_fh.write(err)
        state.tail.extend(err.decode(errors="replace").splitlines()[-TAIL_LINES:])
        return out.decode(errors="replace")
    if state.stdin is not None and proc.stdin:
        proc.stdin.write(state.stdin.encode())
        proc.stdin.close()
    if not state.direct:
        _pump(proc, state)
        proc.wait()
    elif state.on_line is not None and state.log is not None:
        _watch(proc, state.log, state.on_line)
    else:
        proc.wait()
    if state.direct and state.log is not None and state.log_fh is not None:
        state.log_fh.flush()
        state.tail.extend(_file_tail(state.log))
    return ""


def _watch(proc: subprocess.Popen[bytes], log: Path, on_line: Callable[[str], None]) -> None:
    """Wait for the child, showing the newest line of its log a few times a second."""
    while True:
        try:
            proc.wait(timeout=0.25)
            return
        except subprocess.TimeoutExpired:
            lines = _file_tail(log, 4096)
            if lines:
                on_line(lines[-1])


def _file_tail(path: Path, size: int = 16384) -> list[str]:
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - size))
        return fh.read(size).decode(errors="replace").splitlines()[-TAIL_LINES:]


def _pump(proc: subprocess.Popen[bytes], state: _Run) -> None:
    """Copy the child's output, masked (a secret split across reads included), to the log in large
    chunks; keep only its last bytes for the tail, and show the newest line a few times a second."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    last = b""
    shown = 0.0
    while True:
        chunk = os.read(fd, _CHUNK)
        done = not chunk
        chunk = state.redactor.flush() if done else state.redactor.feed(chunk)
        if state.log_fh is not None:
            state.log_fh.write(chunk)
        last = (last + chunk)[-16384:]
        if done:
            break
        if state.on_line is not None and time.monotonic() - shown > 0.2:
            shown = time.monotonic()
            lines = last.decode(errors="replace").splitlines()
            if lines:
                state.on_line(lines[-1])
    state.tail.extend(last.decode(errors="replace").splitlines()[-TAIL_LINES:])

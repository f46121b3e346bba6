"""The one subprocess entry point: argv lists, an env delta, a cwd, a log file, dry-run, exit codes.

Every external command istiobuild runs (git, make, bazel, go, docker CLI) goes through `run`.
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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO

from istiobuild.errors import Interrupted, StepFailed, ToolError

TAIL_LINES = 25
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str  # captured output (only with capture=True)
    tail: tuple[str, ...]  # last lines of combined output
    seconds: float


def clean_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without GIT_* variables, which would redirect git."""
    return {k: v for k, v in environ.items() if not k.startswith("GIT_")}


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def format_command(
    argv: Sequence[str], *, cwd: Path | None, env: Mapping[str, str], secrets: Iterable[str] = ()
) -> str:
    """`+ [cwd] K=V ... argv` with secrets masked, as echoed and logged."""
    secrets = tuple(secrets)
    delta = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    cmd = shlex.join(argv)
    where = f"[{cwd}] " if cwd else ""
    return redact(f"+ {where}{delta + ' ' if delta else ''}{cmd}", secrets)


def which(name: str, path: str | None = None) -> str | None:
    return shutil.which(name, path=path)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    log: Path | None = None,
    capture: bool = False,
    check: bool = True,
    dry_run: bool = False,
    secrets: Iterable[str] = (),
    echo: Callable[[str], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    stdin: str | None = None,
    what: str = "",
) -> Result:
    """Run argv (never through a shell) and return its Result.

    env is the delta on top of base_env (default: os.environ without GIT_*). Output goes to `log`
    (appended) when given; `capture` keeps stdout in the result (stderr then goes to the log or the
    tail). Ctrl-C interrupts the child's whole process group, then terminates, then kills it.
    """
    argv = tuple(argv)
    delta = dict(env or {})
    secret_list = tuple(s for s in secrets if s)
    line = format_command(argv, cwd=cwd, env=delta, secrets=secret_list)
    if echo is not None:
        echo(line)
    if dry_run:
        return Result(argv=argv, returncode=0, stdout="", tail=(), seconds=0.0)

    full_env = clean_environ(os.environ if base_env is None else base_env)
    full_env.update(delta)
    exe = argv[0]
    if os.sep not in exe and which(exe, full_env.get("PATH")) is None:
        raise ToolError(
            f"{exe} is not installed (needed to {what or 'run ' + shlex.join(argv[:2])})",
            hint=f"install {exe} and make sure it is on PATH; `invoke doctor` lists every tool",
        )
    log_fh: IO[bytes] | None = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log_fh = log.open("ab")
        log_fh.write((redact(line, secret_list) + "\n").encode())
        log_fh.flush()
    start = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    # Without a live view or secrets to mask, the child writes straight into the log: no copying
    # through Python at all, however many gigabytes a `-s --sandbox_debug` build prints.
    direct = log_fh is not None and not capture and not secret_list
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=log_fh if direct else subprocess.PIPE,
            stderr=subprocess.PIPE if capture else subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        if log_fh:
            log_fh.close()
        raise ToolError(f"could not start {exe}: {exc.strerror}", log=log) from exc
    try:
        if capture:
            out, err = proc.communicate(stdin.encode() if stdin is not None else None)
            stdout = out.decode(errors="replace")
            errtext = err.decode(errors="replace")
            if log_fh:
                log_fh.write(err)
            tail.extend(redact(errtext, secret_list).splitlines()[-TAIL_LINES:])
        else:
            stdout = ""
            if stdin is not None and proc.stdin:
                proc.stdin.write(stdin.encode())
                proc.stdin.close()
            if not direct:
                _pump(proc, log_fh, tail, secret_list, on_line)
                proc.wait()
            elif on_line is not None and log is not None:
                _watch(proc, log, on_line)
            else:
                proc.wait()
            if direct and log is not None:
                log_fh.flush()  # type: ignore[union-attr]
                tail.extend(_file_tail(log))
    except KeyboardInterrupt:
        stop_process_group(proc)
        raise Interrupted(
            f"interrupted while running {argv[0]}",
            hint="run the same command again to resume",
            log=log,
        ) from None
    finally:
        if log_fh:
            log_fh.close()
    result = Result(
        argv=argv,
        returncode=proc.returncode,
        stdout=stdout,
        tail=tuple(tail),
        seconds=time.monotonic() - start,
    )
    if check and proc.returncode != 0:
        shown = "\n".join(result.tail[-10:])
        raise StepFailed(
            f"{what or shlex.join(argv[:3])} failed (exit {proc.returncode})",
            hint=redact(shown, secret_list),
            log=log,
        )
    return result


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


def _pump(
    proc: subprocess.Popen[bytes],
    log_fh: IO[bytes] | None,
    tail: collections.deque[str],
    secrets: tuple[str, ...],
    on_line: Callable[[str], None] | None,
) -> None:
    """Copy the child's output to the log in large chunks; keep only its last bytes for the tail,
    and show the newest line at most a few times a second."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    last = b""
    shown = 0.0
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        if log_fh is not None:
            log_fh.write(chunk if not secrets else redact(chunk.decode(errors="replace"), secrets).encode())
        last = (last + chunk)[-16384:]
        if on_line is not None:
            now = time.monotonic()
            if now - shown > 0.2:
                shown = now
                lines = last.decode(errors="replace").splitlines()
                if lines:
                    on_line(redact(lines[-1], secrets))
    text = redact(last.decode(errors="replace"), secrets)
    tail.extend(text.splitlines()[-TAIL_LINES:])


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGINT the child's process group, then SIGTERM, then SIGKILL."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue

"""Processes that must not outlive istiobuild: process groups, bazel servers, and a watchdog per child.

Every child runs in its own session (so its process group is its pid). Stopping it signals the whole
group: SIGINT, then SIGTERM, then SIGKILL, while further Ctrl-C / SIGTERM / SIGHUP are recorded, not
acted on, so a second Ctrl-C cannot abandon the children half-stopped.

The bazel server daemonizes into a session of its own and survives a killpg; its pid is in
<output_user_root>/<hash>/server/server.pid.txt. It is killed only when /proc/<pid>/cmdline names
the root, so a reused pid is never hit.

A `Watchdog` covers the one case no handler can: istiobuild itself killed with SIGKILL (or crashing).
It is a tiny `sh` in a session of its own, blocked reading a pipe whose write end only istiobuild
holds (close-on-exec, so no child inherits it). A line means "done, exit quietly"; end-of-file means
istiobuild is gone, and the sh execs this very file as a script (`python -I procs.py reap PGID ROOT...`)
to kill the child's group and the bazel servers. This module therefore imports the standard library only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

GRACE = 5.0  # seconds between SIGINT, SIGTERM and SIGKILL
STRAGGLER_GRACE = 1.0  # once the group leader is gone, how long its leftovers get per signal
_SHIELDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_WATCHDOG_SH = 'read -r line && exit 0; exec "$@"'


# ---------------------------------------------------------------------------------------------
# signals


@contextlib.contextmanager
def shielded(*, reraise: bool = True) -> Iterator[list[int]]:
    """While inside, SIGINT/SIGTERM/SIGHUP are recorded (in the yielded list) instead of acted on.

    On leaving, the first recorded signal is re-delivered to the handler that was in place (a
    KeyboardInterrupt, an Interrupted, an outer shield's record, or the default action), unless
    `reraise` is false: then they are swallowed (the caller raises its own interruption anyway).
    Only the main thread receives Python signal handlers; elsewhere this does nothing.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def record(signum: int, frame: Any) -> None:
        received.append(signum)

    previous: dict[int, Any] = {}
    try:
        for sig in _SHIELDED:
            handler = signal.getsignal(sig)
            if handler is not None and handler != signal.SIG_IGN:
                previous[sig] = handler
                signal.signal(sig, record)
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if reraise and received:
            _redeliver(received[0], previous[received[0]])


def _redeliver(signum: int, handler: Any) -> None:
    if callable(handler):
        handler(signum, None)
    else:  # SIG_DFL: die (or whatever the default is) as if the signal had just arrived
        os.kill(os.getpid(), signum)


# ---------------------------------------------------------------------------------------------
# process groups


def _state(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[2])


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _state(int(entry.name))
            if found is not None and found[1] == pgid and found[0] not in "ZX":
                members.append(int(entry.name))
    return members


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return bool(group_members(pgid))


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_group(proc: subprocess.Popen[bytes], grace: float) -> bool:
    """Wait until the leader and every other member of its group are gone; False after `grace`.

    Once the leader has exited, its leftovers (which ignored the signal) get STRAGGLER_GRACE at most.
    """
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
            continue
        if not group_alive(proc.pid):
            return True
        deadline = min(deadline, time.monotonic() + STRAGGLER_GRACE)
        time.sleep(0.02)
    return proc.poll() is not None and not group_alive(proc.pid)


def stop_process_group(proc: subprocess.Popen[bytes], grace: float = GRACE) -> None:
    """SIGINT the child's process group, then SIGTERM, then SIGKILL, until no member is left.

    A Ctrl-C / SIGTERM / SIGHUP during the stop does not cut it short: it is acted on once the group
    is gone (run() swallows it instead, as it raises its own Interrupted).
    """
    with shielded():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            _signal_group(proc.pid, sig)
            if _wait_group(proc, grace):
                return


def killed_by_signal(returncode: int) -> bool:
    """The child died of a signal (or a shell reports one of its children did: 128+N)."""
    fatal = {signal.SIGHUP, signal.SIGINT, signal.SIGKILL, signal.SIGTERM}
    return returncode < 0 or returncode - 128 in fatal


# ---------------------------------------------------------------------------------------------
# bazel servers


def bazel_server_pids(root: Path | str) -> list[int]:
    """Pids of running bazel servers under an output user root whose command line names that root."""
    root = Path(root)
    names = {os.fsencode(root), os.fsencode(root.resolve())}
    found = []
    for pidfile in sorted(root.glob("*/server/server.pid.txt")):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if pid > 1 and pid != os.getpid() and any(name in cmdline for name in names):
            found.append(pid)
    return found


def _kill_servers(roots: Iterable[Path | str], sig: int) -> list[int]:
    """Signal every verified server (the cmdline is checked right before each signal)."""
    hit = []
    for root in roots:
        for pid in bazel_server_pids(root):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                hit.append(pid)
    return hit


def _running(pid: int) -> bool:
    found = _state(pid)
    return found is not None and found[0] not in "ZX"


def stop_bazel_servers(root: Path, grace: float = GRACE) -> list[int]:
    """SIGTERM the bazel servers under an output user root, SIGKILL those left after `grace`.

    Returns the pids that were signalled. A pid file naming a process whose command line does not
    mention the root (a stale file, a reused pid) is left alone.
    """
    with shielded():
        pids = _kill_servers([root], signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(_running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if any(_running(p) for p in pids):
            _kill_servers([root], signal.SIGKILL)
    return pids


# ---------------------------------------------------------------------------------------------
# the watchdog


class Watchdog:
    """Kills a child's process group (and the bazel servers under `roots`) if istiobuild dies first."""

    def __init__(self, pgid: int, roots: Sequence[Path] = ()) -> None:
        argv = ["/bin/sh", "-c", _WATCHDOG_SH, "istiobuild-watchdog"]
        argv += [sys.executable or "python3", "-I", str(Path(__file__).resolve()), "reap", str(pgid)]
        argv += [str(r) for r in roots]
        # Own session: a Ctrl-C at the terminal or a killpg of istiobuild's group does not reach it.
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env={"PATH": os.defpath},
            start_new_session=True,
        )

    def release(self) -> None:
        """The child is done (or already stopped): let the watchdog exit without doing anything.

        It is not waited for here (that would cost about a millisecond per command): released
        watchdogs are reaped by later releases, and at exit.
        """
        proc, self._proc = self._proc, None
        if proc is None or proc.stdin is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.write(b"done\n")
            proc.stdin.flush()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        with _released_lock:
            _released.append(proc)
            _released[:] = [p for p in _released if p.poll() is None]

    def keep_armed(self) -> None:
        """The child could not be stopped: leave the watchdog waiting, to act when istiobuild exits."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with _released_lock:
                _armed.append(proc)  # holds the pipe's write end open until istiobuild is gone


_armed: list[subprocess.Popen[bytes]] = []
_released: list[subprocess.Popen[bytes]] = []
_released_lock = threading.Lock()


@atexit.register
def _reap_released() -> None:
    with _released_lock:
        for proc in _released:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        _released.clear()


def _reap(pgid: int, roots: list[str], grace: float = GRACE) -> None:
    """istiobuild is gone: SIGTERM the group and the servers, SIGKILL whatever is left after `grace`."""
    _signal_group(pgid, signal.SIGTERM)
    servers = _kill_servers(roots, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not group_alive(pgid) and not any(_running(p) for p in servers):
            return
        time.sleep(0.1)
    _signal_group(pgid, signal.SIGKILL)
    _kill_servers(roots, signal.SIGKILL)


def main(argv: list[str]) -> int:
    """`procs.py reap PGID [ROOT...]`, run by a watchdog whose istiobuild died."""
    if len(argv) < 2 or argv[0] != "reap":
        print("usage: procs.py reap PGID [OUTPUT_USER_ROOT...]", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _reap(int(argv[1]), argv[2:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

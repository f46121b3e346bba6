"""Children never outlive istiobuild: SIGTERM, SIGHUP, Ctrl-C twice, kill -9, bazel servers. Real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import until
from istiobuild.procs import Watchdog, bazel_server_pids, stop_bazel_servers
from istiobuild.run import run

pytestmark = pytest.mark.slow

SRC = Path(__file__).resolve().parent.parent / "src"

# The "istiobuild" under test: runs one command through run() inside signals_as_interrupts(),
# exits with the error's exit code like the CLI does.
PARENT = """\
import sys
from pathlib import Path
from istiobuild.errors import IstiobuildError
from istiobuild.run import run, signals_as_interrupts

mode, pidfile, *roots = sys.argv[1:]
script = f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; "
script += "trap '' INT; " if mode == "ignore-int" else ""
script += "sleep 300 & sleep 300"
try:
    with signals_as_interrupts():
        run(["sh", "-c", script], bazel_roots=[Path(r) for r in roots])
except IstiobuildError as exc:
    print(exc.render(), file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, process group, comm) of a live process; None when gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return None if fields[0] in "ZX" else (fields[0], int(fields[2]), comm)


def _group(pgid: int) -> list[tuple[int, str]]:
    """(pid, comm) of the live members of a process group."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := _stat(int(entry))) is not None and found[1] == pgid:
            members.append((int(entry), found[2]))
    return members


def _watchdog_for(pgid: int) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                args = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"istiobuild-watchdog" in args and b"reap" in args and str(pgid).encode() in args:
                return True
    return False


class Parent:
    """A running parent whose child group (sh + two sleeps) and watchdog are up."""

    def __init__(self, tmp: Path, *roots: Path, mode: str = "") -> None:
        script = tmp / "parent.py"
        script.write_text(PARENT)
        pidfile = tmp / "child.pid"
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        argv = [sys.executable, str(script), mode, str(pidfile), *map(str, roots)]
        self.proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        assert until(pidfile.exists), "the child never started"
        self.pgid = int(pidfile.read_text())
        sleeps = lambda: sum(comm == "sleep" for _, comm in _group(self.pgid)) == 2  # noqa: E731
        assert until(sleeps), f"the sleeps never started: {_group(self.pgid)}"
        assert until(lambda: _watchdog_for(self.pgid)), "no watchdog for the child"

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=60)
        return self.proc.returncode, err

    def group_gone(self) -> bool:
        return until(lambda: not _group(self.pgid))


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts itself (fake bazel servers); killed at the end whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _server(root: Path, name: str, spawned: list[subprocess.Popen[bytes]], *, mention_root: bool = True) -> int:
    """A fake bazel server: own session, pid in <root>/<name>/server/server.pid.txt, root in its cmdline."""
    args = [f"--output_user_root={root}"] if mention_root else ["--unrelated"]
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", *args], start_new_session=True)
    spawned.append(proc)
    pidfile = root / name / "server" / "server.pid.txt"
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(f"{proc.pid}\n")
    assert until(lambda: b"time.sleep(300)" in Path(f"/proc/{proc.pid}/cmdline").read_bytes())  # exec'd
    return proc.pid


def _gone(proc: subprocess.Popen[bytes]) -> bool:
    return until(lambda: proc.poll() is not None)


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGHUP, 129, "SIGHUP")])
def test_sigterm_and_sighup_stop_the_tree_and_the_bazel_servers(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]], sig: int, code: int, word: str
) -> None:
    root = tmp_path / "bazel-root"
    _server(root, "abc", spawned)
    parent = Parent(tmp_path, root)
    parent.signal(sig)
    returncode, err = parent.finish()
    assert returncode == code, err
    assert word in err and "run the same command again to resume" in err and "Traceback" not in err
    assert parent.group_gone(), _group(parent.pgid)
    assert _gone(spawned[0])


def test_kill_9_of_istiobuild_stops_the_tree_and_only_its_bazel_servers(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    root = tmp_path / "bazel-root"
    _server(root, "abc", spawned)
    _server(root, "def", spawned, mention_root=False)  # a stale pid file naming some other process
    parent = Parent(tmp_path, root)
    parent.signal(signal.SIGKILL)
    returncode, _ = parent.finish()
    assert returncode == -signal.SIGKILL
    assert parent.group_gone(), _group(parent.pgid)
    assert _gone(spawned[0])
    time.sleep(0.5)
    assert spawned[1].poll() is None  # never touched


def test_two_quick_ctrl_cs_still_stop_everything(tmp_path: Path) -> None:
    """The child ignores SIGINT, so the stop has to wait and escalate; a second Ctrl-C must not abandon it."""
    parent = Parent(tmp_path, mode="ignore-int")
    parent.signal(signal.SIGINT)
    time.sleep(0.3)
    parent.signal(signal.SIGINT)
    returncode, err = parent.finish()
    assert returncode == 130, err  # our Interrupted, not a KeyboardInterrupt traceback (-2)
    assert "interrupted while running sh" in err and "Traceback" not in err
    assert not _group(parent.pgid)  # gone before the parent exited, not reaped later by the watchdog


def test_stop_bazel_servers_checks_the_command_line(tmp_path: Path, spawned: list[subprocess.Popen[bytes]]) -> None:
    root = tmp_path / "bazel-root"
    server = _server(root, "abc", spawned)
    _server(root, "def", spawned, mention_root=False)
    (root / "stale" / "server").mkdir(parents=True)
    (root / "stale" / "server" / "server.pid.txt").write_text("999999999\n")
    (root / "junk" / "server").mkdir(parents=True)
    (root / "junk" / "server" / "server.pid.txt").write_text("not a pid\n")
    assert bazel_server_pids(root) == [server]
    assert stop_bazel_servers(root) == [server]
    assert _gone(spawned[0])
    assert spawned[1].poll() is None
    assert stop_bazel_servers(root) == []
    assert stop_bazel_servers(tmp_path / "no-such-root") == []


def test_the_watchdog_pipe_is_not_inherited_and_release_is_quiet(tmp_path: Path) -> None:
    """A released watchdog exits without touching the group; its pipe never leaks into a child."""
    pidfile = tmp_path / "bg.pid"
    run(["sh", "-c", f"sleep 300 >/dev/null 2>&1 & echo $! > {pidfile}"])
    leftover = int(pidfile.read_text())
    try:
        dog = Watchdog(leftover)
        assert dog._proc is not None and dog._proc.stdin is not None
        assert not os.get_inheritable(dog._proc.stdin.fileno())
        fds = run(["ls", "/proc/self/fd"], capture=True).stdout.split()
        assert sorted(fds) == ["0", "1", "2", "3"]  # stdin, stdout, stderr, and ls's own directory
        watchdog = dog._proc
        dog.release()
        assert watchdog.wait(timeout=10) == 0
        time.sleep(0.3)
        assert _stat(leftover) is not None  # the released watchdog left the (still running) group alone
    finally:
        os.kill(leftover, signal.SIGKILL)

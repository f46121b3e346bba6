"""The one subprocess entry point, with real processes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from istiobuild.errors import Interrupted, StepFailed, ToolError
from istiobuild.run import format_command, run


def test_streams_to_log_and_keeps_a_tail(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "step.log"
    script = "for i in range(1000): print('line', i)"
    result = run([sys.executable, "-c", script], log=log, env={"X": "1"}, cwd=tmp_path)
    assert result.returncode == 0
    text = log.read_text()
    assert text.startswith(f"+ [{tmp_path}] X=1 ")
    assert "line 0\n" in text and "line 999\n" in text
    assert result.tail[-1] == "line 999" and len(result.tail) <= 25


def test_failure_names_the_log_and_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "fail.log"
    with pytest.raises(StepFailed) as err:
        run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log=log, what="the thing")
    assert err.value.message == "the thing failed (exit 3)"
    assert "boom" in err.value.hint and err.value.log == log
    assert "full log: " in err.value.render()


def test_capture_and_no_check() -> None:
    result = run(
        [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(1)"],
        capture=True,
        check=False,
    )
    assert (result.stdout, result.returncode, result.tail) == ("out\n", 1, ("err",))


def test_env_is_a_delta_without_git_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_DIR", "/nonexistent")
    monkeypatch.setenv("KEEP_ME", "yes")
    code = "import os; print(os.environ.get('GIT_DIR'), os.environ['KEEP_ME'], os.environ['NEW'])"
    assert run([sys.executable, "-c", code], env={"NEW": "n"}, capture=True).stdout == "None yes n\n"


def test_argv_is_never_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = run(["echo", f"; touch {marker}", "$(id)"], capture=True)
    assert result.stdout == f"; touch {marker} $(id)\n" and not marker.exists()


def test_missing_tool_is_a_clear_error() -> None:
    with pytest.raises(ToolError, match="no-such-tool-xyz is not installed"):
        run(["no-such-tool-xyz", "--version"])


def test_secrets_never_reach_echo_or_log(tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    secret = "Authorization: Bearer s3cr3t"
    run(
        [sys.executable, "-c", "import sys; print(sys.argv[1])", f"--remote_header={secret}"],
        log=log,
        secrets=[secret],
    )
    assert "s3cr3t" not in log.read_text() and log.read_text().startswith("+ ")
    assert "***" in log.read_text()
    assert "s3cr3t" not in format_command(["x", secret], cwd=None, env={}, secrets=[secret])


SPLIT = "Authorization: Bearer sp1it-s3cr3t"


@pytest.mark.parametrize("offset", [(1 << 20) - 7, (1 << 20) - 1, 1 << 16])
def test_a_secret_across_a_read_boundary_never_reaches_the_log(tmp_path: Path, offset: int) -> None:
    """The child writes part of the secret, flushes, waits, then the rest: the reads split it."""
    log = tmp_path / "b.log"
    code = (
        "import sys, time; out = sys.stdout.buffer; s = sys.argv[1].encode(); n = int(sys.argv[2]);"
        "out.write(b'a' * n + s[:9]); out.flush(); time.sleep(0.2);"
        "out.write(s[9:] + b'\\n'); out.flush()"
    )
    seen: list[str] = []
    result = run([sys.executable, "-c", code, SPLIT, str(offset)], log=log, secrets=[SPLIT], on_line=seen.append)
    text = log.read_text()
    body = text.split("\n", 1)[1]
    assert body == "a" * offset + "***\n"
    assert "sp1it" not in text
    assert "Bearer" not in body
    assert result.tail[-1].endswith("aaa***")
    assert not any("sp1it" in line for line in seen)


def test_a_secret_in_many_small_writes_never_reaches_the_log(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    code = (
        "import os, sys, time; s = sys.argv[1].encode();"
        "[(os.write(1, bytes([b])), time.sleep(0.002)) for b in (b'x' * 3 + s) * 4];"
        "os.write(1, b'\\n' + (b'y' * 4093 + s) * 300)"
    )
    run([sys.executable, "-c", code, SPLIT], log=log, secrets=[SPLIT])
    body = log.read_text().split("\n", 1)[1]
    assert body == "xxx***" * 4 + "\n" + ("y" * 4093 + "***") * 300
    assert "sp1it" not in log.read_text()


def test_captured_stderr_is_masked_in_log_and_tail(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    code = "import sys; print(sys.argv[1]); print('err', sys.argv[1], file=sys.stderr)"
    result = run([sys.executable, "-c", code, "tok3n"], capture=True, log=log, secrets=["tok3n"])
    assert result.stdout == "tok3n\n"  # captured output is the caller's to parse
    assert "tok3n" not in log.read_text() and result.tail == ("err ***",)


def test_ctrl_c_stops_the_whole_process_tree(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # a parent that starts a grandchild and ignores SIGINT, so escalation to SIGTERM is needed
    code = (
        "import os, signal, subprocess, sys, time;"
        "signal.signal(signal.SIGINT, signal.SIG_IGN);"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid));"
        "time.sleep(60)"
    )
    main = threading.main_thread()
    assert main is threading.current_thread()

    def interrupt() -> None:
        for _ in range(100):
            if pidfile.exists() and pidfile.read_text():
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(Interrupted) as err:
        run([sys.executable, "-c", code], log=tmp_path / "i.log")
    assert err.value.exit_code == 130
    grandchild = int(pidfile.read_text())
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie waiting for init to reap it."""
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        time.sleep(0.1)
    return True

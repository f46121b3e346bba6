"""Running the commands as users do, for the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def invoke(
    *args: str, cwd: Path = REPO, env: Mapping[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    """`invoke ARGS` from this checkout, without the caller's ISTIOBUILD_* settings (plus `env`)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
        cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def one_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Non-zero exit, no traceback, exactly one `error:` line; returns that line."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def execute(plan, name: str, settings, rel, **options):  # type: ignore[no-untyped-def]
    """Run one stage of a plan through the executor, as the pipeline does (without stamps or preflight)."""
    from istiobuild.console import Console
    from istiobuild.executor import Executor

    ex = Executor(settings=settings, release=rel, layout=plan.layout, console=Console(tty=False), **options)
    ex.stage = plan.stage(name)
    for step in ex.stage.steps:
        ex.step(step)
    return ex


def until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `condition` every 50 ms until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def port_open(proc: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> bool:
    """True once something accepts connections on loopback `port`; False when `proc` exited or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.05)
    return False


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL, to the process group of `proc` (started with start_new_session=True)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue


def keypair(directory: Path, name: str, password: Path | None = None) -> tuple[Path, Path]:
    """An ed25519 key pair made by `openssl genpkey` (mode 0600; encrypted with the password file's first line
    when given): (private PKCS#8 PEM, public SPKI PEM)."""
    key, pub = directory / f"{name}.pem", directory / f"{name}.pub"
    encrypt = ["-aes-256-cbc", "-pass", f"file:{password}"] if password else []
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key), *encrypt], check=True,
                   capture_output=True)  # fmt: skip
    key.chmod(0o600)
    passin = ["-passin", f"file:{password}"] if password else []
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub), *passin], check=True,
                   capture_output=True)  # fmt: skip
    return key, pub


def static_aarch64_binary(directory: Path, name: str = "ztunnel") -> tuple[Path, str]:
    """A static aarch64 ELF standing in for a ztunnel built for the target, and its sha256."""
    import hashlib

    (directory / "z.c").write_text("int main(void){return 0;}\n")
    binary = directory / name
    subprocess.run(["aarch64-linux-gnu-gcc", "-static", "-o", str(binary), str(directory / "z.c")], check=True)
    return binary, hashlib.sha256(binary.read_bytes()).hexdigest()

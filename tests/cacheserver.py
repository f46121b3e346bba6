"""A bazel HTTP remote cache for tests: Debian's nginx (nginx-light) serving WebDAV PUT/GET from a tmp dir.

Every request lacking the secret header gets 401 (and, with basic auth, every request lacking the
credentials too), so a build that forgets or leaks the secret shows up. Usage:

    with cache_server(tmp_path) as cache:          # or the `remote_cache` fixture
        bazel ... --remote_cache={cache.url} --remote_header={cache.header_name}={cache.header_value}
        # cache.access_log lists every request (status codes), cache.root holds ac/ and cas/

With basic_auth=("user", "password") the credentials are part of cache.url (http://user:pw@127.0.0.1:PORT).
nginx runs in the foreground in its own session and is stopped (its whole group) on exit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

HEADER_NAME = "X-Cache-Token"

_CONF = """\
{user}
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        if ($http_x_cache_token != "{token}") {{ return 401; }}
        location / {{
            root {root};
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
            {auth}
        }}
    }}
}}
"""


class CacheServer(NamedTuple):
    url: str  # http://127.0.0.1:PORT (with basic auth: http://user:password@127.0.0.1:PORT)
    header_name: str  # the header every request needs ...
    header_value: str  # ... with this (random) value
    access_log: Path
    root: Path  # where PUT stores the blobs (ac/..., cas/...)


def nginx_binary() -> str | None:
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _write_conf(tmp: Path, port: int, token: str, basic_auth: tuple[str, str] | None) -> Path:
    auth = ""
    if basic_auth is not None:
        users = tmp / "htpasswd"
        users.write_text(f"{basic_auth[0]}:{{PLAIN}}{basic_auth[1]}\n")
        auth = f'auth_basic "cache"; auth_basic_user_file {users};'
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(_CONF.format(user=user, tmp=tmp, port=port, token=token, root=tmp / "root", auth=auth))
    return conf


def _ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> bool:
    """True once nginx accepts connections; False when it exited (port taken) or timed out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
        time.sleep(0.05)
    return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def cache_server(tmp_dir: Path, *, basic_auth: tuple[str, str] | None = None) -> Iterator[CacheServer]:
    """Start nginx as a bazel remote cache under tmp_dir; stop it on exit. Skips when nginx is missing."""
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (ci/setup.sh installs nginx-light)")
    tmp = tmp_dir.resolve()
    (tmp / "root").mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    for _attempt in range(5):  # another process may grab the free port before nginx binds it
        port = _free_port()
        conf = _write_conf(tmp, port, token, basic_auth)
        with (tmp / "nginx.stderr").open("ab") as stderr:
            proc = subprocess.Popen(
                [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        if _ready(proc, port):
            break
        _stop(proc)
    else:
        log = (tmp / "error.log").read_text(errors="replace") if (tmp / "error.log").exists() else ""
        raise RuntimeError(f"nginx did not start:\n{log[-2000:]}")
    userinfo = f"{basic_auth[0]}:{basic_auth[1]}@" if basic_auth else ""
    try:
        yield CacheServer(f"http://{userinfo}127.0.0.1:{port}", HEADER_NAME, token, tmp / "access.log", tmp / "root")
    finally:
        _stop(proc)


@pytest.fixture
def remote_cache(tmp_path: Path) -> Iterator[CacheServer]:
    """A running cache (header required, no basic auth); import this name into a test module to use it."""
    with cache_server(tmp_path / "cache") as cache:
        yield cache

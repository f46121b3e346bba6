"""A bazel HTTP remote cache for tests: Debian's nginx (nginx-light) serving WebDAV PUT/GET from a tmp dir.

Every request lacking the secret header gets 401 (and, with basic auth, every request lacking the
credentials too), so a build that forgets or leaks the secret shows up. Usage:

    with cache_server(tmp_path) as cache:          # or the `remote_cache` fixture
        bazel ... --remote_cache={cache.url} --remote_header={cache.header_name}={cache.header_value}
        # cache.access_log lists every request (status codes), cache.root holds ac/ and cas/

With basic_auth=("user", "password") the credentials are part of cache.url (http://user:pw@127.0.0.1:PORT).
With root=DIR several servers (say, one with basic auth and one without) serve the same blobs.
`requests_in(cache.access_log)` lists what reached nginx: (method, path, status).
nginx runs in the foreground in its own session and is stopped (its whole group) on exit.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import port_open, stop_group

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


def _write_conf(tmp: Path, port: int, token: str, basic_auth: tuple[str, str] | None, root: Path) -> Path:
    auth = ""
    if basic_auth is not None:
        users = tmp / "htpasswd"
        users.write_text(f"{basic_auth[0]}:{{PLAIN}}{basic_auth[1]}\n")
        auth = f'auth_basic "cache"; auth_basic_user_file {users};'
    conf = tmp / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(_CONF.format(user=user, tmp=tmp, port=port, token=token, root=root, auth=auth))
    return conf


@contextlib.contextmanager
def cache_server(
    tmp_dir: Path, *, basic_auth: tuple[str, str] | None = None, root: Path | None = None
) -> Iterator[CacheServer]:
    """Start nginx as a bazel remote cache under tmp_dir (blobs in `root`, default tmp_dir/root); stop it on
    exit. Skips when nginx is missing."""
    nginx = nginx_binary()
    if nginx is None:
        pytest.skip("nginx is not installed (ci/setup.sh installs nginx-light)")
    tmp = tmp_dir.resolve()
    blobs = (root or tmp / "root").resolve()
    for path in (tmp, blobs):
        path.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    for _attempt in range(5):  # another process may grab the free port before nginx binds it
        port = _free_port()
        conf = _write_conf(tmp, port, token, basic_auth, blobs)
        with (tmp / "nginx.stderr").open("ab") as stderr:
            proc = subprocess.Popen(
                [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        if port_open(proc, port):
            break
        stop_group(proc)
    else:
        log = (tmp / "error.log").read_text(errors="replace") if (tmp / "error.log").exists() else ""
        raise RuntimeError(f"nginx did not start:\n{log[-2000:]}")
    userinfo = f"{basic_auth[0]}:{basic_auth[1]}@" if basic_auth else ""
    try:
        yield CacheServer(f"http://{userinfo}127.0.0.1:{port}", HEADER_NAME, token, tmp / "access.log", blobs)
    finally:
        stop_group(proc)


_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP/[0-9.]+" ([0-9]{3}) ')


def requests_in(access_log: Path, offset: int = 0) -> list[tuple[str, str, int]]:
    """(method, path, status) of each request in nginx's access log, from byte `offset` on."""
    if not access_log.exists():
        return []
    with access_log.open("rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    return [(m[1], m[2], int(m[3])) for m in _REQUEST.finditer(text)]


@pytest.fixture
def remote_cache(tmp_path: Path) -> Iterator[CacheServer]:
    """A running cache (header required, no basic auth); import this name into a test module to use it."""
    with cache_server(tmp_path / "cache") as cache:
        yield cache

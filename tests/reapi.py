"""A bazel gRPC (REAPI) remote cache for tests: BuildGrid (PyPI `buildgrid`, its `bgd` CLI) on loopback.

One instance (name "") serving ContentAddressableStorage, ByteStream and ActionCache from memory (an LRU
store, nothing on disk), without authorization; BuildGrid answers the Capabilities call bazel makes at
start by itself. Usage:

    with reapi_server(tmp_path) as server:       # or the `reapi_cache` fixture
        bazel ... --remote_cache={server.url}       # grpc://127.0.0.1:PORT

`bgd server start` runs in its own session and is stopped (its whole group) on exit; its output is in
server.log. A missing `bgd` fails the test (ci/setup.sh installs the test extras, buildgrid included).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from helpers import port_open, stop_group

START_TIMEOUT = 120.0  # seconds: bgd imports a lot; on a busy 2-core runner it can take half a minute

CONFIG = """\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  method: none
monitoring:
  enabled: false
instances:
  - name: ""
    storages:
      - !lru-storage &cas
        size: 256MB
    caches:
      - !lru-action-cache &ac
        storage: *cas
        max-cached-refs: 10000
        allow-updates: true
        cache-failed-actions: false
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
thread-pool-size: 10
"""


class ReapiServer(NamedTuple):
    url: str  # grpc://127.0.0.1:PORT
    log: Path  # bgd's output


def bgd_binary() -> str:
    """`bgd` next to this Python (a virtualenv's bin/) or on PATH; fails the test when there is none."""
    found = shutil.which("bgd", path=str(Path(sys.executable).parent)) or shutil.which("bgd")
    if found is None:
        pytest.fail("bgd (BuildGrid) is not installed: pip install buildgrid (ci/setup.sh installs it)", pytrace=False)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def reapi_server(tmp_dir: Path) -> Iterator[ReapiServer]:
    """Start BuildGrid under tmp_dir (its config and log); stop it on exit."""
    bgd = bgd_binary()
    tmp = tmp_dir.resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "bgd.log"
    for _attempt in range(3):  # another process may grab the free port before BuildGrid binds it
        port = _free_port()
        config = tmp / "buildgrid.yml"
        config.write_text(CONFIG.format(port=port))
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [bgd, "server", "start", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                start_new_session=True,
            )
        if port_open(proc, port, START_TIMEOUT):
            break
        stop_group(proc)
    else:
        raise RuntimeError(f"BuildGrid did not start:\n{log.read_text(errors='replace')[-3000:]}")
    try:
        yield ReapiServer(f"grpc://127.0.0.1:{port}", log)
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def reapi_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReapiServer]:
    """A running BuildGrid cache for the module; import this name into a test module to use it."""
    with reapi_server(tmp_path_factory.mktemp("reapi")) as server:
        yield server

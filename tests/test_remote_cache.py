"""The remote cache against real servers on loopback: nginx with WebDAV (bazel's HTTP cache, tests/cacheserver.py)
and BuildGrid (REAPI, bazel's gRPC cache, tests/reapi.py); the remote settings in the plan; bad values.

A cache is proven the way a second CI runner uses it: the example is built in one workdir, which uploads; then
in a second workdir, its own bazel output base (under the workdir) empty and the cache directory (bazel's
--disk_cache, the toolchain links ...) moved away, so the disk cache is empty too: every action must be a
remote cache hit, and envoy comes out byte-identical. The cache directory keeps its path (ISTIOBUILD_CACHE_DIR,
per test): bazel's action keys hold PATH, CC, CXX, AR and NM, which name the toolchain links under it
(docs/remote-cache.md); test_upload_off shows that another path misses.

A cache that is down or refuses: bazel 4.2.3 builds on without an HTTP cache, and without a gRPC cache when
given --remote_local_fallback, which istiobuild passes (bazel would stop at start): one warning line from
istiobuild. An unreachable gRPC executor: one error line, before bazel starts.

Builds: one full build (it uploads; its logs, records and plan are searched for the secrets), then proxy-stage
builds (`--to proxy`). Every bazel server started here is stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cacheserver import HEADER_NAME, CacheServer, cache_server, requests_in
from helpers import invoke, one_error
from istiobuild import procs, remotecache
from reapi import ReapiServer, reapi_cache

__all__ = ["reapi_cache"]  # the fixture, used below

ARGS = ("--release", "example", "--arch", "x86_64")
HITS = re.compile(r"remote cache: (\d+) of (\d+) actions hit")
WARNING = "warning: bazel could not use the remote cache"
RBE = ("--remote-executor", "grpc://rbe.example.com:8980")


# ---------------------------------------------------------------------------------------------
# helpers


@dataclasses.dataclass(frozen=True)
class Built:
    work: Path
    cache: Path
    proc: subprocess.CompletedProcess[str]
    requests: list[tuple[str, str, int]]  # (method, path, status) that reached nginx during the build

    @property
    def hits(self) -> tuple[int, int]:
        """(hits, actions) from the proxy stage's line."""
        found = HITS.findall(self.proc.stderr)
        assert len(found) == 1, self.proc.stderr
        return int(found[0][0]), int(found[0][1])

    @property
    def warnings(self) -> list[str]:
        return [line for line in self.proc.stderr.splitlines() if WARNING in line]

    @property
    def envoy_sha256(self) -> str:
        return (self.work / "example-x86_64" / "artifacts" / "envoy.sha256").read_text().split()[0]


def stop_bazel(work: Path, cache: Path) -> None:
    """The bazel servers of a build: the output root is under the workdir (older layouts: the cache dir)."""
    for root in (work / "cache" / "bazel-root", cache / "bazel-root"):
        procs.stop_bazel_servers(root)


def empty_cache(cache: Path) -> None:
    """Move the cache directory away (bazel's disk cache with it); the next build recreates it at the same path."""
    if cache.exists():
        cache.rename(cache.with_name(f"{cache.name}.old-{uuid.uuid4().hex[:8]}"))


def build(
    work: Path, cache: Path, *extra: str, env: Mapping[str, str], access_log: Path | None = None, ok: bool = True
) -> Built:
    """`invoke build` of the example with its own cache directory; stops its bazel servers."""
    offset = access_log.stat().st_size if access_log and access_log.exists() else 0
    try:
        proc = invoke("build", *ARGS, "--workdir", str(work), *extra, env={"ISTIOBUILD_CACHE_DIR": str(cache), **env})
    finally:
        stop_bazel(work, cache)
    if ok:
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    return Built(work, cache, proc, requests_in(access_log, offset) if access_log else [])


def plan(work: Path, cache: Path, *extra: str, env: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """`invoke plan` as text and as JSON."""
    full = {"ISTIOBUILD_CACHE_DIR": str(cache), **(env or {})}
    text = invoke("plan", *ARGS, "--workdir", str(work), *extra, env=full)
    data = invoke("plan", *ARGS, "--workdir", str(work), *extra, "--json", env=full)
    assert text.returncode == 0 and data.returncode == 0, text.stderr + data.stderr
    return text.stdout, json.loads(data.stdout)


def bazel_args(data: dict[str, Any]) -> list[str]:
    """BAZEL_BUILD_ARGS of the proxy stage's make command, split."""
    steps = next(s for s in data["stages"] if s["name"] == "proxy")["steps"]
    make = next(s for s in steps if s.get("argv", [])[:2] == ["make", "build_envoy"])
    return str(next(a for a in make["argv"] if a.startswith("BAZEL_BUILD_ARGS="))).split("=", 1)[1].split()


def holding(root: Path, secret: str) -> list[str]:
    """Every file under root (symlinks not followed) whose name, content or link target holds the secret."""
    needle, found = secret.encode(), []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):
                data = os.fsencode(os.readlink(path)) if path.is_symlink() else b""
                data += path.read_bytes() if path.is_file() and not path.is_symlink() else b""
                if needle in data or needle in os.fsencode(name):
                    found.append(str(path))
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def docker_untag(hub: str) -> None:
    out = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True, check=False
    )
    for name in out.stdout.split():
        if name.startswith(f"{hub}/"):
            subprocess.run(["docker", "rmi", name], capture_output=True, check=False)


# ---------------------------------------------------------------------------------------------
# the HTTP cache: one upload build, the builds it serves


@dataclasses.dataclass(frozen=True)
class Http:
    base: Path
    cache: Path  # ISTIOBUILD_CACHE_DIR of every build served from the upload (the same path each time)
    env: Mapping[str, str]
    first: Built
    plans: str  # `invoke plan` text and JSON of the first build


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CacheServer]:
    """nginx as a bazel HTTP cache: every request needs the secret header."""
    with cache_server(tmp_path_factory.mktemp("nginx")) as cache:
        yield cache


@pytest.fixture(scope="module")
def uploaded(nginx: CacheServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Http]:
    """The example, every stage, built against the cache in a first workdir (it uploads)."""
    base = tmp_path_factory.mktemp("http")
    env = {
        "ISTIOBUILD_REMOTE_CACHE": nginx.url,
        "ISTIOBUILD_REMOTE_HEADER": f"{nginx.header_name}={nginx.header_value}",
    }
    hub = f"remote-cache-{uuid.uuid4().hex[:8]}"
    try:
        first = build(base / "work1", base / "cache", "--hub", hub, env=env, access_log=nginx.access_log)
        text, data = plan(base / "work1", base / "cache", "--hub", hub, env=env)
        yield Http(base, base / "cache", env, first, text + json.dumps(data))
    finally:
        docker_untag(hub)


@pytest.fixture(scope="module")
def served(uploaded: Http, nginx: CacheServer) -> Built:
    """The proxy stage in a second workdir, the cache directory (and so the disk cache) emptied."""
    empty_cache(uploaded.cache)
    return build(
        uploaded.base / "work2", uploaded.cache, "--to", "proxy", env=uploaded.env, access_log=nginx.access_log
    )


@pytest.mark.slow
def test_the_first_build_uploads(uploaded: Http) -> None:
    first = uploaded.first
    hits, actions = first.hits
    assert hits == 0 and actions > 0, first.proc.stderr
    puts = {path.split("/")[1] for method, path, status in first.requests if method == "PUT" and status == 201}
    assert puts == {"ac", "cas"}, first.requests
    # nginx answers 401 to any request without the header: every request had it
    assert all(200 <= status < 300 or status == 404 for _, _, status in first.requests), first.requests
    assert not first.warnings and (first.work / "example-x86_64" / "build-record.json").is_file()


@pytest.mark.slow
def test_a_second_workdir_is_served_from_the_cache(uploaded: Http, served: Built) -> None:
    hits, actions = served.hits
    assert hits == actions == uploaded.first.hits[1], served.proc.stderr
    gets = [(path, status) for method, path, status in served.requests if method == "GET"]
    assert gets and all(status == 200 for _, status in gets), served.requests  # every lookup found its entry
    assert not [r for r in served.requests if r[0] == "PUT"], served.requests  # nothing ran, nothing to upload
    assert served.envoy_sha256 == uploaded.first.envoy_sha256  # the very binary the first build uploaded
    assert not served.warnings
    log = (served.work / "logs" / "example-x86_64-proxy.log").read_text()
    assert f"[istiobuild] remote cache: {actions} of {actions} actions hit" in log


@pytest.mark.slow
def test_the_header_reaches_nginx_and_nothing_else(nginx: CacheServer, uploaded: Http, served: Built) -> None:
    secret = nginx.header_value
    assert secret not in nginx.access_log.read_text()
    for built in (uploaded.first, served):
        assert secret not in built.proc.stdout + built.proc.stderr
        assert not list((built.work / "cache" / "secrets").glob("*")), "the 0600 rc file outlived the stage"
    assert secret not in uploaded.plans
    assert f"--remote_header={nginx.header_name}=***" in uploaded.plans
    record = uploaded.first.work / "example-x86_64" / "build-record.json"
    assert record.is_file() and secret not in record.read_text()
    bazel_logs = list((uploaded.first.work / "cache" / "bazel-root").rglob("java.log*"))
    assert bazel_logs, "the bazel server's own log must be among the files searched"
    assert holding(uploaded.base, secret) == []  # workdirs (logs, records, bazel's output base), cache dirs


@pytest.mark.slow
def test_basic_auth(uploaded: Http, nginx: CacheServer, tmp_path: Path) -> None:
    """The same blobs behind basic auth and the header: a third workdir is served; the password shows nowhere."""
    password = uuid.uuid4().hex
    with cache_server(tmp_path / "nginx", basic_auth=("builder", password), root=nginx.root) as cache:
        env = {"ISTIOBUILD_REMOTE_CACHE": cache.url, "ISTIOBUILD_REMOTE_HEADER": f"{HEADER_NAME}={cache.header_value}"}
        empty_cache(uploaded.cache)
        served = build(tmp_path / "work", uploaded.cache, "--to", "proxy", env=env, access_log=cache.access_log)
        text, data = plan(tmp_path / "work", uploaded.cache, env=env)
    hits, actions = served.hits
    assert hits == actions == uploaded.first.hits[1], served.proc.stderr
    assert served.requests and all(status == 200 for _, _, status in served.requests), served.requests
    assert re.search(r" - builder \[", cache.access_log.read_text())  # nginx saw the user ...
    assert password not in cache.access_log.read_text() + served.proc.stdout + served.proc.stderr + text
    assert "--remote_cache=http://***@127.0.0.1" in text and password not in json.dumps(data)
    assert holding(tmp_path / "work", password) == [] and holding(uploaded.cache, password) == []


@pytest.mark.slow
def test_upload_off(nginx: CacheServer, uploaded: Http, tmp_path: Path) -> None:
    """--remote-upload off: bazel reads the cache and uploads nothing, and still fills the local disk cache.

    This build's cache directory has another path than the upload's, so its toolchain links (hence PATH, CC
    ... in every action key) differ: every lookup misses, which is why a shared cache needs one path."""
    cache = tmp_path / "other-cache"
    env = {**uploaded.env, "ISTIOBUILD_REMOTE_UPLOAD": "off"}
    built = build(tmp_path / "work", cache, "--to", "proxy", env=env, access_log=nginx.access_log)
    hits, actions = built.hits
    assert hits == 0 and actions == uploaded.first.hits[1], built.proc.stderr
    assert built.requests and {(m, s) for m, _, s in built.requests} == {("GET", 404)}, built.requests
    _, data = plan(tmp_path / "work", cache, env=env)
    args = bazel_args(data)
    assert "--noremote_upload_local_results" in args and "--incompatible_remote_results_ignore_disk" in args
    disk = Path(next(a for a in args if a.startswith("--disk_cache=")).split("=", 1)[1])
    assert [p for p in disk.rglob("*") if p.is_file()], f"{disk} stayed empty"


# ---------------------------------------------------------------------------------------------
# a cache that is down or refuses


@pytest.mark.slow
def test_http_cache_down_builds_on_with_one_warning(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    built = build(tmp_path / "work", tmp_path / "cache", "--to", "proxy", env={"ISTIOBUILD_REMOTE_CACHE": url})
    log = tmp_path / "work" / "logs" / "example-x86_64-proxy.log"
    assert len(built.warnings) == 1, built.proc.stderr
    line = built.warnings[0]
    assert f"{WARNING} {url}: it is unreachable (Connection refused)" in line and f"Details in {log}" in line
    assert built.hits[0] == 0 and (built.work / "example-x86_64" / "artifacts" / "envoy").is_file()


@pytest.mark.slow
def test_http_cache_refusing_the_credentials_builds_on_with_one_warning(nginx: CacheServer, tmp_path: Path) -> None:
    password = uuid.uuid4().hex
    with cache_server(tmp_path / "nginx", basic_auth=("builder", "right-" + password)) as cache:
        wrong = cache.url.replace("right-", "wrong-")
        env = {
            "ISTIOBUILD_REMOTE_CACHE": wrong,
            "ISTIOBUILD_REMOTE_HEADER": f"{cache.header_name}={cache.header_value}",
        }
        built = build(tmp_path / "work", tmp_path / "cache", "--to", "proxy", env=env, access_log=cache.access_log)
    assert built.requests and {s for _, _, s in built.requests} == {401}, built.requests
    assert len(built.warnings) == 1, built.proc.stderr
    port = wrong.rsplit(":", 1)[1]
    expected = f"{WARNING} http://***@127.0.0.1:{port}: it refused bazel's requests (401 Unauthorized)"
    assert expected in built.warnings[0]
    assert password not in built.proc.stdout + built.proc.stderr
    assert holding(tmp_path / "work", password) == []


# ---------------------------------------------------------------------------------------------
# the gRPC cache: BuildGrid


@pytest.mark.slow
def test_grpc_cache(reapi_cache: ReapiServer, tmp_path: Path) -> None:
    env = {"ISTIOBUILD_REMOTE_CACHE": reapi_cache.url}
    cache = tmp_path / "cache"
    first = build(tmp_path / "work1", cache, "--to", "proxy", env=env)
    assert first.hits[0] == 0 and first.hits[1] > 0 and not first.warnings, first.proc.stderr
    empty_cache(cache)
    second = build(tmp_path / "work2", cache, "--to", "proxy", env=env)
    assert second.hits == (first.hits[1], first.hits[1]) and not second.warnings, second.proc.stderr
    assert second.envoy_sha256 == first.envoy_sha256


@pytest.mark.slow
def test_grpc_cache_down_builds_on_with_one_warning(tmp_path: Path) -> None:
    """Without --remote_local_fallback bazel 4.2.3 would stop at its capabilities call (exit 34)."""
    url = f"grpc://127.0.0.1:{free_port()}"
    built = build(tmp_path / "work", tmp_path / "cache", "--to", "proxy", env={"ISTIOBUILD_REMOTE_CACHE": url})
    assert len(built.warnings) == 1, built.proc.stderr
    assert f"{WARNING} {url}: it is unreachable (Connection refused)" in built.warnings[0]
    assert "(1 warning). Details in" in built.warnings[0]
    log = (tmp_path / "work" / "logs" / "example-x86_64-proxy.log").read_text()
    assert "WARNING: Failed to query remote execution capabilities: Connection refused" in log
    assert built.hits[0] == 0 and (built.work / "example-x86_64" / "artifacts" / "envoy").is_file()


@pytest.mark.slow
def test_grpc_executor_down_is_one_error_before_bazel_starts(tmp_path: Path) -> None:
    """With an executor bazel stops when it is down (no fallback: it would run failed remote actions locally)."""
    url = f"grpc://127.0.0.1:{free_port()}"
    built = build(
        tmp_path / "work", tmp_path / "cache", "--to", "proxy", env={"ISTIOBUILD_REMOTE_EXECUTOR": url}, ok=False
    )
    line = one_error(built.proc)
    assert line == f"error: stage proxy failed: the remote executor {url} cannot be reached (Connection refused), " + (
        "and bazel stops without it"
    )
    assert "start it or correct --remote-executor; leave it out to build without it" in built.proc.stderr
    log = (tmp_path / "work" / "logs" / "example-x86_64-proxy.log").read_text()
    assert "make build_envoy" not in log  # bazel never started


# ---------------------------------------------------------------------------------------------
# the plan and bad values (no build)


def test_the_plan_shows_the_remote_settings(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    flags = ("--remote-cache", "grpcs://cache.example.com:9092", "--remote-upload", "off",
             "--remote-executor", f"grpcs://rbe:{token}@rbe.example.com",
             "--remote-platform", "OSFamily=Linux,container-image=docker://gcr.io/x/y@sha256:0123abcd")  # fmt: skip
    text, data = plan(tmp_path / "work", tmp_path / "cache", *flags)
    args = bazel_args(data)
    for flag in ("--remote_cache=grpcs://cache.example.com:9092", "--noremote_upload_local_results",
                 "--incompatible_remote_results_ignore_disk", "--remote_default_exec_properties=OSFamily=Linux",
                 "--remote_default_exec_properties=container-image=docker://gcr.io/x/y@sha256:0123abcd"):  # fmt: skip
        assert flag in args, args
    assert not [a for a in args if a.startswith("--remote_executor")]  # credentials: the 0600 rc file
    assert "--remote_local_fallback" not in args  # with an executor: failed remote actions must not run here
    proxy = text[text.index(". proxy:") :]
    assert "--remote_executor=grpcs://***@rbe.example.com" in proxy and "--bazelrc=" in proxy
    assert "connect to the remote cache grpcs://cache.example.com:9092, the remote executor " in proxy
    assert "note: remote cache grpcs://cache.example.com:9092: read only (--remote-upload off)" in proxy
    assert "note: remote executor grpcs://***@rbe.example.com (untested here" in proxy
    assert token not in text + json.dumps(data)
    default, data = plan(tmp_path / "work", tmp_path / "cache", "--remote-cache", "http://cache.example.com")
    assert "--remote_cache=http://cache.example.com" in bazel_args(data)
    assert not [a for a in bazel_args(data) if "upload" in a or "ignore_disk" in a or "fallback" in a]
    assert ": read and written;" in default and "connect to the remote cache" not in default
    grpc, data = plan(tmp_path / "work", tmp_path / "cache", "--remote-cache", "grpc://127.0.0.1:9092")
    assert {"--remote_cache=grpc://127.0.0.1:9092", "--remote_local_fallback"} <= set(bazel_args(data))
    assert "connect to the remote cache" not in grpc  # a gRPC cache alone: bazel builds on without it


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (["--remote-upload", "maybe"], {}, "--remote-upload 'maybe' is not on or off; give on or off"),
        ([], {"ISTIOBUILD_REMOTE_UPLOAD": "sometimes"}, "ISTIOBUILD_REMOTE_UPLOAD 'sometimes' is not on or off"),
        (["--remote-cache", "ftp://cache.example.com"], {}, "scheme 'ftp'; allowed: grpc, grpcs, http, https"),
        (["--remote-executor", "https://rbe.example.com"], {}, "scheme 'https'; allowed: grpc, grpcs"),
        (["--remote-executor", "grpcs://rbe.example.com/$(id)"], {}, "contains '$' in its path"),
        (["--remote-executor", "grpcs://u:a/b@rbe.example.com"], {}, "'/' is %2F"),
        (["--remote-platform", "OSFamily=Linux"], {}, "--remote-platform needs a remote executor"),
        ([*RBE, "--remote-platform", "OSFamily=Linux,x"], {}, "has 'x', not KEY=VALUE"),
        ([*RBE, "--remote-platform", "a=1,a=2"], {}, "sets 'a' twice"),
        ([*RBE, "--remote-platform", "image=$(id)"], {}, "has '$' in the value of 'image'"),
    ],
)  # fmt: skip
def test_bad_remote_values_are_one_clear_line(flags: list[str], env: dict[str, str], message: str) -> None:
    line = one_error(invoke("plan", *ARGS, *flags, env=env))
    assert message in line, line
    assert "a/b" not in line  # credentials are never shown, not even a wrong-looking part of them


# ---------------------------------------------------------------------------------------------
# reading bazel's output (lines as bazel 4.2.3 prints them)

MAKE = b"+ [/w/example/proxy] CC=clang make build_envoy 'BAZEL_BUILD_ARGS=--remote_cache=http://c'\n"


def test_hits_line() -> None:
    assert remotecache.hits_line(b"INFO: 13 processes: 4 remote cache hit, 9 internal.\n") == (
        "remote cache: 4 of 4 actions hit"
    )
    assert remotecache.hits_line(b"INFO: 10 processes: 6 internal, 4 linux-sandbox.\n") == (
        "remote cache: 0 of 4 actions hit (4 linux-sandbox ran)"
    )
    assert remotecache.hits_line(b"INFO: 1 process: 1 internal.\n") == (
        "remote cache: no action ran (bazel's outputs were up to date)"
    )
    assert remotecache.hits_line(b"ERROR: no\n").startswith("remote cache: bazel printed no process summary")


def test_this_run_and_reason(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    old = MAKE + b"WARNING: Reading from Remote Cache:\n401 Unauthorized\nINFO: 10 processes: 6 internal, 4 local.\n"
    new = b"WARNING: Writing to Remote Cache:\nio.netty.channel.AbstractChannel$AnnotatedConnectException: "
    new += b"Connection refused: /127.0.0.1:1\nINFO: 13 processes: 4 remote cache hit, 9 internal.\n"
    log.write_bytes(old + b"[istiobuild] remote cache: 0 of 4 actions hit\n" + MAKE + new)
    assert remotecache.this_run(log) == new
    assert remotecache.reason(new).startswith("it is unreachable (Connection refused)")
    assert remotecache.reason(old).startswith("it refused bazel's requests (401 Unauthorized)")
    grpc = b"WARNING: Reading from Remote Cache:\njava.io.IOException: io.grpc.StatusRuntimeException: UNAVAILABLE"
    assert remotecache.reason(grpc).startswith("it is unreachable (UNAVAILABLE)")

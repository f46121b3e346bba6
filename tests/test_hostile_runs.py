"""Hostile runs: what a user (or the machine) does to a build, and what istiobuild must do about it.

One test per row of docs/hostile-runs.md (the last test checks that the ids match). Everything is
real: the example release built with bazel and Go, docker images, nginx as a bazel HTTP cache, a
Basic-auth git server over the dumb HTTP protocol, a docker registry, signals to the CLI process.

Workdirs: rows that only read a build share `built` (one build per module); rows that change a
build share `mutable` (its own build, brought back to "built and up to date" before each row);
the process rows use `early` (built up to the toolchain stage, the proxy stage is a fake `make`);
the rest make their own. Every workdir has its own cache beside it (`cache_of`, passed as
ISTIOBUILD_CACHE_DIR to every build of it): a module fixture and the rows that build its workdir again
see the same one, and a row's own workdir starts with an empty one. Every bazel server started here
is stopped.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from cacheserver import HEADER_NAME as HEADER
from cacheserver import cache_server
from helpers import invoke, one_error, until
from istiobuild import patches, procs, release
from istiobuild.arch import Arch
from istiobuild.fsutil import workdir_lock
from istiobuild.git import worktree_tree
from istiobuild.layout import Layout
from istiobuild.release import Component

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "hostile-runs.md"
pytestmark = pytest.mark.slow

STAGES = ("checkout", "patch", "toolchain", "proxy", "istio", "images", "verify", "record")
E_MACHINE = {"x86_64": 62, "aarch64": 183}
LOCAL_REGISTRY = "127.0.0.1:5000"


# ---------------------------------------------------------------------------------------------
# helpers


def common(work: Path, arch: str = "x86_64", toolchain: str = "gcc") -> tuple[str, ...]:
    return ("--release", "example", "--arch", arch, "--toolchain", toolchain, "--workdir", str(work))


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def cache_of(work: Path) -> Path:
    """The cache (ISTIOBUILD_CACHE_DIR) of every build in `work`: beside it, its own."""
    return work.parent / "istiobuild-cache"


def env_of(work: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a build in `work`: its cache, and `env`."""
    return {"ISTIOBUILD_CACHE_DIR": str(cache_of(work)), **(env or {})}


def layout(work: Path, arch: str = "x86_64") -> Layout:
    """The paths of the example build in `work` (bazel's output root, the secret files: the workdir's own)."""
    return Layout(workdir=work, cache=cache_of(work), release="example", arch=Arch(arch))


def build(work: Path, *extra: str, arch: str = "x86_64", env: Mapping[str, str] | None = None) -> str:
    """`invoke build` that must succeed; returns its stderr (where the stage lines go)."""
    return ok(invoke("build", *common(work, arch), *extra, env=env_of(work, env))).stderr


def plans(work: Path, env: Mapping[str, str], *extra: str) -> str:
    """`invoke plan` as text and as JSON."""
    text = ok(invoke("plan", *common(work), *extra, env=env_of(work, env))).stdout
    return text + ok(invoke("plan", *common(work), *extra, "--json", env=env_of(work, env))).stdout


def stop_bazel(work: Path) -> None:
    procs.stop_bazel_servers(layout(work).bazel_root)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def out_dir(work: Path, arch: str = "x86_64") -> Path:
    return work / f"example-{arch}"


def record(work: Path, arch: str = "x86_64") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out_dir(work, arch) / "build-record.json").read_text())
    return data


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


def remove_tags(hub: str) -> None:
    """Untag every image under a hub this module made up (the session fixture removes the images themselves)."""
    for line in docker("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines():
        if line.startswith(f"{hub}/"):
            docker("rmi", line, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under root (never following a symlink): kind and content hash or link target, mode, mtime."""
    seen: dict[str, tuple[object, ...]] = {}
    if not root.exists():
        return seen
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                what: object = ("link", os.readlink(path))
            elif path.is_dir():
                what = "dir"
            elif path.is_file():
                what = sha256(path.read_bytes())
            else:
                what = "special"
            seen[str(path.relative_to(root))] = (what, st.st_mode, st.st_mtime_ns, st.st_size)
    st = root.lstat()
    seen["."] = ("dir", st.st_mode, st.st_mtime_ns)
    return seen


def holding(root: Path, secret: str) -> list[str]:
    """Every file under root (symlinks not followed) whose name, content, gunzipped content or link
    target holds the secret."""
    needle = secret.encode()
    hits = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                data = os.fsencode(os.readlink(path))
            elif path.is_file():
                data = path.read_bytes()
                if data[:2] == b"\x1f\x8b":
                    with contextlib.suppress(OSError, EOFError, gzip.BadGzipFile):
                        data += gzip.decompress(data)
            else:
                data = b""
            if needle in data or needle in os.fsencode(name):
                hits.append(str(path))
    return hits


def bazel_output_files(work: Path) -> list[str]:
    """The bazel server's own files that must be among the ones searched (so the search really covers them)."""
    root = layout(work).bazel_root
    return sorted(p.name for p in (*root.glob("java.log*"), *root.glob("*/command.log"), *root.glob("*/*.gz")))


def inspect_images(work: Path, arch: str = "x86_64") -> str:
    """`docker image inspect` of the build's images (its workdir-unique and its final names)."""
    findings = json.loads((out_dir(work, arch) / "verify.json").read_text())
    names = sorted({f["image"] for f in findings} | set(record(work, arch)["images"]))
    return docker("image", "inspect", *names)


def statuses(access_log: Path) -> list[tuple[str, int]]:
    """(method, status) of every request nginx logged."""
    found = re.findall(r'"(GET|PUT|HEAD) \S+ HTTP/[\d.]+" (\d{3})', access_log.read_text())
    return [(method, int(status)) for method, status in found]


def expected_series(arch: str) -> dict[str, list[str]]:
    """The patch names each component carries for `arch` (istio also the generated base-image and release-defaults
    patches)."""
    rel = release.get("example")
    names = {c.value: [p.name for p in patches.select(rel, c, Arch(arch))] for c in Component}
    names["istio"] += ["generated/base-images.patch", "generated/release-defaults.patch"]
    return names


def recorded_series(work: Path, arch: str) -> dict[str, list[str]]:
    return {c: [p["name"] for p in items] for c, items in record(work, arch)["patches"].items()}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout.strip()


def expected_tree(repo: Path, names: list[str], tmp: Path) -> str:
    """HEAD + the named patches, computed with plain git in a throwaway index: shipped patches from
    patches/, the generated one from the copy istiobuild kept (whose sha256 the record names)."""
    index = tmp / f"index-{repo.name}"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}
    subprocess.run(["git", "-C", str(repo), "read-tree", "HEAD"], check=True, env=env)
    applied = sorted((repo / ".git" / "istiobuild" / "applied").glob("*.patch"))
    for i, name in enumerate(names):
        path = applied[i] if name.startswith("generated/") else REPO / name
        subprocess.run(["git", "-C", str(repo), "apply", "--cached", str(path)], check=True, env=env)
    out = subprocess.run(["git", "-C", str(repo), "write-tree"], check=True, env=env, capture_output=True, text=True)
    index.unlink()
    return out.stdout.strip()


def assert_carries(work: Path, series: Mapping[str, list[str]], tmp: Path) -> None:
    """Each checkout is exactly HEAD + its series, and istiobuild's record of it says so (none when empty)."""
    for component, names in series.items():
        repo = work / "example" / component
        state = patches.read_state(repo)
        tree = worktree_tree(repo)
        assert tree == expected_tree(repo, names, tmp), component
        if names:
            assert state is not None and [n for n, _ in state.patches] == names and state.tree == tree, component
        else:
            assert state is None and tree == git(repo, "rev-parse", "HEAD^{tree}"), component


# ---------------------------------------------------------------------------------------------
# processes


def start(*args: str, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """`invoke ARGS` as a process the test can signal (without the caller's ISTIOBUILD_*)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    full.update(env)
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args]
    return subprocess.Popen(argv, cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a live process; None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in "ZX" else (fields[0], int(fields[2]))


def group(pgid: int) -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and (s := _stat(int(e))) is not None and s[1] == pgid]


def mentioning(text: str) -> list[int]:
    """Live processes whose command line mentions `text` (the workdir: make, the fake server, the watchdog)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline and _stat(int(entry)) is not None:
            found.append(int(entry))
    return found


FAKE_MAKE = """#!/bin/bash
# `make build_envoy` that starts a daemonized fake bazel server (its own session, the output user
# root in its command line, its pid where bazel writes it) and then builds forever; any other make
# is the real one.
build=""; startup=""
for arg in "$@"; do
  case "$arg" in
    build_envoy) build=1 ;;
    BAZEL_STARTUP_ARGS=*) startup="${{arg#BAZEL_STARTUP_ARGS=}}" ;;
  esac
done
[ -n "$build" ] || exec {real} "$@"
root=""
for word in $startup; do
  case "$word" in --output_user_root=*) root="${{word#--output_user_root=}}" ;; esac
done
mkdir -p "$root/fake/server"
setsid bash -c 'echo $$ > "$1.tmp" && mv "$1.tmp" "$1" && exec -a "fake-bazel-server --output_user_root=$2" \\
  sleep 300' fake-bazel "$root/fake/server/server.pid.txt" "$root" </dev/null >/dev/null 2>&1 &
echo $$ > "$FAKE_MAKE_PID.tmp" && mv "$FAKE_MAKE_PID.tmp" "$FAKE_MAKE_PID"
echo "fake make: building envoy"
[ -z "$FAKE_MAKE_IGNORE_INT" ] || trap '' INT  # a build that ignores Ctrl-C: stopping it takes escalation
sleep 300
"""


class FakeProxyStage:
    """`invoke build --to proxy` in `early` whose proxy stage is the fake make, started and running."""

    def __init__(self, work: Path, tmp: Path, *, ignore_int: bool = False) -> None:
        bindir = tmp / "fakebin"
        bindir.mkdir()
        make = bindir / "make"
        make.write_text(FAKE_MAKE.format(real=shutil.which("make")))
        make.chmod(0o755)
        self.work = work
        pidfile = tmp / "make.pid"
        env = {"PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_MAKE_PID": str(pidfile)}
        if ignore_int:
            env["FAKE_MAKE_IGNORE_INT"] = "1"
        self.server_pidfile = layout(work).bazel_root / "fake" / "server" / "server.pid.txt"
        self.server_pidfile.unlink(missing_ok=True)
        self.proc = start("build", *common(work), "--to", "proxy", env=env_of(work, env))
        started = until(lambda: (pidfile.exists() and self.server_pidfile.exists()) or self.proc.poll() is not None, 60)
        if not started or self.proc.poll() is not None:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"the fake proxy stage did not start:\n{err}")
        self.make = int(pidfile.read_text())  # the make the stage runs: leader of its own process group
        self.server = int(self.server_pidfile.read_text())
        assert until(lambda: len(group(self.make)) >= 2), group(self.make)  # bash and its foreground sleep
        self.members = group(self.make)
        server = _stat(self.server)
        assert server is not None and server[1] != self.make  # daemonized: not in make's group

    def signal(self, sig: int) -> float:
        self.proc.send_signal(sig)
        return time.monotonic()

    def finish(self) -> subprocess.CompletedProcess[str]:
        out, err = self.proc.communicate(timeout=60)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def leftovers(self) -> list[int]:
        alive = [p for p in (*self.members, self.server) if _stat(p) is not None]
        return sorted({*alive, *group(self.make), *mentioning(str(self.work))})

    def all_gone_by(self, sent: float, seconds: float = 10.0) -> list[int]:
        until(lambda: not self.leftovers(), max(0.0, sent + seconds - time.monotonic()))
        return self.leftovers()

    def kill_leftovers(self) -> None:
        for pid in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# servers: a dumb-HTTP git server with Basic auth, a docker registry


class DumbGitServer:
    """Bare copies of the example upstream served read-only over HTTP (git's dumb protocol), every
    request without the right Basic credentials answered 401."""

    def __init__(self, upstream: Path, root: Path, user: str, password: str) -> None:
        root.mkdir(parents=True)
        for name in ("proxy", "envoy", "istio"):
            subprocess.run(["git", "clone", "--quiet", "--mirror", str(upstream / name), str(root / name)], check=True)
            subprocess.run(["git", "-C", str(root / name), "update-server-info"], check=True)
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self.log: list[tuple[str, int]] = []
        log = self.log

        class Handler(http.server.SimpleHTTPRequestHandler):
            def _allowed(self) -> bool:
                if self.headers.get("Authorization") == expected:
                    return True
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def do_GET(self) -> None:
                if self._allowed():
                    super().do_GET()

            def do_HEAD(self) -> None:
                if self._allowed():
                    super().do_HEAD()

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                log.append((self.path, int(code) if str(code).isdigit() else 0))

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private docker registry on a free port (pushes leave nothing in the machine's own)."""
    tmp = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = {"version": 0.1, "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}},
              "http": {"addr": f"127.0.0.1:{port}"}}  # fmt: skip
    (tmp / "config.yml").write_text(json.dumps(config))
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(tmp / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with socket.socket() as s:
            assert until(lambda: s.connect_ex(("127.0.0.1", port)) == 0), "docker-registry did not start"
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def catalog(address: str) -> tuple[list[str], dict[str, Any]]:
    """The registry's repositories, and the tags of each."""
    with urllib.request.urlopen(f"http://{address}/v2/_catalog", timeout=10) as resp:
        repos = sorted(json.load(resp)["repositories"])
    tags = {}
    for repo in repos:
        with urllib.request.urlopen(f"http://{address}/v2/{repo}/tags/list", timeout=10) as resp:
            tags[repo] = sorted(json.load(resp).get("tags") or [])
    return repos, tags


# ---------------------------------------------------------------------------------------------
# shared workdirs


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example built once (x86_64, gcc), for rows that only read the build."""
    work = tmp_path_factory.mktemp("built") / "work"
    try:
        build(work)
        yield work
    finally:
        stop_bazel(work)


@pytest.fixture(scope="module")
def _mutable_work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("mutable") / "work"
    try:
        yield work
    finally:
        stop_bazel(work)


@pytest.fixture
def mutable(_mutable_work: Path) -> Path:
    """A workdir of its own for rows that change a build: built (x86_64, gcc) and up to date when the row starts."""
    build(_mutable_work)
    return _mutable_work


@pytest.fixture(scope="module")
def _early_work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("early") / "work"


@pytest.fixture
def early(_early_work: Path) -> Path:
    """A workdir built up to the toolchain stage: the next `build --to proxy` runs the proxy stage."""
    build(_early_work, "--to", "toolchain")
    return _early_work


# ---------------------------------------------------------------------------------------------
# 1-3: secrets on the way to a remote cache and a mirror


def _secret_nowhere(work: Path, secret: str, outputs: Iterable[str]) -> None:
    """Not in the outputs, in no file of the workdir or of the cache its builds used, in no image."""
    for text in outputs:
        assert secret not in text
    assert list(cache_of(work).glob("git/*.git/config"))  # the cache's own git repositories are searched too
    assert holding(work, secret) == [] and holding(cache_of(work), secret) == []
    assert secret not in inspect_images(work)


def test_remote_header(tmp_path: Path) -> None:
    # two builds, each with an empty cache of its own: no local disk cache hit, so both write to their server
    work, work2 = tmp_path / "header" / "work", tmp_path / "basic" / "work"
    assert cache_of(work) != cache_of(work2)
    with cache_server(tmp_path / "cache") as cache:
        secret = cache.header_value
        env = {"ISTIOBUILD_REMOTE_CACHE": cache.url, "ISTIOBUILD_REMOTE_HEADER": f"{cache.header_name}={secret}"}
        try:
            proc = ok(invoke("build", *common(work), env=env_of(work, env)))
            plan = plans(work, env)
            assert not list(layout(work).secrets.iterdir())  # the 0600 rc file is gone
        finally:
            stop_bazel(work)  # the server flushes its logs: they are searched too
        seen = statuses(cache.access_log)
        assert ("PUT", 201) in seen and all(200 <= s < 300 or s == 404 for _, s in seen), seen  # the header got there
    assert {"java.log", "command.log"} <= set(bazel_output_files(work)), bazel_output_files(work)
    _secret_nowhere(work, secret, (proc.stdout, proc.stderr, plan))

    # a cache URL with Basic credentials: bazel authenticates, the password shows nowhere
    password = uuid.uuid4().hex
    with cache_server(tmp_path / "cache2", basic_auth=("builder", password)) as cache:
        assert password in cache.url
        env = {"ISTIOBUILD_REMOTE_CACHE": cache.url, "ISTIOBUILD_REMOTE_HEADER": f"{HEADER}={cache.header_value}"}
        try:
            proc = ok(invoke("build", *common(work2), env=env_of(work2, env)))
            plan = plans(work2, env)
        finally:
            stop_bazel(work2)
        seen = statuses(cache.access_log)
        assert ("PUT", 201) in seen and all(200 <= s < 300 or s == 404 for _, s in seen), seen
    assert list(work2.glob("example/*/.git/config"))
    _secret_nowhere(work2, password, (proc.stdout, proc.stderr, plan))


def test_cache_without_header(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with cache_server(tmp_path / "cache") as cache:
        try:
            stderr = build(work, env={"ISTIOBUILD_REMOTE_CACHE": cache.url})
        finally:
            stop_bazel(work)
        seen = statuses(cache.access_log)
    # bazel warns and builds without the cache: every request was refused, nothing was stored ...
    assert seen and {s for _, s in seen} == {401}, seen
    assert "done proxy" in stderr and (out_dir(work) / "artifacts" / "envoy").is_file()
    # ... and says why in the proxy stage's log; istiobuild says so on screen in one warning line
    log = work / "logs" / "example-x86_64-proxy.log"
    text = log.read_text()
    assert "WARNING: Reading from Remote Cache:" in text and "WARNING: Writing to Remote Cache:" in text
    assert "401 Unauthorized" in text
    warnings = [line for line in stderr.splitlines() if "warning: bazel could not use the remote cache" in line]
    assert len(warnings) == 1 and f"Details in {log}" in warnings[0], stderr


def test_mirror_credentials(example_upstream: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    token = "tok-" + uuid.uuid4().hex
    server = DumbGitServer(example_upstream, tmp_path / "served", "builder", token)
    work = tmp_path / "work"
    hub = f"hostile-mirror-{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: remove_tags(hub))
    env = {"ISTIOBUILD_MIRROR": f"http://builder:{token}@127.0.0.1:{server.port}/"}
    try:
        proc = ok(invoke("build", *common(work), "--hub", hub, env=env_of(work, env)))
        plan = plans(work, env, "--hub", hub)
    finally:
        server.close()
        stop_bazel(work)
    # the server wanted credentials and got them; by-SHA fetches were refused (dumb HTTP), full fetches worked
    assert any(code == 401 for _, code in server.log) and any(code == 200 for _, code in server.log)
    assert proc.stderr.count("the remote refused a fetch by SHA; fetching all branches and tags") == 3
    shown = f"http://***@127.0.0.1:{server.port}"
    assert f"{shown}/proxy" in plan
    for component in ("proxy", "envoy", "istio"):
        origin = git(work / "example" / component, "remote", "get-url", "origin")
        assert origin == f"http://127.0.0.1:{server.port}/{component}"
    assert not (layout(work).secrets / "git-credentials").exists()
    assert (work / "example" / "proxy" / ".git" / "config").is_file()
    _secret_nowhere(work, token, (proc.stdout, proc.stderr, plan))
    labels = json.loads(docker("image", "inspect", f"{hub}/pilot:example-amd64"))[0]["Config"]["Labels"]
    # labels name the release's repositories, not the mirror this machine fetched from (reproducible images)
    assert labels["org.opencontainers.image.source"] == "example:istio"
    for component in ("proxy", "envoy", "istio"):
        assert labels[f"io.istiobuild.{component}.source"] == f"example:{component}"


# ---------------------------------------------------------------------------------------------
# 4-5: dry runs change nothing


def test_dry_run_fresh(tmp_path: Path) -> None:
    work = tmp_path / "work"
    before = snapshot(tmp_path)
    # only what this build could touch (its hub, its workdir's build tags): other workers build at the same time
    suffix = f"-w{hashlib.sha256(str(work).encode()).hexdigest()[:8]}"

    def images_of_this_build() -> set[str]:
        names = docker("images", "--format", "{{.Repository}}:{{.Tag}}@{{.ID}}").split()
        return {n for n in names if "/hostile/" in n or n.partition("@")[0].endswith(suffix)}

    def registry_of_this_build() -> dict[str, Any]:
        repos, tags = catalog(LOCAL_REGISTRY)
        return {r: tags[r] for r in repos if r.startswith("hostile/")}

    images = images_of_this_build()
    registry_before = registry_of_this_build()
    dry = ("--dry-run", "--push", "--hub", f"{LOCAL_REGISTRY}/hostile")
    proc = ok(invoke("build", *common(work), *dry, env=env_of(work)))
    assert "would run: push" in proc.stderr or "would push" in proc.stderr, proc.stderr
    assert not work.exists() and not cache_of(work).exists()
    assert snapshot(tmp_path) == before
    assert images_of_this_build() == images
    assert registry_of_this_build() == registry_before


def test_dry_run_built(built: Path) -> None:
    stop_bazel(built)  # an idle bazel server may write its own logs: stopped first
    both = built.parent  # the workdir and its cache, which the dry run uses as the build did
    assert sorted(p.name for p in both.iterdir()) == sorted([built.name, cache_of(built).name])
    before = snapshot(both)
    proc = ok(invoke("build", *common(built), "--dry-run", env=env_of(built)))
    after = snapshot(both)
    for stage in STAGES:
        assert f"{stage}: up to date (would be skipped)" in proc.stderr, proc.stderr
    # paths, kinds, contents, modes and symlink targets: identical
    assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}
    again = build(built)
    for stage in STAGES:
        assert f"skip {stage}: up to date" in again
    assert "start " not in again
    # mtimes too: hashing the working trees writes nothing, not even a "freshened" git object
    touched = sorted(k for k in before if after[k] != before[k])
    assert not touched, f"the dry run changed {len(touched)} files, e.g. {touched[:3]}"


# ---------------------------------------------------------------------------------------------
# 6-8: a changed checkout, a replaced artifact, another arch in the same workdir


def test_edited_checkout(mutable: Path) -> None:
    bazelrc = mutable / "example" / "proxy" / "envoy.bazelrc"
    original = bazelrc.read_bytes()
    envoy = out_dir(mutable) / "artifacts" / "envoy"
    stamp = out_dir(mutable) / "stamps" / "proxy.json"
    before = (envoy.read_bytes(), envoy.stat().st_mtime_ns, stamp.read_bytes())
    try:
        bazelrc.write_bytes(original + b"# a comment the user added\n")
        for extra in ((), ("--from", "proxy")):
            refused = invoke("build", *common(mutable), *extra, env=env_of(mutable))
            line = one_error(refused)
            assert refused.returncode == 5
            assert line.startswith("error: stage patch failed:") and "envoy.bazelrc" in line, line
            assert "--allow-modified" in refused.stderr
            assert "start proxy" not in refused.stderr
            assert (envoy.read_bytes(), envoy.stat().st_mtime_ns, stamp.read_bytes()) == before  # nothing rebuilt
        stderr = build(mutable, "--allow-modified")
        assert "done proxy" in stderr
        proxy = record(mutable)["patches"]["proxy"]
        assert proxy["modified"] is True and proxy["files"] == ["envoy.bazelrc"]
        diff = Path(proxy["diff"])
        assert diff.is_file() and sha256(diff.read_bytes()) == proxy["sha256"]
        assert "+# a comment the user added" in diff.read_text()
        assert [p["name"] for p in proxy["patches"]] == expected_series("x86_64")["proxy"]
    finally:
        bazelrc.write_bytes(original)


def test_replaced_artifact(mutable: Path) -> None:
    envoy = out_dir(mutable) / "artifacts" / "envoy"
    planted = b"#!/bin/sh\necho 'not the envoy istiobuild built'\n"
    envoy.write_bytes(planted)
    stderr = build(mutable)
    assert "skip proxy: up to date" not in stderr and "done proxy" in stderr
    data = envoy.read_bytes()
    assert data != planted and data[:4] == b"\x7fELF"
    assert record(mutable)["envoy"]["sha256"] == sha256(data)


def test_arch_switch(mutable: Path, tmp_path: Path) -> None:
    for arch in ("x86_64", "aarch64"):
        build(mutable, arch=arch)
    third = build(mutable, arch="x86_64")
    assert "skip patch: up to date" not in third and "done patch" in third
    envoy = (out_dir(mutable) / "artifacts" / "envoy").read_bytes()
    assert int.from_bytes(envoy[18:20], "little") == E_MACHINE["x86_64"]
    for arch in ("x86_64", "aarch64"):
        assert recorded_series(mutable, arch) == expected_series(arch), arch
    assert expected_series("aarch64") != expected_series("x86_64")
    assert_carries(mutable, expected_series("x86_64"), tmp_path)  # the checkouts carry x86_64's series again


# ---------------------------------------------------------------------------------------------
# 9-11: signals during the proxy stage


def test_sigterm_proxy(early: Path, tmp_path: Path) -> None:
    stage = FakeProxyStage(early, tmp_path)
    try:
        sent = stage.signal(signal.SIGTERM)
        proc = stage.finish()
        assert proc.returncode == 143, proc.stderr
        line = one_error(proc)
        assert "SIGTERM" in line and "run the same command again" in proc.stderr, proc.stderr
        assert stage.all_gone_by(sent) == []
    finally:
        stage.kill_leftovers()
    with workdir_lock(early):  # free
        pass
    assert "skip toolchain: up to date" in build(early, "--to", "toolchain")  # a rerun starts


def test_kill9_proxy(early: Path, tmp_path: Path) -> None:
    stage = FakeProxyStage(early, tmp_path)
    try:
        sent = stage.signal(signal.SIGKILL)
        assert stage.finish().returncode == -signal.SIGKILL
        assert stage.all_gone_by(sent) == []  # the watchdog stopped make's group and the server
    finally:
        stage.kill_leftovers()
    with workdir_lock(early):
        pass


def test_double_ctrl_c(early: Path, tmp_path: Path) -> None:
    stage = FakeProxyStage(early, tmp_path, ignore_int=True)  # the stop escalates: the 2nd Ctrl-C lands in it
    try:
        sent = stage.signal(signal.SIGINT)
        time.sleep(0.2)
        assert stage.proc.poll() is None
        stage.signal(signal.SIGINT)
        proc = stage.finish()
        assert proc.returncode == 130, proc.stderr
        line = one_error(proc)
        assert "interrupted" in line and "run the same command again" in proc.stderr
        assert stage.all_gone_by(sent) == []
    finally:
        stage.kill_leftovers()


# ---------------------------------------------------------------------------------------------
# 12-13: symlinks planted where istiobuild writes


def test_symlinked_lock(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("not istiobuild's\n")
    (work / ".istiobuild.lock").symlink_to(outside)
    before = (outside.read_bytes(), outside.stat().st_mtime_ns, outside.stat().st_mode)
    proc = invoke("build", *common(work), env=env_of(work))
    line = one_error(proc)
    assert ".istiobuild.lock" in line and "symlink" in line, line
    assert (outside.read_bytes(), outside.stat().st_mtime_ns, outside.stat().st_mode) == before
    assert sorted(p.name for p in work.iterdir()) == [".istiobuild.lock"]  # nothing else was started


def test_symlinked_artifact(mutable: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside-envoy"
    outside.write_bytes(b"someone else's file\n")
    before = (outside.read_bytes(), outside.stat().st_mtime_ns, outside.stat().st_mode)
    envoy = out_dir(mutable) / "artifacts" / "envoy"
    envoy.unlink()
    envoy.symlink_to(outside)
    stderr = build(mutable)
    assert "done proxy" in stderr
    assert (outside.read_bytes(), outside.stat().st_mtime_ns, outside.stat().st_mode) == before
    assert not envoy.is_symlink() and envoy.is_file() and envoy.read_bytes()[:4] == b"\x7fELF"


# ---------------------------------------------------------------------------------------------
# 14-15: a killed patch stage, a commit of the user's own


KILLED_PATCH = """
import os, sys
from istiobuild import commands, patches
from istiobuild.steps import StageName

work, arch = sys.argv[1:]
patches._write_state = lambda *a, **k: os.kill(os.getpid(), 9)  # dies right after `git apply`
b = commands.prepare({"release": "example", "arch": arch, "toolchain": "gcc", "workdir": work})
commands.run_build(b, only=[StageName.PATCH], start="patch")
"""


def test_killed_patch(mutable: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    env.update(env_of(mutable), PYTHONPATH=str(REPO / "src"))
    child = subprocess.run([sys.executable, "-c", KILLED_PATCH, str(mutable), "aarch64"],
                           env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr
    journals = list(mutable.glob("example/*/.git/istiobuild/journal.json"))
    assert journals, "the child died before it changed anything"
    stderr = build(mutable)
    assert "done patch" in stderr
    assert not list(mutable.glob("example/*/.git/istiobuild/journal.json"))
    assert_carries(mutable, expected_series("x86_64"), tmp_path)


def test_user_commit(tmp_path: Path) -> None:
    work = tmp_path / "work"
    build(work, "--to", "patch")
    istio = work / "example" / "istio"
    with (istio / "README.md").open("a") as fh:
        fh.write("my local fix\n")
    ident = ("-c", "user.name=someone", "-c", "user.email=someone@example.invalid")
    subprocess.run(["git", *ident, "-C", str(istio), "commit", "--quiet", "-m", "my local fix", "--", "README.md"],
                   check=True, capture_output=True)  # fmt: skip
    mine = git(istio, "rev-parse", "HEAD")
    for args in (("checkout", "--release", "example", "--workdir", str(work)), ("build", *common(work))):
        line = one_error(invoke(*args, env=env_of(work)))
        assert mine[:12] in line and "my local fix" in line and "istiobuild did not make" in line, line
        assert git(istio, "rev-parse", "HEAD") == mine
    forced = ok(invoke("checkout", "--release", "example", "--workdir", str(work), "--force", env=env_of(work)))
    refs = re.findall(r"refs/istiobuild/saved/[\w.-]+", forced.stderr + forced.stdout)
    assert refs, forced.stderr
    assert mine in [git(istio, "rev-parse", ref) for ref in refs]
    assert git(istio, "rev-parse", "HEAD") == release.get("example").pins[Component.ISTIO].commit


# ---------------------------------------------------------------------------------------------
# 16-19


def test_concurrent_builds(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    hub = f"hostile-conc-{uuid.uuid4().hex[:8]}"
    request.addfinalizer(lambda: remove_tags(hub))
    works = {tc: tmp_path / tc / "work" for tc in ("gcc", "clang")}
    try:
        running = {tc: start("build", *common(w, toolchain=tc), "--hub", hub, env=env_of(w)) for tc, w in works.items()}
        for tc, proc in running.items():
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, f"{tc}:\n{err}"
    finally:
        for w in works.values():
            stop_bazel(w)
    built_ids = set()
    for tc, work in works.items():
        findings = json.loads((out_dir(work) / "verify.json").read_text())
        assert findings and all(f["ok"] for f in findings), findings
        verified = {f["image"] for f in findings}
        suffix = "-w" + hashlib.sha256(str(work).encode()).hexdigest()[:8]
        assert verified and all(name.endswith(suffix) for name in verified), verified  # its own images only
        assert sum(f["what"].startswith("labels:") for f in findings) == len(verified)
        for name in verified:
            labels = json.loads(docker("image", "inspect", name))[0]["Config"]["Labels"]
            assert labels["io.istiobuild.toolchain"] == tc
            built_ids.add(json.loads(docker("image", "inspect", name))[0]["Id"])
    for name in ("pilot", "proxyv2", "kubectl"):
        final = json.loads(docker("image", "inspect", f"{hub}/{name}:example-amd64"))[0]
        assert final["Id"] in built_ids and final["Config"]["Labels"]["io.istiobuild.toolchain"] in works


def test_bad_stamp(mutable: Path) -> None:
    stamps = out_dir(mutable) / "stamps"
    for bad in (b"[]", b"\x00\xff garbage {"):
        (stamps / "proxy.json").write_bytes(bad)
        stderr = build(mutable, "--to", "proxy")
        assert "done proxy" in stderr and "skip proxy" not in stderr
        assert isinstance(json.loads((stamps / "proxy.json").read_text())["key"], str)  # rewritten
    for bad in (b"null", b'"text"', b'{"key": 5}', b'{"key": "0", "outputs": []}', b""):
        (stamps / "record.json").write_bytes(bad)
        stderr = build(mutable)
        assert "done record" in stderr and "skip proxy: up to date" in stderr, bad
        assert isinstance(json.loads((stamps / "record.json").read_text())["key"], str)


def test_paste_plan(built: Path) -> None:
    text = ok(invoke("plan", *common(built), env=env_of(built))).stdout
    commands: dict[str, list[str]] = {"proxy": [], "istio": []}
    stage = ""
    for line in text.splitlines():
        heading = re.match(r"^\d+\. (\w+): ", line)
        if heading:
            stage = heading.group(1)
        elif stage in commands and line.strip().startswith("(cd "):
            commands[stage].append(line.strip())
    assert commands["proxy"] and commands["istio"], text
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    try:
        for command in (*commands["proxy"], *commands["istio"]):
            proc = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, check=False)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    finally:
        stop_bazel(built)


def test_publish_without_push(mutable: Path, registry: str, request: pytest.FixtureRequest) -> None:
    hub = f"{registry}/hostile"
    request.addfinalizer(lambda: remove_tags(hub))
    stderr = build(mutable, "--hub", hub, "--push")
    assert "done publish" in stderr
    pushed = catalog(registry)[1]
    assert set(pushed) == {f"hostile/{n}" for n in ("kubectl", "pilot", "proxyv2")}
    for tags in pushed.values():  # each image and its (unsigned) provenance, attached cosign-style
        assert tags[0] == "example-amd64" and len(tags) == 2 and re.fullmatch(r"sha256-[0-9a-f]{64}\.att", tags[1])
    proc = invoke("build", *common(mutable), "--hub", hub, "--from", "publish", env=env_of(mutable))
    line = one_error(proc)
    assert "publish" in line and "--push" in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------------------------
# the table


def table_ids() -> list[str]:
    ids = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells and re.fullmatch(r"`?[a-z][a-z0-9-]*`?", cells[0]) and cells[0] != "id":
            ids.append(cells[0].strip("`"))
    return ids


def test_the_table_lists_every_test() -> None:
    tests = sorted(
        name.removeprefix("test_").replace("_", "-")
        for name, value in globals().items()
        if name.startswith("test_") and callable(value) and name != "test_the_table_lists_every_test"
    )
    ids = table_ids()
    assert len(ids) == len(set(ids)), ids
    assert sorted(ids) == tests

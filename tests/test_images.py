"""Images with a real docker engine and a real local registry (Debian's docker-registry on loopback):
the example for both arches, verify catching a planted wrong-arch binary, a custom HUB, push,
manifest, and the failure modes (daemon down, registry down or refusing auth, missing base image)."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from helpers import invoke, keypair, one_error

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(
    tmp: Path, htpasswd: Path | None = None, port: int | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
    (tmp / "config.yml").write_text(json.dumps(config))  # JSON is YAML
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(tmp / "config.yml")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return f"127.0.0.1:{port}", proc
        time.sleep(0.1)
    proc.kill()
    pytest.fail("docker-registry did not start", pytrace=False)


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    address, proc = start_registry(tmp_path_factory.mktemp("registry"))
    yield address
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pipeline(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The example built, verified and pushed for both arches to a custom HUB."""
    work = tmp_path_factory.mktemp("images") / "work"
    hub = f"{registry}/t{uuid.uuid4().hex[:8]}"
    keypair(work.parent, "release")  # a key the builds do not sign with: `invoke manifest --key` refuses them
    try:
        for arch, toolchain in (("aarch64", "gcc"), ("x86_64", "clang")):
            proc = invoke(
                "build",
                "--release",
                "example",
                "--arch",
                arch,
                "--toolchain",
                toolchain,
                "--workdir",
                str(work),
                "--hub",
                hub,
                "--push",
            )
            assert proc.returncode == 0, proc.stderr
        yield work, hub
    finally:
        for line in docker("images", "--format", "{{.Repository}}:{{.Tag}}").splitlines():
            if line.startswith(hub):
                docker("rmi", "-f", line, check=False)
        root, proxy = work / "cache" / "bazel-root", work / "example" / "proxy"
        if proxy.exists():
            subprocess.run(
                ["bazel", f"--output_user_root={root}", "shutdown"], cwd=proxy, capture_output=True, check=False
            )


@pytest.mark.parametrize(
    ("arch", "goarch", "names"),
    [("aarch64", "arm64", {"pilot", "proxyv2"}), ("x86_64", "amd64", {"pilot", "proxyv2", "kubectl"})],
)
def test_both_arches_verified_and_pushed(pipeline: tuple[Path, str], arch: str, goarch: str, names: set[str]) -> None:
    work, hub = pipeline
    record = json.loads((work / f"example-{arch}" / "build-record.json").read_text())
    assert {i.split("/")[-1].split(":")[0] for i in record["images"]} == names
    assert all(f["ok"] for f in record["verify"]), record["verify"]
    assert set(record["pushed"]) == {f"{hub}/{n}:example-{goarch}" for n in names}
    proxyv2 = f"{hub}/proxyv2:example-{goarch}"
    inspect = json.loads(docker("image", "inspect", proxyv2))[0]
    assert (inspect["Os"], inspect["Architecture"]) == ("linux", goarch)
    labels = inspect["Config"]["Labels"]
    assert labels["io.istiobuild.envoy.revision"] == record["pins"]["envoy"]["commit"]
    assert labels["org.opencontainers.image.revision"] == record["pins"]["istio"]["commit"]
    # the proxy image carries the envoy our proxy stage built
    assert any(f["what"].startswith("envoy --version: envoy  version:") for f in record["verify"])
    out = docker("run", "--rm", "--entrypoint", "/usr/local/bin/envoy", proxyv2, "--version")
    assert out.strip() == record["envoy"]["version"].strip()


def test_manifest_joins_the_arches(pipeline: tuple[Path, str]) -> None:
    """Unsigned builds attach an unsigned provenance: enough for the join without --key, refused with one."""
    work, hub = pipeline
    env = {"ISTIOBUILD_WORKDIR": str(work)}
    common = ("manifest", "--hub", hub, "--release", "example", "--tag", "example")
    keyed = invoke(*common, "--key", str(work.parent / "release.pub"), env=env)
    assert "is not verified: the envelope is unsigned" in one_error(keyed)
    proc = invoke(*common, env=env)
    assert proc.returncode == 0, proc.stderr
    unsigned = "unsigned, signature not checked (no --key)"
    joined = [line for line in proc.stdout.splitlines() if line.count(unsigned) == 2]
    assert len(joined) == 2, proc.stdout  # pilot and proxyv2, both arches' provenance checked
    for name in ("pilot", "proxyv2"):
        listed = json.loads(docker("manifest", "inspect", "--insecure", f"{hub}/{name}:example"))
        arches = sorted(m["platform"]["architecture"] for m in listed["manifests"])
        assert arches == ["amd64", "arm64"], name


def test_verify_catches_a_planted_wrong_arch_binary(pipeline: tuple[Path, str], tmp_path: Path) -> None:
    _, hub = pipeline
    good = f"{hub}/proxyv2:example-arm64"
    bad = f"{hub}/proxyv2:planted"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = f"FROM {good}\nCOPY helper /usr/local/bin/helper\n".encode()
        for name, data in (
            ("Dockerfile", dockerfile),
            ("helper", Path(shutil.which("true") or "/bin/true").read_bytes()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["docker", "build", "-q", "-t", bad, "-"],
        input=context.getvalue(),
        check=True,
        capture_output=True,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    try:
        ok = invoke("verify", "--image", good, "--arch", "aarch64", "--labels")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        failed = invoke("verify", "--image", bad, "--arch", "aarch64")
        line = one_error(failed)
        assert line == f"error: {bad}: /usr/local/bin/helper is a x86_64 binary, not aarch64"
    finally:
        docker("rmi", "-f", bad, check=False)


def test_registry_unreachable_or_refusing_auth(pipeline: tuple[Path, str], tmp_path: Path) -> None:
    work, hub = pipeline
    closed = f"127.0.0.1:{free_port()}/x"
    args = ("build", "--release", "example", "--arch", "aarch64", "--toolchain", "gcc", "--workdir", str(work))
    down = invoke(*args, "--hub", closed, "--push")
    assert "not reachable" in one_error(down)
    # a registry that wants a password; the docker config holds a wrong one, which must never show
    secret = "s3cr3t-passw0rd"
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(b"alice:" + bcrypt.hashpw(b"right", bcrypt.gensalt(rounds=4)) + b"\n")
    address, proc = start_registry(tmp_path / "auth", htpasswd)
    config = tmp_path / "docker-config"
    config.mkdir()
    token = base64.b64encode(f"alice:{secret}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {address: {"auth": token}}}))
    try:
        refused = invoke(*args, "--hub", f"{address}/x", "--push", env={"DOCKER_CONFIG": str(config)})
        assert "not authorized" in one_error(refused)
        assert secret not in refused.stdout + refused.stderr and token not in refused.stdout + refused.stderr
        for log in (work / "logs").glob("*.log"):
            assert secret not in log.read_text(errors="replace") and token not in log.read_text(errors="replace")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert invoke(*args, "--hub", hub).returncode == 0  # back to the registry the fixture pushed to


def test_daemon_down_is_one_clear_line(tmp_path: Path) -> None:
    env = {"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}
    line = one_error(invoke("verify", "--image", "anything", "--arch", "aarch64", env=env))
    assert line == "error: the docker daemon is not reachable"


def test_missing_base_image_for_the_arch(pipeline: tuple[Path, str], tmp_path: Path) -> None:
    work, _ = pipeline
    (tmp_path / "istiobuild.toml").write_text(
        '[base_images.aarch64]\n"debian:bookworm-slim" = "example.invalid/nobase:1"\n'
    )
    proc = invoke(
        "build", "--release", "example", "--arch", "aarch64", "--toolchain", "gcc", "--workdir", str(work), cwd=tmp_path
    )
    line = one_error(proc)
    assert "base image example.invalid/nobase:1 for linux/arm64 is not available" in line


class _EchoingRegistry(http.server.BaseHTTPRequestHandler):
    """A registry that asks for Basic credentials and then answers every read with an error quoting them."""

    def do_GET(self) -> None:
        sent = self.headers.get("Authorization")
        if not sent:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="r"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/v2/":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
            return
        body = json.dumps({"errors": [{"code": "UNSUPPORTED", "message": f"broken backend saw {sent}"}]}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args: object) -> None:
        pass


def test_the_registry_check_is_one_line_and_never_shows_the_credentials(tmp_path: Path) -> None:
    """Before any stage: a registry echoing the credentials it got, and a docker config whose credential helper is
    missing (a config copied from Docker Desktop), each stop the build with one line; nothing ran."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingRegistry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    password = f"pw-{uuid.uuid4().hex}"
    token = base64.b64encode(f"alice:{password}".encode()).decode()
    echoing, helperless = tmp_path / "echoing", tmp_path / "helperless"
    for config, data in ((echoing, {"auths": {address: {"auth": token}}}),
                         (helperless, {"credsStore": "no-such-helper", "auths": {address: {}}})):  # fmt: skip
        config.mkdir()
        (config / "config.json").write_text(json.dumps(data))
    args = ("build", "--release", "example", "--arch", "x86_64", "--hub", f"{address}/x", "--push")
    try:
        for config, said in ((echoing, "an unexpected answer (HTTP"), (helperless, "credentials could not be read")):
            work = tmp_path / f"work-{config.name}"
            proc = invoke(*args, "--workdir", str(work), env={"DOCKER_CONFIG": str(config)})
            assert proc.returncode == 6 and said in one_error(proc), proc.stderr
            assert password not in proc.stdout + proc.stderr and token not in proc.stdout + proc.stderr
            assert not (work / "example").exists()  # stopped before the checkout
    finally:
        server.shutdown()

"""`--in-container`: the toolchain, proxy and istio stages inside a builder image, made offline from
this machine's Debian packages (`invoke host-builder`) and imported locally."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import invoke, one_error

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = "istiobuild/test-host-builder:amd64"
    proc = invoke("host-builder", "--name", name, "--workdir", str(tmp_path_factory.mktemp("hb")))
    assert proc.returncode == 0, proc.stderr
    yield name
    subprocess.run(["docker", "rmi", "-f", name], capture_output=True, check=False)


def test_example_builds_inside_the_builder(builder: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    args = ("build", "--release", "example", "--arch", "x86_64", "--toolchain", "gcc", "--workdir", str(work))
    plan = json.loads(invoke("plan", *args[1:], "--in-container", "--builder", builder, "--json").stdout)
    proxy = next(s for s in plan["stages"] if s["name"] == "proxy")
    # the plan shows the whole `docker run` that runs make in the builder: it can be pasted as is
    runs = [s["argv"] for s in proxy["steps"] if "action" not in s]
    assert runs and all(a[:2] == ["docker", "run"] and builder in a and "make" in a for a in runs)
    try:
        proc = invoke(*args, "--in-container", "--builder", builder)
        assert proc.returncode == 0, proc.stderr
        log = (work / "logs" / "example-x86_64-proxy.log").read_text()
        assert f"docker run --rm --init --platform linux/amd64 --user {os.getuid()}:{os.getgid()}" in log
        assert builder in log
        record = json.loads((work / "example-x86_64" / "build-record.json").read_text())
        assert record["envoy"]["compiler"] == "gcc" and "envoy  version:" in record["envoy"]["version"]
        assert all(f["ok"] for f in record["verify"])
        # files made inside the container belong to the caller
        out = work / "example" / "istio" / "out" / "linux_amd64" / "pilot-discovery"
        assert out.stat().st_uid == os.getuid()
    finally:
        root, proxy_dir = work / "cache" / "bazel-root", work / "example" / "proxy"
        subprocess.run(
            ["bazel", f"--output_user_root={root}", "shutdown"], cwd=proxy_dir, capture_output=True, check=False
        )


def test_in_container_needs_a_builder(tmp_path: Path) -> None:
    line = one_error(invoke("plan", "--release", "example", "--in-container", "--workdir", str(tmp_path)))
    assert line == "error: --in-container needs a builder image"


def test_missing_builder_stops_before_any_work(tmp_path: Path) -> None:
    proc = invoke(
        "build",
        "--release",
        "example",
        "--arch",
        "x86_64",
        "--workdir",
        str(tmp_path / "w"),
        "--in-container",
        "--builder",
        "istiobuild/no-such-builder:1",
    )
    assert "builder image istiobuild/no-such-builder:1 does not exist" in one_error(proc)
    assert not (tmp_path / "w" / "example").exists()

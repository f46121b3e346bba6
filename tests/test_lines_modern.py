"""Lines 1.14-1.28, buildable with the 1.14+ mechanism (envoy pre-placed, images from tools/docker.yaml; ztunnel from
1.18) (releases/<line>.toml): what their data says and what their
plans run. What differs between them was read from the real files (docs/lines.md); tests/test_upstream_mechanism.py
and tests/test_upstream_definitions.py (mirrors) check the data against the real trees at every tag it covers, and
example-next (tests/test_family_next.py) runs the same code end to end.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import invoke, one_error, static_aarch64_binary
from istiobuild import release
from istiobuild.release import Component

LINES = tuple(f"1.{n}" for n in range(14, 29))
MIN_CLANG = {**{f"1.{n}": "12" for n in range(14, 20)}, "1.26": "18", "1.27": "18", "1.28": "18"}  # the others: 14
FIRSTS = [f"{line}.0" for line in LINES]


def minor(line: str) -> int:
    return int(line.split(".")[1])


def releases_of(line: str) -> list[release.Release]:
    return [r for r in release.matrix().values() if r.line == line]


@pytest.fixture(scope="module")
def ztunnel(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    binary, digest = static_aarch64_binary(tmp_path_factory.mktemp("zt"))
    return str(binary), digest


@pytest.mark.parametrize("line", LINES)
def test_every_release_of_the_line_is_buildable_as_its_data_says(line: str) -> None:
    rels = releases_of(line)
    assert rels
    for rel in rels:
        mech = rel.mechanism
        assert rel.buildable and mech is not None and mech.local_envoy == "preplace", rel.version
        ztunnel = "download_or_build" if minor(line) >= 18 else "none"
        assert (mech.images, mech.definitions, mech.ztunnel) == ("docker_builder_yaml", "tools/docker.yaml", ztunnel)
        assert all(not names for names in rel.series.values())  # upstream builds arm64: no patch series
        assert rel.toolchains == ("clang",) and rel.toolchains_min == MIN_CLANG.get(line, "14") and rel.cross == ()
        assert ("docker.operator" in rel.docker_targets) == (minor(line) < 24)  # operator images end at 1.23
        assert ("docker.ztunnel" in rel.docker_targets) == (minor(line) >= 18)
        assert rel.external_images and rel.bazel_version and rel.go
        assert mech.rc_compiler and bool(mech.rc_path) == (minor(line) >= 25)
        forced = mech.allocator == "gperftools_forced"
        assert forced == (minor(line) < 22), rel.version  # to 1.21: the proxy .bazelrc forces gperftools
        centos = any("envoy-centos-" in p for p in mech.preplace)
        assert centos == (minor(line) <= 18) and (mech.version_package == "istio.io/pkg/version") == centos
        # every wasm file init.sh would download (to 1.17) is one of the release's downloads, placed under its name
        wanted = {p.format(goarch="arm64", proxy_sha="S") for p in mech.preplace if p.endswith(".wasm")}
        placed = {f"out/linux_arm64/{x.format(proxy_sha='S')}" for d in rel.downloads for x in d["place"]}
        assert wanted == placed and bool(wanted) == (minor(line) < 18), rel.version


def plan(version: str, tmp_path: Path, ztunnel: tuple[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    given = ("--ztunnel", ztunnel[0], "--ztunnel-sha256", ztunnel[1]) if minor(version) >= 18 else ()
    return invoke(
        "plan", "--release", version, "--arch", "aarch64", "--host", "aarch64", "--workdir", str(tmp_path),
        *given, *args,
    )  # fmt: skip


@pytest.mark.parametrize("version", FIRSTS)
def test_the_plan_of_each_line(version: str, tmp_path: Path, ztunnel: tuple[str, str]) -> None:
    """What `invoke plan --release <v> --arch aarch64 --host aarch64 --json` prints (in process: the same calls)."""
    from istiobuild import commands

    rel = release.get(version)
    given = {"ztunnel": ztunnel[0], "ztunnel_sha256": ztunnel[1]} if minor(version) >= 18 else {}
    settings = {"release": version, "arch": "aarch64", "workdir": str(tmp_path), **given}
    dumped = commands.prepare(settings, host="aarch64").plan.dumps()
    stages = {s["name"]: json.dumps(s) for s in json.loads(dumped)["stages"]}
    proxy_sha = rel.pins[Component.PROXY].commit
    assert f"out/linux_arm64/release/envoy-{proxy_sha}" in stages["istio"]
    assert ("envoy-centos-" in stages["istio"]) == (minor(rel.line) <= 18)
    assert (f"release/stats-{proxy_sha}.compiled.wasm" in stages["istio"]) == (minor(rel.line) < 18)
    assert f"{rel.mechanism.version_package}.buildVersion={version}" in stages["istio"]  # type: ignore[union-attr]
    assert "USE_LOCAL_PROXY" not in stages["istio"] and "ISTIO_ENVOY_LOCAL" not in stages["istio"]
    assert ("docker.operator" in stages["images"]) == (minor(rel.line) < 24)
    assert f"USE_BAZEL_VERSION={rel.bazel_version}" in stages["proxy"]
    # the rc's bare `--action_env=CC=clang` (and from 1.25 its fixed PATH) are overridden after the configs
    config = stages["proxy"].split("BAZEL_CONFIG_REL=", 1)[1].split("'", 1)[0]
    assert config.startswith("--config=libc++ --config=release --action_env=CC=/")
    assert "--host_action_env=CXX=/" in config
    assert ("--action_env=PATH=" in config) == (minor(rel.line) >= 25) and "/usr/lib/llvm/bin" not in config
    assert f"version >= {MIN_CLANG.get(rel.line, '14')}" in stages["toolchain"]
    # release-builder's archives for the arch, istioctl and the charts naming this build's hub and tag
    assert (
        f"istio-{version}/: bin/istioctl" in stages["release"]
        and f"istioctl-{version}-linux-arm64" in stages["release"]
    )
    assert ("manifests/examples as" in stages["release"]) == (minor(rel.line) < 22)
    assert ("operator/samples as samples/operator" in stages["release"]) == (minor(rel.line) < 24)
    assert "tools/certs the files git tracks matching README.md Makefile* common.mk" in stages["release"]
    assert ("`istioctl profile dump` names" in stages["release"]) == (minor(rel.line) < 24)
    assert "manifests/charts/istio-control/istio-discovery/values.yaml (hub gcr.io/istio-testing" in stages["patch"]
    assert ("manifests/charts/ztunnel/values.yaml (hub" in stages["patch"]) == (minor(rel.line) >= 18)


@pytest.mark.parametrize("version", ["1.14.0", "1.28.0"])
def test_what_the_lines_refuse(version: str, tmp_path: Path, ztunnel: tuple[str, str]) -> None:
    line = one_error(plan(version, tmp_path, ztunnel, "--toolchain", "gcc"))
    assert "does not build with toolchain gcc" in line
    refused = plan(version, tmp_path, ztunnel, "--allocator", "tcmalloc")
    if minor(version) < 22:  # the proxy .bazelrc forces gperftools: Google tcmalloc cannot be chosen
        assert "tcmalloc" in one_error(refused)
    else:
        assert refused.returncode == 0, refused.stderr

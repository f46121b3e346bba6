"""Lines 1.7-1.13, the wee8 era after 1.6: envoy builds V8 through gn/ninja, istio takes the local envoy with
USE_LOCAL_PROXY=1 (to 1.12) or ISTIO_ENVOY_LOCAL (1.13), the images come from istio's make docker targets, and a
patch series per line makes the aarch64 build work. What their data says and what their plans run; the series are
checked on every tag by tests/test_upstream.py (mirrors), the defaults patch by tests/test_upstream_release.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from istiobuild import commands, release
from istiobuild.release import Component

LINES = tuple(line for line in (f"1.{n}" for n in range(7, 14)) if any(
    r.line == line and r.buildable for r in release.matrix().values()
))  # fmt: skip


def minor(version: str) -> int:
    return int(version.split(".")[1])


def ends(line: str) -> list[str]:
    versions = [v for v, r in release.matrix().items() if r.line == line and r.buildable]
    return sorted({versions[0], versions[-1]}, key=lambda v: [int(x) for x in v.split(".")])


@pytest.mark.parametrize("line", LINES)
def test_every_release_of_the_line_is_buildable_as_its_data_says(line: str) -> None:
    for rel in (r for r in release.matrix().values() if r.line == line and not r.pinned_release):
        mech = rel.mechanism
        assert rel.buildable and mech is not None and mech.wee8 and rel.wee8, rel.version
        assert rel.series[Component.ENVOY] and rel.series[Component.ISTIO], rel.version  # the aarch64 work
        assert rel.external_images and rel.bazel_version and rel.go and rel.defaults is not None
        # every wasm file init.sh would download is one of the release's downloads, placed under its names
        wanted = {p.format(envoy_dir="E", proxy_sha="S", goarch="G") for p in mech.preplace if p.endswith(".wasm")}
        into = {"envoy_dir": "E", "istio_out": "out/linux_G"}  # 1.13: under istio's out/linux_<arch>/release
        placed = {f"{into[d['into']]}/{x.format(proxy_sha='S')}" for d in rel.downloads for x in d["place"]}
        assert wanted == placed and wanted, rel.version


@pytest.mark.parametrize("version", [v for line in LINES for v in ends(line)])
def test_the_plan_of_each_line(version: str, tmp_path: Path) -> None:
    """What `invoke plan --release <v> --arch aarch64 --host aarch64 --json` prints (in process: the same calls)."""
    rel = release.get(version)
    settings = {"release": version, "arch": "aarch64", "workdir": str(tmp_path)}
    stages = {
        s["name"]: json.dumps(s) for s in json.loads(commands.prepare(settings, host="aarch64").plan.dumps())["stages"]
    }
    for comp in Component:
        for name in rel.series[comp]:
            assert f"patches/{comp.value}/{name}/" in stages["patch"], (comp, name)
    assert "GN=gn" in stages["proxy"] and "NINJA=ninja" in stages["proxy"]
    knob = "ISTIO_ENVOY_LOCAL=" if minor(version) >= 13 else "USE_LOCAL_PROXY=1"
    assert knob in stages["istio"] and ".compiled.wasm" in stages["istio"]
    assert ("envoy-centos-" in stages["istio"]) == (minor(version) >= 8)
    # 1.7 .. 1.9 regenerate istioctl's go-bindata charts; from 1.10 istio embeds them with go:embed
    assert ("regenerate operator/pkg/vfs/assets.gen.go" in stages["patch"]) == (minor(version) <= 9)
    assert rel.wee8 in stages["proxy"] or rel.wee8 in json.dumps(stages)
    for target in rel.docker_targets:
        assert target in stages["images"]
    # istio's own bases first, under the hub the FROM lines name: docker.distroless too (its stage is built)
    hub = "gcr.io/istio-release" if minor(version) >= 9 else "docker.io/istio"
    assert f'"make", "docker.base", "docker.distroless", "HUB={hub}"' in stages["images"]
    assert ("DOCKER_V2_BUILDER=false" in stages["images"]) == (minor(version) == 13)
    # release-builder's archives: 1.7 ships operator/deploy and four tools files; tools/certs filtered from 1.8
    assert f"istio-{version}-linux-arm64.tar.gz" in stages["release"]
    assert ("operator/deploy as manifests/deploy" in stages["release"]) == (minor(version) == 7)
    assert ("tools/certs the files git tracks matching" in stages["release"]) == (minor(version) >= 8)
    assert ("tools/dump_kubernetes.sh" in stages["release"]) == (minor(version) <= 9)


def test_a_release_whose_series_cannot_be_proven_is_pinned_saying_why() -> None:
    """1.8.5, 1.8.6, 14 releases of 1.9 .. 1.13: their envoy commits are in no mirror here (the istio/envoy mirror
    ends in March 2021; an envoyproxy/envoy copy holds the others), so the series is not claimed for them."""
    pinned = [v for v, r in release.matrix().items() if r.pinned_release]
    assert pinned[:3] == ["1.8.5", "1.8.6", "1.9.3"] and len(pinned) == 16
    assert all("mirror" in release.get(v).note and "envoy" in release.get(v).note for v in pinned)
    with pytest.raises(Exception, match="release 1.8.5 is pinned: its envoy"):
        commands.prepare({"release": "1.8.5", "arch": "aarch64"}, host="aarch64")

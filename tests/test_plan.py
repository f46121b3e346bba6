"""The plan is a pure function: these tests forbid subprocesses entirely."""

from __future__ import annotations

import json

import pytest

from istiobuild import release, toolchain
from istiobuild.arch import Arch
from istiobuild.errors import UsageError
from istiobuild.plan import IMPLEMENTED, StageName, make_plan, render

pytestmark = pytest.mark.usefixtures("no_subprocess")


def plan_for(settings_for, version="1.5.0", arch=Arch.AARCH64, tc="clang", host=Arch.AARCH64, **cfg):  # type: ignore[no-untyped-def]
    settings = settings_for(**cfg)
    return make_plan(release.get(version), arch, toolchain.get(tc), settings, host=host), settings


def test_every_stage_in_order(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for)
    assert [s.name for s in plan.stages] == [n for n in StageName if n is not StageName.PUBLISH]
    pushing, _ = plan_for(settings_for, push=True)
    assert [s.name for s in pushing.stages] == list(StageName)
    assert all(s.implemented for s in plan.stages) and frozenset(StageName) == IMPLEMENTED
    for stage in plan.stages:
        assert stage.steps, stage.name
        for step in stage.steps:
            assert isinstance(step.argv, tuple) and step.argv and step.cwd


def test_150_aarch64_carries_what_the_guide_needed(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, settings = plan_for(settings_for)
    root = settings.workdir / "1.5.0"
    proxy = plan.stage("proxy").steps[0]
    assert proxy.argv[:2] == ("make", "build_envoy")
    assert proxy.cwd == str(root / "proxy")
    bazel_args = next(a for a in proxy.argv if a.startswith("BAZEL_BUILD_ARGS=")).split()
    # envoy comes from our patched checkout, never from a path inside bazel's output base
    assert f"BAZEL_BUILD_ARGS=--override_repository=envoy={root / 'envoy'}" == bazel_args[0]
    assert "--action_env=GN" in bazel_args and "--action_env=NINJA" in bazel_args
    assert proxy.env["GN"] == "gn" and proxy.env["NINJA"] == "ninja"
    assert "BAZEL_CONFIG_REL=--config=libc++ --config=release" in proxy.argv
    assert ".cache/bazel" not in " ".join(proxy.argv)

    prepare, istio = plan.stage("istio").steps
    assert prepare.argv[:2] == ("istiobuild", "prepare-istio")
    assert istio.argv == ("make", "build")
    assert istio.cwd == str(root / "istio")
    assert istio.env["BUILD_WITH_CONTAINER"] == "0"
    assert istio.env["USE_LOCAL_PROXY"] == "1"
    assert istio.env["TARGET_ARCH"] == "arm64"
    # USE_LOCAL_PROXY reads ../proxy/bazel-bin/src/envoy/envoy: siblings named proxy and istio
    assert (root / "istio").parent == (root / "proxy").parent
    assert "GOPATH" not in istio.env
    # init.sh can fetch nothing unpinned; envoy is our checked copy
    assert istio.env["ISTIO_ENVOY_BASE_URL"].startswith("file:///nonexistent")
    assert istio.env["ISTIO_ENVOY_LINUX_RELEASE_URL"].startswith("file:///nonexistent")
    assert (
        istio.env["ISTIO_ENVOY_LOCAL"]
        == istio.env["ISTIO_ENVOY_LOCAL_PATH"]
        == str(settings.workdir / "1.5.0-aarch64" / "artifacts" / "envoy")
    )

    _, base, docker, label = plan.stage("images").steps
    assert base.argv[:3] == ("make", "docker.base", "HUB=docker.io/istio")
    assert docker.env["TAG"] == "1.5.0-arm64" and docker.env["BASE_VERSION"] == "1.5.0-arm64"
    assert label.argv[:2] == ("istiobuild", "finalize")
    assert plan.stage("images").outputs[0].startswith("istio/") and plan.stage("images").outputs[0].endswith(
        ":1.5.0-arm64"
    )
    assert docker.env["DOCKER_BUILDKIT"] == "0"
    targets = next(a for a in docker.argv if a.startswith("DOCKER_TARGETS=")).split("=", 1)[1].split()
    for gone in ("docker.kubectl", "docker.app", "docker.app_sidecar", "docker.test_policybackend"):
        assert gone not in targets
    assert "docker.proxyv2" in targets and "docker.pilot" in targets


def test_patch_stage_lists_files_in_order(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for)
    patches = plan.stage("patch").patches
    assert patches["envoy"] == (
        "patches/envoy/wee8-1.5/0001-wee8-accept-linux-aarch64.patch",
        "patches/envoy/wee8-1.5/0002-wee8-use-host-gn-ninja.patch",
        "patches/envoy/wee8-1.5/0003-wee8-target-cpu-arm64.patch",
    )
    assert all(p.startswith("patches/proxy/bazelrc-1.5/") for p in patches["proxy"])
    assert all(p.startswith("patches/istio/arm64-1.5/") for p in patches["istio"])
    assert patches["proxy"] and patches["istio"]


def test_x86_64_takes_no_aarch64_patches(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for, arch=Arch.X86_64, host=Arch.X86_64)
    assert plan.stage("patch").patches == {"proxy": (), "envoy": (), "istio": ()}
    assert "docker.kubectl" in plan.stage("images").steps[2].argv[-1]
    plan147, _ = plan_for(settings_for, version="1.4.7", arch=Arch.X86_64, host=Arch.X86_64)
    assert [p.split("/")[2] for p in plan147.stage("patch").patches["istio"]] == ["private-operator-1.4.7"] * 2


def test_147_uses_gopath_and_its_own_series(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, settings = plan_for(settings_for, version="1.4.7")
    assert plan.stage("istio").steps[1].env["GOPATH"] == str(settings.workdir / "1.4.7-aarch64" / "gopath")
    patches = plan.stage("patch").patches
    assert all("/wee8-1.4/" in p for p in patches["envoy"])
    assert any("private-operator-1.4.7" in p for p in patches["istio"])


def test_gcc_drops_libcxx(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for, tc="gcc")
    step = plan.stage("proxy").steps[0]
    assert "BAZEL_CONFIG_REL=--config=release" in step.argv
    assert step.env["CC"] == "gcc" and step.env["BAZEL_COMPILER"] == "gcc"


def test_cross_toolchains(settings_for) -> None:  # type: ignore[no-untyped-def]
    gcc, _ = plan_for(settings_for, version="example", tc="gcc", host=Arch.X86_64)
    assert gcc.stage("toolchain").steps[0].argv[0] == "aarch64-linux-gnu-gcc"
    links, make = gcc.stage("proxy").steps[:2]
    assert links.argv[:2] == ("istiobuild", "cross-links")
    assert make.env["CC"].endswith("/toolchain/aarch64/bin/aarch64-linux-gnu-gcc")
    clang, _ = plan_for(settings_for, version="example", tc="clang", host=Arch.X86_64)
    links, make = clang.stage("proxy").steps[:2]
    assert "aarch64-linux-gnu-clang=clang" in links.argv
    assert "--target=aarch64-linux-gnu" in make.env["CFLAGS"]
    # no aarch64 libc++ next to the host's: a clang cross build links libstdc++
    assert "BAZEL_CONFIG_REL=--config=clang --config=release" in make.argv
    assert any("qemu" in n for n in clang.notes)


def test_private_envoy_is_explained(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for, version="1.5.7")
    assert any("istio-private/envoy" in n and "istio/envoy" in n for n in plan.notes)
    assert "https://github.com/istio/envoy" in plan.stage("checkout").steps[2].argv


def test_config_reaches_the_plan(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(
        settings_for,
        mirror="/srv/mirror",
        jobs=3,
        hub="registry.local:5000/me",
        tag="t1",
        repos={"envoy": "https://example.org/envoy.git"},
        base_images={"aarch64": {"gcr.io/distroless/cc:latest": "discolix/cc:latest"}},
    )
    checkout = plan.stage("checkout")
    assert "/srv/mirror/proxy" in checkout.steps[0].argv
    assert "https://example.org/envoy.git" in checkout.steps[2].argv
    assert "--jobs=3" in plan.stage("proxy").steps[0].argv[2]
    assert "HUB=registry.local:5000/me" in plan.stage("images").steps[2].argv
    assert plan.stage("images").outputs[0].startswith("registry.local:5000/me/")
    assert plan.tag == "t1"
    assert "discolix/cc:latest" in plan.stage("patch").notes[0]


def test_json_and_text(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for)
    data = json.loads(plan.dumps())
    assert data["release"] == "1.5.0" and data["arch"] == "aarch64"
    assert [s["name"] for s in data["stages"]][:2] == ["checkout", "patch"]
    assert data["stages"][0]["implemented"] is True
    text = render(plan)
    assert "override_repository=envoy=" in text and "patches/envoy/wee8-1.5/0001" in text


def test_plan_is_deterministic(settings_for) -> None:  # type: ignore[no-untyped-def]
    a, _ = plan_for(settings_for)
    b, _ = plan_for(settings_for)
    assert a == b and a.dumps() == b.dumps()


def test_workdir_with_spaces_is_refused(settings_for, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="spaces or shell metacharacters"):
        plan_for(settings_for, workdir=str(tmp_path / "my work"))

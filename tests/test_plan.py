"""The plan is a pure function: these tests forbid subprocesses entirely."""

from __future__ import annotations

import json

import pytest

from istiobuild import release, toolchain
from istiobuild.arch import Arch
from istiobuild.plan import make_plan, render
from istiobuild.stages.checkout import CheckoutPin
from istiobuild.stages.images import FinalizeImages, UntagBases
from istiobuild.stages.istio import PrepareIstio, WriteBuildInfo
from istiobuild.stages.patch import ApplySeries
from istiobuild.stages.proxy import CrossLinks
from istiobuild.steps import Action, Command, StageName

pytestmark = pytest.mark.usefixtures("no_subprocess")


def plan_for(settings_for, version="1.5.0", arch=Arch.AARCH64, tc="clang", host=Arch.AARCH64, **cfg):  # type: ignore[no-untyped-def]
    settings = settings_for(**cfg)
    return make_plan(release.get(version), arch, toolchain.get(tc), settings, host=host), settings


def commands(plan, stage):  # type: ignore[no-untyped-def]
    return [s for s in plan.stage(stage).steps if isinstance(s, Command)]


def patches(plan) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    (apply,) = plan.stage("patch").steps
    assert isinstance(apply, ApplySeries)
    return {s.component.value: [str(p) for p in s.patches] for s in apply.series if s.patches}


def test_every_stage_in_order_with_typed_steps(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for)
    assert [s.name for s in plan.stages] == [n for n in StageName if n is not StageName.PUBLISH]
    pushing, _ = plan_for(settings_for, push=True)
    assert [s.name for s in pushing.stages] == list(StageName)
    for stage in plan.stages:
        assert stage.steps, stage.name
        for step in stage.steps:
            assert isinstance(step, (Command, Action))
            if isinstance(step, Command):  # a real program, never a pseudo-command
                assert step.argv[0] in ("make", "clang", "docker") and step.cwd.is_absolute()


def test_150_aarch64_carries_what_the_guide_needed(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, settings = plan_for(settings_for)
    root = settings.workdir / "1.5.0"
    (proxy,) = commands(plan, "proxy")
    assert proxy.argv[:2] == ("make", "build_envoy")
    assert proxy.cwd == root / "proxy"
    bazel_args = next(a for a in proxy.argv if a.startswith("BAZEL_BUILD_ARGS=")).split()
    # envoy comes from our patched checkout, never from a path inside bazel's output base
    assert f"BAZEL_BUILD_ARGS=--override_repository=envoy={root / 'envoy'}" == bazel_args[0]
    assert "--action_env=GN" in bazel_args and "--action_env=NINJA" in bazel_args
    assert proxy.env["GN"] == "gn" and proxy.env["NINJA"] == "ninja"
    assert "BAZEL_CONFIG_REL=--config=libc++ --config=release" in proxy.argv
    startup = next(a for a in proxy.argv if a.startswith("BAZEL_STARTUP_ARGS="))
    assert "--bazelrc=/dev/null" in startup and "java.util.logging.config.file=" in startup
    assert ".cache/bazel" not in " ".join(proxy.argv)

    prepare, buildinfo, istio, _check, _versions = plan.stage("istio").steps
    assert isinstance(prepare, PrepareIstio) and isinstance(istio, Command)
    assert isinstance(buildinfo, WriteBuildInfo) and istio.env["BUILDINFO"] == str(buildinfo.path)
    assert istio.argv == ("make", "build") and istio.cwd == root / "istio"
    assert istio.env["BUILD_WITH_CONTAINER"] == "0"
    assert istio.env["USE_LOCAL_PROXY"] == "1"
    assert istio.env["TARGET_ARCH"] == "arm64"
    # everything under the workdir: without GOPATH, Makefile.core.mk puts it at <workdir>/..
    assert istio.env["GOPATH"] == str(settings.workdir / "1.5.0-aarch64" / "gopath")
    assert istio.env["VERSION"] == "1.5.0" and istio.env["HOME"] == str(settings.workdir / "cache" / "home")
    # init.sh can fetch nothing unpinned; envoy is our checked copy
    assert istio.env["ISTIO_ENVOY_BASE_URL"].startswith("file:///nonexistent")
    assert istio.env["ISTIO_ENVOY_LOCAL"] == str(settings.workdir / "1.5.0-aarch64" / "artifacts" / "envoy")

    base, docker = commands(plan, "images")
    assert base.argv[:3] == ("make", "docker.base", "HUB=docker.io/istio")
    # built under a name unique to the workdir; verify tags the final names
    assert docker.env["TAG"].startswith("1.5.0-arm64-w") and docker.env["BASE_VERSION"] == docker.env["TAG"]
    finalize, untag = plan.stage("images").steps[-2:]
    assert isinstance(finalize, FinalizeImages) and isinstance(untag, UntagBases)
    assert untag.names == (f"docker.io/istio/base:{docker.env['TAG']}",)  # istio's own base, once the images exist
    assert all(i.startswith("istio/") and ":1.5.0-arm64-w" in i for i in plan.stage("images").images)
    assert all(i.startswith("istio/") and i.endswith(":1.5.0-arm64") for i in plan.stage("verify").images)
    assert docker.env["DOCKER_BUILDKIT"] == "0"
    targets = next(a for a in docker.argv if a.startswith("DOCKER_TARGETS=")).split("=", 1)[1].split()
    for gone in ("docker.kubectl", "docker.app", "docker.app_sidecar", "docker.test_policybackend"):
        assert gone not in targets
    assert "docker.proxyv2" in targets and "docker.pilot" in targets


def test_patch_stage_lists_absolute_files_in_order(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for)
    found = patches(plan)
    assert [p.split("/patches/", 1)[1] for p in found["envoy"]] == [
        "envoy/wee8-1.5/0001-wee8-accept-linux-aarch64.patch",
        "envoy/wee8-1.5/0002-wee8-use-host-gn-ninja.patch",
        "envoy/wee8-1.5/0003-wee8-target-cpu-arm64.patch",
    ]
    assert all(p.startswith("/") for ps in found.values() for p in ps)
    assert all("/patches/proxy/bazelrc-1.5/" in p for p in found["proxy"])
    assert all(p.split("/patches/istio/", 1)[1].startswith("arm64-") for p in found["istio"])
    assert "/patches/istio/arm64-1.5/" in found["istio"][0]


def test_x86_64_takes_no_aarch64_patches(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for, arch=Arch.X86_64, host=Arch.X86_64)
    assert patches(plan) == {}
    assert "docker.kubectl" in commands(plan, "images")[1].argv[-1]
    plan147, _ = plan_for(settings_for, version="1.4.7", arch=Arch.X86_64, host=Arch.X86_64)
    assert [p.split("/")[-2] for p in patches(plan147)["istio"]] == ["private-operator-1.4.7"] * 2
    # the parse-time `bazel info` is patched away on every arch
    assert [p.split("/")[-1] for p in patches(plan147)["proxy"]] == ["0004-makefile-core-lazy-bazel-info.patch"]


def test_147_uses_gopath_and_its_own_series(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, settings = plan_for(settings_for, version="1.4.7")
    assert commands(plan, "istio")[0].env["GOPATH"] == str(settings.workdir / "1.4.7-aarch64" / "gopath")
    found = patches(plan)
    assert all("/wee8-1.4/" in p for p in found["envoy"])
    assert any("private-operator-1.4.7" in p for p in found["istio"])


def test_gcc_drops_libcxx(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for, tc="gcc")
    (step,) = commands(plan, "proxy")
    assert "BAZEL_CONFIG_REL=--config=release" in step.argv
    assert step.env["CC"].endswith("/toolchain/aarch64/bin/gcc") and step.env["BAZEL_COMPILER"] == "gcc"


def test_cross_toolchains(settings_for) -> None:  # type: ignore[no-untyped-def]
    gcc, _ = plan_for(settings_for, version="example", tc="gcc", host=Arch.X86_64)
    assert gcc.mode.value == "cross"
    assert commands(gcc, "toolchain")[0].argv[0] == "aarch64-linux-gnu-gcc"
    links, make = gcc.stage("proxy").steps[0], commands(gcc, "proxy")[0]
    assert isinstance(links, CrossLinks) and isinstance(make, Command)
    assert make.env["CC"].endswith("/toolchain/aarch64/bin/aarch64-linux-gnu-gcc")
    assert make.env["AR"].endswith("/toolchain/aarch64/bin/aarch64-linux-gnu-ar")
    clang, _ = plan_for(settings_for, version="example", tc="clang", host=Arch.X86_64)
    links, make = clang.stage("proxy").steps[0], commands(clang, "proxy")[0]
    assert isinstance(links, CrossLinks) and isinstance(make, Command)
    assert ("aarch64-linux-gnu-clang", "clang") in links.links
    assert "--target=aarch64-linux-gnu" in make.env["CFLAGS"]
    # no aarch64 libc++ next to the host's: a clang cross build links libstdc++
    assert "BAZEL_CONFIG_REL=--config=clang --config=release" in make.argv
    assert any("qemu" in n for n in clang.notes)


def test_private_envoy_is_explained(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for, version="1.5.7")
    assert any("istio-private/envoy" in n and "istio/envoy" in n for n in plan.notes)
    envoy = plan.stage("checkout").steps[1]
    assert isinstance(envoy, CheckoutPin) and envoy.url == "https://github.com/istio/envoy"


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
    urls = [s.url for s in plan.stage("checkout").steps if isinstance(s, CheckoutPin)]
    assert urls[0] == "/srv/mirror/proxy" and urls[1] == "https://example.org/envoy.git"
    assert "--jobs=3" in commands(plan, "proxy")[0].argv[2]
    assert "HUB=registry.local:5000/me" in commands(plan, "images")[1].argv
    assert all(i.startswith("registry.local:5000/me/") for i in plan.stage("verify").images)
    assert plan.tag == "t1"
    assert "discolix/cc:latest" in plan.stage("patch").steps[0].render()


def test_credentials_never_reach_the_plan(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(
        settings_for,
        repos={"istio": "https://user:s3cr3t@git.example.com/istio"},
        remote_cache="https://cacheuser:c4che@cache.example.com/x",
        remote_header="X-Token=h3ader",
    )
    text = render(plan) + plan.dumps()
    for secret in ("s3cr3t", "c4che", "h3ader"):
        assert secret not in text
    assert "https://***@git.example.com/istio" in text
    startup = next(a for a in commands(plan, "proxy")[0].argv if a.startswith("BAZEL_STARTUP_ARGS="))
    assert "--bazelrc=" in startup and "/secrets/" in startup


def test_json_and_text(settings_for) -> None:  # type: ignore[no-untyped-def]
    plan, _ = plan_for(settings_for)
    data = json.loads(plan.dumps())
    assert data["release"] == "1.5.0" and data["arch"] == "aarch64"
    assert (data["host"], data["mode"]) == ("aarch64", "native")
    assert [s["name"] for s in data["stages"]][:2] == ["checkout", "patch"]
    assert data["stages"][0]["steps"][0]["action"] == "CheckoutPin"
    assert data["stages"][3]["steps"][-2]["command"].startswith("(cd ")
    text = render(plan)
    assert text.splitlines()[0].startswith("release 1.5.0  arch aarch64 (host aarch64)  mode native  ")
    assert "override_repository=envoy=" in text and "patches/envoy/wee8-1.5/0001" in text


def test_plan_is_deterministic(settings_for) -> None:  # type: ignore[no-untyped-def]
    a, _ = plan_for(settings_for)
    b, _ = plan_for(settings_for)
    assert a == b and a.dumps() == b.dumps()

"""Release metadata, a build under the workdir and the shared cache, the toolchain it really uses (docs/metadata.md).

The plan tests are pure. The miniature tests run the real mechanisms of the example repositories
(istio's gobuild.sh with BUILDINFO or report_build_info.sh, Makefile.core.mk's `VERSION ?=` and
`GOPATH ?=`, the proxy's parse-time `bazel info` and its PATH) with real make and Go, first the way
the build ran before (to show the failure the real trees have), then with the plan.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from helpers import execute
from istiobuild import patches as patchmod
from istiobuild import release, toolchain
from istiobuild.arch import Arch, host_arch
from istiobuild.plan import BuildPlan, make_plan
from istiobuild.release import Component
from istiobuild.resources import relative
from istiobuild.stages import proxy, record, verify
from istiobuild.stages.istio import CheckVersions, WriteBuildInfo, buildinfo_lines
from istiobuild.steps import Command

HOST = host_arch()
# What the plan adds to the environment of istio's make (everything else is what it had before).
NEW_ISTIO_ENV = {
    "BUILDINFO", "VERSION", "GOPATH", "GOBIN", "GOCACHE", "GOMODCACHE", "GOFLAGS", "GOENV", "GO111MODULE",
    "GOTOOLCHAIN", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME",
}  # fmt: skip


def plan_for(settings_for: Any, version: str = "1.5.0", arch: Arch = Arch.AARCH64, **cfg: Any) -> BuildPlan:
    return make_plan(release.get(version), arch, toolchain.get("clang"), settings_for(**cfg), host=arch)


def command(plan: BuildPlan, stage: str, first: str) -> Command:
    return next(s for s in plan.stage(stage).steps if isinstance(s, Command) and s.argv[1] == first)


# -- the plan (pure) ----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_subprocess")
def test_status_names_the_series_and_a_pristine_tree_is_clean(settings_for: Any) -> None:
    plan = plan_for(settings_for, "example", HOST)
    meta = plan.stage("record").steps[0].metadata  # type: ignore[attr-defined]
    rel = release.get("example")
    lines = [
        f"{c.value} {relative(p.path)} {hashlib.sha256(p.path.read_bytes()).hexdigest()}"
        for c in (Component.PROXY, Component.ENVOY)
        for p in patchmod.select(rel, c, HOST)
    ]
    digest = hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()
    assert (meta.proxy_series, meta.proxy_status) == (digest, f"istiobuild-{digest[:12]}")
    assert meta.istio_status == f"istiobuild-{meta.istio_series[:12]}" and meta.istio_series != digest
    assert (meta.version, meta.tag, meta.istio_revision) == ("0.1.0", "0.1.0", rel.pins[Component.ISTIO].commit)
    # another arch applies other patches: another status
    other = plan_for(settings_for, "example", Arch.X86_64 if HOST is Arch.AARCH64 else Arch.AARCH64)
    assert other.stage("record").steps[0].metadata.proxy_status != meta.proxy_status  # type: ignore[attr-defined]
    # proxy 1.5.0 takes no patch on x86_64: the tree is the pinned release, and says so
    clean = plan_for(settings_for, "1.5.0", Arch.X86_64).stage("record").steps[0].metadata  # type: ignore[attr-defined]
    assert (clean.proxy_status, clean.proxy_series) == ("Clean", "")


@pytest.mark.usefixtures("no_subprocess")
@pytest.mark.parametrize("version", ["1.5.0", "1.4.7"])
def test_the_plan_stamps_every_binary_with_the_release(settings_for: Any, version: str) -> None:
    plan = plan_for(settings_for, version)
    pins = release.get(version).pins
    (write,) = [s for s in plan.stage("istio").steps if isinstance(s, WriteBuildInfo)]
    meta = write.metadata
    assert meta.istio_status.startswith("istiobuild-") and meta.proxy_status.startswith("istiobuild-")
    assert buildinfo_lines(meta, meta.istio_status) == [
        f"istio.io/pkg/version.buildVersion={version}",
        f"istio.io/pkg/version.buildGitRevision={pins[Component.ISTIO].commit}",
        f"istio.io/pkg/version.buildStatus={meta.istio_status}",
        f"istio.io/pkg/version.buildTag={version}",
        "istio.io/pkg/version.buildHub=istio",
    ]
    build = command(plan, "istio", "build")
    assert build.env["BUILDINFO"] == str(write.path) and build.env["VERSION"] == version
    for images in (command(plan, "images", "docker.base"), command(plan, "images", "docker")):
        assert images.env["BUILDINFO"] == str(write.path) and images.env["VERSION"] == version
    (check,) = [s for s in plan.stage("istio").steps if isinstance(s, CheckVersions)]
    assert check.expect["Version"] == version and check.expect["BuildStatus"] == meta.istio_status
    # envoy: our workspace status (the proxy pin, our series), checked after the build
    make = command(plan, "proxy", "build_envoy")
    args = next(a for a in make.argv if a.startswith("BAZEL_BUILD_ARGS=")).split()
    assert f"--workspace_status_command={plan.layout.workspace_status}" in args
    (status,) = [s for s in plan.stage("proxy").steps if isinstance(s, proxy.WriteWorkspaceStatus)]
    assert (status.revision, status.status) == (pins[Component.PROXY].commit, meta.proxy_status)
    (collect,) = [s for s in plan.stage("proxy").steps if isinstance(s, proxy.CollectEnvoy)]
    assert collect.expect == {"revision": pins[Component.PROXY].commit, "status": meta.proxy_status}
    # verify compares each image's reports with the same values
    (check_images,) = [s for s in plan.stage("verify").steps if isinstance(s, verify.VerifyImages)]
    assert check_images.expect.istio == check.expect and check_images.expect.envoy == collect.expect
    assert check_images.expect.env == {
        "ISTIO_META_ISTIO_VERSION": version,
        "ISTIO_META_ISTIO_PROXY_SHA": f"istio-proxy:{pins[Component.PROXY].commit}",
    }


def _paths(command: Command) -> dict[str, Path]:
    """Every absolute path a command hands its children: env values and `--opt=/path`, `K:=/dir:...` arguments."""
    found = {k: v for k, v in command.env.items() if v.startswith("/")}
    words = [w for arg in command.argv for w in arg.split()]
    found |= {m[1]: m[2] for w in words if (m := re.match(r"(.*?[=:])(/[^:=]+)", w))}
    return {k: Path(v) for k, v in found.items()}


@pytest.mark.usefixtures("no_subprocess")
@pytest.mark.parametrize("version", ["1.5.0", "1.4.7", "example"])
def test_everything_under_the_workdir_or_the_cache_and_nothing_from_the_caller(settings_for: Any, version: str) -> None:
    plan = plan_for(settings_for, version, HOST if version == "example" else Arch.AARCH64)
    work, cache, layout = Path(plan.workdir), plan.layout.cache, plan.layout
    assert cache == Path(os.environ["XDG_CACHE_HOME"]) / "istiobuild" and not cache.is_relative_to(work)
    build, make = command(plan, "istio", "build"), command(plan, "proxy", "build_envoy")
    docker = command(plan, "images", "docker")
    # nothing the make children are told to write or read lies outside the workdir and the shared cache
    for step in (build, make, docker):
        for name, path in _paths(step).items():
            assert path.is_relative_to(work) or path.is_relative_to(cache) or str(path) == os.devnull, (name, path)
    # set explicitly (so a caller's value cannot win): what is this workdir's under the workdir ...
    for key in ("GOPATH", "GOBIN", "HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        assert Path(build.env[key]).is_relative_to(work), key
    for key in ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        assert Path(make.env[key]).is_relative_to(work), key
    assert build.env["GOPATH"] == str(layout.gopath) and build.env["GOBIN"] == str(layout.gopath / "bin")
    assert make.env["HOME"] == build.env["HOME"] == str(layout.home)
    startup = next(a for a in make.argv if a.startswith("BAZEL_STARTUP_ARGS=")).split("=", 1)[1].split()
    assert f"--output_user_root={layout.bazel_root}" in startup and layout.bazel_root.is_relative_to(work)
    # ... what is content-addressed (Go's caches, bazel's, bazelisk's downloads) in the cache every workdir shares
    assert (build.env["GOCACHE"], build.env["GOMODCACHE"]) == (str(cache / "go/build"), str(cache / "go/mod"))
    assert make.env["BAZELISK_HOME"] == str(cache / "bazelisk")
    args = next(a for a in make.argv if a.startswith("BAZEL_BUILD_ARGS=")).split("=", 1)[1].split()
    assert f"--disk_cache={cache / 'bazel-disk'}" in args and f"--repository_cache={cache / 'bazel-repo'}" in args
    # and none of the caller's Go or bazel settings
    assert (build.env["GOFLAGS"], build.env["GOENV"], build.env["GOTOOLCHAIN"]) == ("", "off", "local")
    assert make.env["USE_BAZEL_VERSION"] == release.get(version).bazel_version
    # images keep the caller's HOME (docker's config), but not the caller's Go
    assert "HOME" not in docker.env and docker.env["GOPATH"] == build.env["GOPATH"]
    assert docker.env["GOCACHE"] == build.env["GOCACHE"] and docker.env["GOFLAGS"] == ""
    # cache_dir moves exactly the shared part; the workdir's own stays where it was
    moved = plan_for(settings_for, version, plan.arch, cache_dir=str(work.parent / "elsewhere"))
    assert command(moved, "istio", "build").env["GOCACHE"] == str(work.parent / "elsewhere" / "go" / "build")
    assert (moved.layout.home, moved.layout.bazel_root) == (layout.home, layout.bazel_root)


@pytest.mark.usefixtures("no_subprocess")
def test_the_toolchain_checked_is_the_toolchain_on_path(settings_for: Any) -> None:
    plan = plan_for(settings_for, "1.5.0")
    make = command(plan, "proxy", "build_envoy")
    bindir = plan.layout.toolchain_bin
    # a command-line PATH overrides the Makefile's `PATH := /usr/lib/llvm-9/bin:$(PATH)`
    assert f"PATH:={bindir}:$(PATH)" in make.argv
    links = plan.stage("proxy").steps[0]
    assert isinstance(links, proxy.CrossLinks) and links.bindir == bindir
    assert dict(links.links) == {"clang": "clang", "clang++": "clang++", "llvm-ar": "llvm-ar", "llvm-nm": "llvm-nm"}
    assert {k: make.env[k] for k in proxy.TOOLS} == {
        "CC": f"{bindir}/clang", "CXX": f"{bindir}/clang++", "AR": f"{bindir}/llvm-ar", "NM": f"{bindir}/llvm-nm"
    }  # fmt: skip
    args = next(a for a in make.argv if a.startswith("BAZEL_BUILD_ARGS=")).split()
    assert "--action_env=AR" in args and "--action_env=NM" in args
    (report,) = [s for s in plan.stage("proxy").steps if isinstance(s, proxy.ReportToolchain)]
    assert report.command.env == make.env and report.record == plan.layout.record("proxy-toolchain")
    # in a builder container the names resolve on the builder's PATH; the Makefile's still loses
    boxed = plan_for(settings_for, "1.5.0", in_container=True, builder="b:1")
    assert not any(isinstance(s, proxy.CrossLinks) for s in boxed.stage("proxy").steps)
    assert "PATH:=$(PATH)" in next(s for s in boxed.stage("proxy").steps if isinstance(s, Command)).argv


def test_reported_versions_are_parsed_and_compared() -> None:
    long_form = (
        'version.BuildInfo{Version:"1.5.0", GitRevision:"c3c3", GolangVersion:"go1.13.8", '
        'BuildStatus:"istiobuild-0123456789ab", GitTag:"1.5.0"}'
    )
    got = record.istio_reported(long_form)
    assert got == {
        "Version": "1.5.0", "GitRevision": "c3c3", "GolangVersion": "go1.13.8",
        "BuildStatus": "istiobuild-0123456789ab", "GitTag": "1.5.0",
    }  # fmt: skip
    want = {"Version": "1.5.0", "GitRevision": "c3c3", "BuildStatus": "istiobuild-0123456789ab", "GitTag": "1.5.0"}
    assert record.mismatches(got, want) == []
    assert record.mismatches({**got, "BuildStatus": "Modified"}, want) == [
        "BuildStatus 'Modified' (expected 'istiobuild-0123456789ab')"
    ]
    edited = {**got, "BuildStatus": "istiobuild-0123456789ab-modified"}
    assert record.mismatches(edited, want) and not record.mismatches(edited, want, modified_ok=True)
    envoy = "\nenvoy  version: 73f2/1.13.1-dev/istiobuild-0123456789ab/RELEASE/BoringSSL\n"
    assert record.envoy_reported(envoy) == {
        "revision": "73f2", "version": "1.13.1-dev", "status": "istiobuild-0123456789ab", "type": "RELEASE"
    }  # fmt: skip
    assert record.envoy_reported("envoy  version: 73f2/1.13.1-dev/Modified/RELEASE/BoringSSL")["status"] == "Modified"
    text = proxy.parse_report(
        "@@ CC\tclang\t/usr/bin/clang\t/usr/lib/llvm-14/bin/clang\nDebian clang version 14.0.6\nTarget: x\n"
        "@@ AR\tllvm-ar\t/usr/bin/llvm-ar\t/usr/lib/llvm-14/bin/llvm-ar\nLLVM (http://llvm.org/):\n"
        "  LLVM version 14.0.6\n"
    )
    assert text["CC"]["version"] == "Debian clang version 14.0.6" and text["AR"]["version"] == "LLVM version 14.0.6"
    assert text["AR"]["resolved"] == "/usr/lib/llvm-14/bin/llvm-ar"


class _Container:
    """A created container that prints a fixed text and exits 0."""

    def __init__(self, text: str) -> None:
        self.text = text

    def start(self) -> None:
        pass

    def wait(self) -> dict[str, int]:
        return {"StatusCode": 0}

    def logs(self, **_: Any) -> bytes:
        return self.text.encode()

    def remove(self, **_: Any) -> None:
        pass


class _Containers:
    """docker's containers API, answering `<binary> version` with a fixed text."""

    def __init__(self, answers: Mapping[str, str]) -> None:
        self.answers = answers

    def create(self, image: str, *, entrypoint: list[str], command: list[str], **_: Any) -> _Container:
        return _Container(self.answers[entrypoint[0]])


def test_verify_compares_what_each_image_reports(settings_for: Any) -> None:
    plan = plan_for(settings_for, "1.5.0")
    (check,) = [s for s in plan.stage("verify").steps if isinstance(s, verify.VerifyImages)]
    expect, pins = check.expect, release.get("1.5.0").pins
    status = expect.istio["BuildStatus"]
    right = f'version.BuildInfo{{Version:"1.5.0", GitRevision:"{pins[Component.ISTIO].commit}", GolangVersion:"go1", '
    cli = type("Cli", (), {"containers": _Containers({
        "/usr/local/bin/pilot-discovery": right + f'BuildStatus:"{status}", GitTag:"1.5.0"}}',
        "/usr/local/bin/pilot-agent": right + 'BuildStatus:"Modified", GitTag:""}',
        "/usr/local/bin/envoy": f"envoy  version: {pins[Component.PROXY].commit}/1.13.1-dev/"
        f"{expect.envoy['status']}/RELEASE/BoringSSL",
    })})()  # fmt: skip
    ok = verify._istio_version(cli, "i", Arch.AARCH64, "/usr/local/bin/pilot-discovery", ("version",), expect)
    assert ok.ok and ok.reported is not None and ok.reported["BuildStatus"] == status
    bad = verify._istio_version(cli, "i", Arch.AARCH64, "/usr/local/bin/pilot-agent", ("version",), expect)
    assert not bad.ok and "BuildStatus 'Modified'" in bad.what and "GitTag ''" in bad.what
    envoy = verify._envoy_version(cli, "i", Arch.AARCH64, "/usr/local/bin/envoy", expect)
    assert envoy.ok and envoy.what.startswith("envoy --version: envoy  version:")
    config = {"Config": {"Env": ["PATH=/bin", "ISTIO_META_ISTIO_VERSION=1.5-dev"]}}
    (env,) = verify._config_versions("i", config, expect)
    assert not env.ok and "ISTIO_META_ISTIO_VERSION '1.5-dev' (expected '1.5.0')" in env.what
    assert verify._config_versions("i", {"Config": {"Env": ["PATH=/bin"]}}, expect) == []
    # an image verified without a plan (`invoke verify`) reports, and checks nothing
    (plain,) = verify._config_versions("i", config, None)
    assert plain.ok and plain.reported == {"ISTIO_META_ISTIO_VERSION": "1.5-dev"}


# -- the miniature, before and after ------------------------------------------------------------------------


def _git_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "ISTIOBUILD_"))}
    env.update(HOME=str(tmp), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    return env


def _checkout(upstream: Path, component: Component, dest: Path, *, patched: bool) -> Path:
    """The pinned commit fetched by SHA (no tags, as istiobuild's checkout), optionally with its series."""
    env = _git_env(dest.parent)
    commit = release.get("example").pins[component].commit
    for args in (
        ["init", "--quiet", str(dest)],
        ["-C", str(dest), "fetch", "--quiet", "--depth=1", (upstream / component.value).as_uri(), commit],
        ["-C", str(dest), "checkout", "--quiet", "--detach", "FETCH_HEAD"],
    ):
        subprocess.run(["git", *args], env=env, check=True, capture_output=True)
    for patch in patchmod.select(release.get("example"), component, HOST) if patched else ():
        subprocess.run(["git", "-C", str(dest), "apply", str(patch.path)], env=env, check=True, capture_output=True)
    return dest


def _caller(tmp: Path, **extra: str) -> dict[str, str]:
    """The caller's environment: its own HOME, and whatever else it sets."""
    home = tmp / "caller-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GO", "ISTIOBUILD_", "XDG_", "BAZEL"))}
    return {**env, "HOME": str(home), **extra}


def _make(cwd: Path, argv: list[str], env: Mapping[str, str]) -> str:
    proc = subprocess.run(
        ["make", *argv], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def _reported(binary: Path) -> dict[str, str]:
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=True).stdout
    return record.istio_reported(out)


@pytest.fixture
def example_plan(settings_for: Any, tmp_path: Path) -> tuple[BuildPlan, Any]:
    settings = settings_for(workdir=str(tmp_path / "work"))
    plan = make_plan(release.get("example"), HOST, toolchain.get("gcc"), settings, host=HOST)
    envoy = plan.layout.artifacts / "envoy"  # what the proxy stage collected (init.sh only copies it)
    envoy.parent.mkdir(parents=True)
    envoy.write_text("#!/bin/sh\necho envoy\n")
    return plan, settings


def _files_beside_workdir(tmp: Path) -> set[str]:
    return {p.name for p in tmp.iterdir()} - {"work", "caller-home"}


@pytest.mark.slow
def test_miniature_istio_reports_dirty_dev_and_writes_outside_before(
    example_upstream: Path, example_plan: tuple[BuildPlan, Any], tmp_path: Path
) -> None:
    """The plan's make build as it was (no BUILDINFO, VERSION, GOPATH, HOME): upstream's own defaults win."""
    plan, _ = example_plan
    istio = _checkout(example_upstream, Component.ISTIO, tmp_path / "work" / "example" / "istio", patched=True)
    build = command(plan, "istio", "build")
    before = {k: v for k, v in build.env.items() if k not in NEW_ISTIO_ENV}
    _make(istio, ["build"], {**_caller(tmp_path), **before})
    commit = release.get("example").pins[Component.ISTIO].commit
    reported = _reported(istio / "out" / f"linux_{HOST.goarch}" / "pilot-discovery")
    # report_build_info.sh on our patched checkout, fetched without tags
    assert (reported["Version"], reported["GitRevision"]) == (f"{commit}-dirty", f"{commit}-dirty")
    assert (reported["BuildStatus"], reported["GitTag"]) == ("Modified", "")
    # GOPATH defaulted to <workdir>/..: init.sh put envoy into its bin/; Go's cache went to the caller's HOME
    assert _files_beside_workdir(tmp_path) == {"bin"} and (tmp_path / "bin" / "envoy").is_file()
    assert (tmp_path / "caller-home" / ".cache" / "go-build").is_dir()
    # the images would say they are the development version
    docker = command(plan, "images", "docker")
    images = {k: v for k, v in docker.env.items() if k not in NEW_ISTIO_ENV}
    assert "--build-arg istio_version=0.1-dev" in _make(
        istio, ["-n", *docker.argv[1:]], {**_caller(tmp_path), **images}
    )


@pytest.mark.slow
def test_miniature_istio_reports_the_release_under_the_workdir_with_the_plan(
    example_upstream: Path, example_plan: tuple[BuildPlan, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The istio stage as planned, by the executor, for a caller whose own Go settings would break the build."""
    plan, settings = example_plan
    istio = _checkout(example_upstream, Component.ISTIO, tmp_path / "work" / "example" / "istio", patched=True)
    caller = _caller(
        tmp_path, GOPATH=str(tmp_path / "caller-gopath"), GOFLAGS="-mod=vendor", GOBIN=str(tmp_path / "caller-bin"),
        GOCACHE=str(tmp_path / "caller-gocache"), USE_BAZEL_VERSION="0.1.0", GOTOOLCHAIN="go1.99.0",
    )  # fmt: skip
    monkeypatch.setattr(os, "environ", caller)
    execute(plan, "istio", settings, release.get("example"))  # CheckVersions compares with the plan itself
    monkeypatch.undo()
    meta = next(s for s in plan.stage("istio").steps if isinstance(s, WriteBuildInfo)).metadata
    pins = release.get("example").pins
    for name in ("pilot-discovery", "pilot-agent"):
        reported = _reported(istio / "out" / f"linux_{HOST.goarch}" / name)
        assert {k: v for k, v in reported.items() if k != "GolangVersion"} == {
            "Version": "0.1.0", "GitRevision": pins[Component.ISTIO].commit,
            "BuildStatus": meta.istio_status, "GitTag": "0.1.0",
        }, name  # fmt: skip
    # nothing beside the workdir, nothing in the caller's home; GOPATH/bin is the plan's
    assert _files_beside_workdir(tmp_path) == set()
    assert list((tmp_path / "caller-home").iterdir()) == []
    assert (plan.layout.gopath / "bin" / "envoy").is_file() and plan.layout.go_build_cache.is_dir()
    docker = command(plan, "images", "docker")
    assert "--build-arg istio_version=0.1.0" in _make(istio, ["-n", *docker.argv[1:]], {**caller, **docker.env})


def _stub_bazel(tmp: Path) -> tuple[Path, Path]:
    """A `bazel` that logs its arguments (and answers `info output_path`)."""
    box, log = tmp / "stub-bin", tmp / "bazel-calls.log"
    box.mkdir()
    (box / "bazel").write_text(f'#!/bin/sh\necho "bazel $*" >> {log}\necho /nonexistent/bazel-out\n')
    (box / "bazel").chmod(0o755)
    return box, log


@pytest.mark.slow
@pytest.mark.parametrize("patched", [False, True])
def test_miniature_proxy_parse_time_bazel_info(
    example_upstream: Path, example_plan: tuple[BuildPlan, Any], tmp_path: Path, patched: bool
) -> None:
    """As proxy 1.4.x: unpatched, parsing the Makefile runs `bazel info` without the plan's startup options (a
    second bazel server, in the default output root); the series makes it lazy, with the startup options."""
    plan, _ = example_plan
    checkout = _checkout(example_upstream, Component.PROXY, tmp_path / "work" / "example" / "proxy", patched=patched)
    box, log = _stub_bazel(tmp_path)
    make = command(plan, "proxy", "build_envoy")
    env = {**_caller(tmp_path), **make.env}
    env["PATH"] = f"{box}:{env['PATH']}"
    _make(checkout, ["-n", *make.argv[1:]], env)
    calls = log.read_text().splitlines() if log.exists() else []
    startup = next(a for a in make.argv if a.startswith("BAZEL_STARTUP_ARGS=")).split("=", 1)[1]
    if not patched:
        assert calls == [f"bazel info {make.argv[2].removeprefix('BAZEL_BUILD_ARGS=')} output_path"]
        return
    assert calls == []  # build_envoy starts no bazel while make parses
    _make(checkout, ["-n", "test", *make.argv[2:]], env)  # the target that uses the value: the build's server
    assert log.read_text().splitlines() == [
        f"bazel {startup} info {make.argv[2].removeprefix('BAZEL_BUILD_ARGS=')} output_path"
    ]


@pytest.mark.slow
def test_miniature_proxy_path_puts_the_profile_first(
    example_upstream: Path, example_plan: tuple[BuildPlan, Any], tmp_path: Path
) -> None:
    """The Makefile prepends /usr/lib/llvm-9/bin to PATH; the plan's command-line PATH wins over it."""
    plan, _ = example_plan
    checkout = _checkout(example_upstream, Component.PROXY, tmp_path / "work" / "example" / "proxy", patched=True)
    make = command(plan, "proxy", "build_envoy")
    env = {**_caller(tmp_path), **make.env}
    old = [a for a in make.argv if not a.startswith("PATH:=")]
    assert "export PATH=/usr/lib/llvm-9/bin:" in _make(checkout, ["-n", *old[1:]], env)
    now = _make(checkout, ["-n", *make.argv[1:]], env)
    assert f"export PATH={plan.layout.toolchain_bin}:{os.environ['PATH']} CC={make.env['CC']} " in now


@pytest.mark.slow
def test_workspace_status_is_what_upstream_prints_with_our_values(tmp_path: Path, settings_for: Any) -> None:
    plan = plan_for(settings_for, "1.4.7")
    (status,) = [s for s in plan.stage("proxy").steps if isinstance(s, proxy.WriteWorkspaceStatus)]
    script = tmp_path / "status"
    script.write_text(proxy.WORKSPACE_STATUS.format(revision=status.revision, status=status.status))
    script.chmod(0o755)
    out = subprocess.run([str(script)], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    # the keys of proxy 1.4.x/1.5.x tools/bazel_get_workspace_status, never git's Clean/Modified
    assert out.splitlines() == [
        f"BUILD_SCM_REVISION {release.get('1.4.7').pins[Component.PROXY].commit}",
        f"BUILD_SCM_STATUS {status.status}",
        "BUILD_CONFIG default",
        "DOCKER_REPOSITORY istio-testing/envoy",
    ]
    assert "git" not in "".join(line for line in proxy.WORKSPACE_STATUS.splitlines() if not line.startswith("#"))

"""Build modes: native, cross (only where the release's build supports it), emulated; the rest is refused.

The plan-only tests cover every (host, target, release line, --in-container) combination and start no
process. The end-to-end ones show, on the miniature, the real mechanisms that make a cross build of
1.4/1.5 wrong (wee8's target_cpu and 1.4's GOARCH_LOCAL from `uname -m`): with the example series
as the real ones are (without envoy 0003a and istio 0003) an x86_64 host's aarch64 build links a wee8
configured for x64 and puts amd64 Go binaries into the arm64 images, which only the verify stage
notices; with the example series the same build is right.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO, invoke, one_error
from istiobuild import doctor, procs, release, toolchain
from istiobuild.arch import Arch
from istiobuild.config import Settings
from istiobuild.errors import DataError, UsageError
from istiobuild.layout import Layout
from istiobuild.modes import Mode, decide
from istiobuild.plan import make_plan, render
from istiobuild.steps import Command, StageName

A, X = Arch.AARCH64, Arch.X86_64
BUILDER = "istiobuild/builder:test"
REFUSED = (
    "cross-building {release} for {target} on {host} is not supported: run on an {target} host, "
    "or use --in-container --builder <{goarch} builder> (emulated, ~10x slower)"
)
# (host, target, release, --in-container) -> mode, or None: refused with REFUSED
TABLE = [
    (X, X, "example", False, Mode.NATIVE), (A, A, "example", False, Mode.NATIVE),
    (X, A, "example", False, Mode.CROSS), (A, X, "example", False, None),
    (X, X, "1.5.0", False, Mode.NATIVE), (A, A, "1.5.0", False, Mode.NATIVE),
    (X, A, "1.5.0", False, None), (A, X, "1.5.0", False, None),
    (X, X, "1.4.7", False, Mode.NATIVE), (A, A, "1.4.7", False, Mode.NATIVE),
    (X, A, "1.4.7", False, None), (A, X, "1.4.7", False, None),
    (X, X, "example", True, Mode.NATIVE), (A, A, "example", True, Mode.NATIVE),
    (X, A, "example", True, Mode.EMULATED), (A, X, "example", True, Mode.EMULATED),
    (X, X, "1.5.0", True, Mode.NATIVE), (A, A, "1.5.0", True, Mode.NATIVE),
    (X, A, "1.5.0", True, Mode.EMULATED), (A, X, "1.5.0", True, Mode.EMULATED),
    (X, X, "1.4.7", True, Mode.NATIVE), (A, A, "1.4.7", True, Mode.NATIVE),
    (X, A, "1.4.7", True, Mode.EMULATED), (A, X, "1.4.7", True, Mode.EMULATED),
]  # fmt: skip
SettingsFor = Callable[..., Settings]
HOST = Arch(platform.machine()) if platform.machine() in ("x86_64", "aarch64") else X
FOREIGN = A if HOST is X else X


def plan_for(settings_for: SettingsFor, version: str, target: Arch, host: Arch, in_container: bool = False) -> Any:
    extra = {"in_container": True, "builder": BUILDER} if in_container else {}
    return make_plan(release.get(version), target, toolchain.get("gcc"), settings_for(**extra), host=host)


def commands(plan: Any, stage: str) -> list[Command]:
    return [s for s in plan.stage(stage).steps if isinstance(s, Command)]


# -- the mode table (plan only) -------------------------------------------------------------------


@pytest.mark.usefixtures("no_subprocess")
@pytest.mark.parametrize(("host", "target", "version", "in_container", "mode"), TABLE)
def test_mode_table(
    settings_for: SettingsFor, host: Arch, target: Arch, version: str, in_container: bool, mode: Mode | None
) -> None:
    if mode is None:
        with pytest.raises(UsageError) as caught:
            plan_for(settings_for, version, target, host, in_container)
        line = REFUSED.format(release=version, target=target, host=host, goarch=target.goarch)
        assert caught.value.message == line and not caught.value.hint and caught.value.exit_code == 2
        assert caught.value.render() == f"error: {line}"  # one line
        return
    plan = plan_for(settings_for, version, target, host, in_container)
    assert (plan.mode, plan.host, plan.arch) == (mode, host, target)
    first = render(plan).splitlines()[0]
    assert first.startswith(f"release {version}  arch {target} (host {host})  mode {mode.value}  toolchain gcc")
    assert json.loads(plan.dumps())["mode"] == mode.value
    assert plan.notes[0].startswith(f"{mode.value}: ")


@pytest.mark.usefixtures("no_subprocess")
def test_decide_is_the_table() -> None:
    for host, target, version, in_container, mode in TABLE:
        rel = release.get(version)
        if mode is None:
            with pytest.raises(UsageError):
                decide(host=host, target=target, release=rel, in_container=in_container)
        else:
            assert decide(host=host, target=target, release=rel, in_container=in_container) is mode


@pytest.mark.usefixtures("no_subprocess")
def test_cross_support_is_release_data() -> None:
    matrix = release.matrix()
    assert matrix["example"].cross == (A,)
    assert all(r.cross == () for r in matrix.values() if r.line in ("1.4", "1.5"))


def test_cross_key_is_validated(tmp_path: Path) -> None:
    text = (REPO / "releases" / "example.toml").read_text()
    assert 'cross = ["aarch64"]' in text
    (tmp_path / "example.toml").write_text(text.replace('cross = ["aarch64"]', 'cross = ["sparc"]'))
    release.matrix.cache_clear()
    try:
        with pytest.raises(DataError, match="cross"):
            release.matrix(tmp_path)
        (tmp_path / "example.toml").write_text(text.replace('cross = ["aarch64"]', "cross = true"))
        with pytest.raises(DataError, match="cross"):
            release.matrix(tmp_path)
    finally:
        release.matrix.cache_clear()


# -- what each mode runs where (plan only) ---------------------------------------------------------


@pytest.mark.usefixtures("no_subprocess")
def test_emulated_runs_every_target_command_in_the_builder(settings_for: SettingsFor) -> None:
    plan = plan_for(settings_for, "1.5.0", A, X, in_container=True)
    wrapped = {StageName.TOOLCHAIN, StageName.PROXY, StageName.ISTIO, StageName.IMAGES}
    for stage in plan.stages:
        for cmd in commands(plan, stage.name.value):
            assert stage.name in wrapped, stage.name
            argv = list(cmd.argv)
            assert argv[:2] == ["docker", "run"] and argv[argv.index("--platform") + 1] == "linux/arm64"
            assert BUILDER in argv and not cmd.env  # the environment is passed with -e, explicitly
    assert all(commands(plan, s.value) for s in wrapped)
    base, docker = commands(plan, "images")
    for cmd in (base, docker):  # make docker runs build-linux again: in the builder, driving the host's daemon
        argv = list(cmd.argv)
        assert "/var/run/docker.sock:/var/run/docker.sock" in argv
        assert argv[argv.index(BUILDER) + 1 :][:2] in (["make", "docker.base"], ["make", "docker"])
        assert "-e" in argv and "GOARCH=arm64" in argv and "TARGET_ARCH=arm64" in argv
    assert "~10x" in plan.notes[0] and "qemu" in plan.notes[0]
    assert "docker.sock" not in " ".join(a for c in commands(plan, "proxy") for a in c.argv)
    # inside the builder the target is native: no cross compiler, no --target
    assert "aarch64-linux-gnu-" not in commands(plan, "toolchain")[0].render()


@pytest.mark.usefixtures("no_subprocess")
def test_native_in_a_builder_keeps_images_on_the_host(settings_for: SettingsFor) -> None:
    plan = plan_for(settings_for, "1.5.0", A, A, in_container=True)
    assert plan.mode is Mode.NATIVE
    assert all(c.argv[:2] == ("docker", "run") for s in ("toolchain", "proxy", "istio") for c in commands(plan, s))
    assert [c.argv[:2] for c in commands(plan, "images")] == [("make", "docker.base"), ("make", "docker")]


@pytest.mark.usefixtures("no_subprocess")
def test_cross_example_takes_its_target_from_the_plan(settings_for: SettingsFor) -> None:
    plan = plan_for(settings_for, "example", A, X)
    assert plan.mode is Mode.CROSS
    (apply,) = plan.stage("patch").steps
    names = {s.component.value: [p.name for p in s.patches] for s in apply.series}  # type: ignore[attr-defined]
    assert "0003a-wee8-target-cpu-from-the-build.patch" in names["envoy"]
    assert "0003-goarch-local-from-target-arch.patch" in names["istio"]
    (make,) = commands(plan, "proxy")
    assert make.env["CC"].endswith("/aarch64-linux-gnu-gcc")  # what the wee8 genrule takes its target from
    assert commands(plan, "istio")[0].env["TARGET_ARCH"] == "arm64"
    assert all(c.argv[0] != "docker" for s in plan.stages for c in commands(plan, s.name.value))


@pytest.mark.usefixtures("no_subprocess")
def test_doctor_row(settings_for: SettingsFor) -> None:
    plain, boxed = settings_for(), settings_for(in_container=True, builder=BUILDER)
    rows = {
        "native": doctor._mode(A, A, release.get("1.5.0"), plain),
        "cross": doctor._mode(A, X, release.get("example"), plain),
        "emulated": doctor._mode(A, X, release.get("1.5.0"), boxed),
        "refused": doctor._mode(A, X, release.get("1.5.0"), plain),
    }
    assert all(r.name == "build mode" for r in rows.values())
    assert rows["native"].ok and rows["native"].found == "native aarch64"
    assert rows["cross"].ok and rows["cross"].found == "cross x86_64 -> aarch64"
    assert rows["emulated"].ok and rows["emulated"].found == "emulated aarch64 on x86_64: ~10x slower"
    assert not rows["refused"].ok
    assert rows["refused"].fix == "run on an aarch64 host, or use --in-container --builder <arm64 builder> " \
        "(emulated, ~10x slower)"  # fmt: skip


# -- the command line ------------------------------------------------------------------------------


def test_build_of_a_real_release_for_a_foreign_arch_stops_before_any_work(tmp_path: Path) -> None:
    work = tmp_path / "w"
    proc = invoke("build", "--release", "1.5.0", "--arch", FOREIGN.value, "--workdir", str(work))
    assert proc.returncode == 2
    line = REFUSED.format(release="1.5.0", target=FOREIGN, host=HOST, goarch=FOREIGN.goarch)
    assert one_error(proc) == f"error: {line}"
    assert not work.exists()
    assert proc.stdout == "" and proc.stderr.strip() == f"error: {line}"  # nothing started, nothing else said


def test_plan_and_doctor_show_the_mode(tmp_path: Path) -> None:
    work = ("--workdir", str(tmp_path / "w"))
    native = invoke("plan", "--release", "1.5.0", "--arch", HOST.value, *work)
    assert native.returncode == 0, native.stderr
    assert f"(host {HOST})  mode native  " in native.stdout.splitlines()[0]
    emulated = invoke("plan", "--release", "1.4.7", "--arch", FOREIGN.value, "--in-container", "--builder", BUILDER,
                      "--json", *work)  # fmt: skip
    assert emulated.returncode == 0, emulated.stderr
    assert json.loads(emulated.stdout)["mode"] == "emulated"
    refused = invoke("plan", "--release", "1.4.7", "--arch", FOREIGN.value, *work)
    assert one_error(refused).startswith("error: cross-building 1.4.7 for ") and refused.returncode == 2
    if HOST is X:
        cross = invoke("plan", "--release", "example", "--arch", "aarch64", *work)
        assert "  mode cross  " in cross.stdout.splitlines()[0]
    checks = json.loads(invoke("doctor", "--release", "example", "--arch", HOST.value, "--json", *work).stdout)
    assert {"name": "build mode", "found": f"native {HOST}"}.items() <= checks[0].items()
    assert not (tmp_path / "w").exists()


# -- the miniature reproduces the real mechanisms, and the example's cross build is right ----------

needs_x86_64 = pytest.mark.skipif(HOST is not X, reason="the example cross-builds from an x86_64 host")


def _build(work: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    args = ("--release", "example", "--arch", "aarch64", "--toolchain", "gcc", "--workdir", str(work))
    return invoke("build", *args, *extra, env={"ISTIOBUILD_CACHE_DIR": str(cache)})


def _bazel_root(work: Path, cache: Path) -> Path:
    """The workdir's own bazel output root (its servers, its output bases), not the shared cache."""
    return Layout(workdir=work, cache=cache, release="example", arch=A).bazel_root


def _stop_bazel(work: Path, cache: Path) -> None:
    procs.stop_bazel_servers(_bazel_root(work, cache))


def _wee8(work: Path, cache: Path) -> tuple[str, set[int]]:
    """What the envoy says its wee8 was built for (run without arguments), and the ELF machines of wee8's objects."""
    envoy = work / "example-aarch64" / "artifacts" / "envoy"
    out = subprocess.run(["qemu-aarch64-static", str(envoy)], capture_output=True, text=True, check=True).stdout
    cpu = out.rsplit("(target_cpu ", 1)[1].split(")")[0]
    (archive,) = _bazel_root(work, cache).glob("*/execroot/io_istio_proxy/bazel-out/*/bin/external/*/libwee8.a")
    machines, data, offset = set(), archive.read_bytes(), 8  # "!<arch>\n", then 60-byte member headers
    while offset + 60 <= len(data):
        size = int(data[offset + 48 : offset + 58])
        body = data[offset + 60 : offset + 60 + size]
        if body[:4] == b"\x7fELF":
            machines.add(int.from_bytes(body[18:20], "little"))
        offset += 60 + size + (size % 2)
    return cpu, machines


def _undo(checkout: Path, patch: str) -> None:
    subprocess.run(["git", "apply", "-R", str(REPO / "patches" / patch)], cwd=checkout, check=True)


@pytest.mark.slow
@needs_x86_64
def test_the_example_cross_builds_for_aarch64(tmp_path: Path) -> None:
    """The whole build is tests/test_example_build.py's; here: the wee8 inside the cross-built envoy."""
    work, cache = tmp_path / "w", tmp_path / "cache"
    try:
        proc = _build(work, cache, "--to", "proxy")
        assert proc.returncode == 0, proc.stderr
        assert _wee8(work, cache) == ("arm64", {183})  # wee8 configured for arm64, its objects aarch64 (EM_AARCH64)
    finally:
        _stop_bazel(work, cache)


@pytest.mark.slow
@needs_x86_64
def test_without_the_cross_patches_the_example_goes_wrong_like_the_real_tree(tmp_path: Path) -> None:
    """envoy 0003a and istio 0003 undone: the example series is what the real ones are (`uname -m`)."""
    work, cache = tmp_path / "w", tmp_path / "cache"
    try:
        assert _build(work, cache, "--to", "patch").returncode == 0
        _undo(work / "example" / "envoy", "envoy/example/0003a-wee8-target-cpu-from-the-build.patch")
        _undo(work / "example" / "istio", "istio/example/0003-goarch-local-from-target-arch.patch")
        proc = _build(work, cache, "--allow-modified")
        # wee8's target_cpu from `uname -m`: a wee8 configured for x64 (gn's target_cpu defaults to the host's)
        # in the aarch64 envoy, which is an aarch64 ELF and runs: the proxy stage notices nothing
        assert _wee8(work, cache) == ("x64", {183})
        # GOARCH_LOCAL from `uname -m`: `make build` honours GOARCH, so the istio stage's ELF check passed and
        # the images were built; build-linux (make docker) put amd64 Go binaries into them: verify notices
        stamps = work / "example-aarch64" / "stamps"
        assert all((stamps / f"{s}.json").is_file() for s in ("proxy", "istio", "images"))
        assert proc.returncode == 7, proc.stderr
        line = one_error(proc)
        assert line.startswith("error: stage verify failed: ") and "pilot-discovery is a x86_64 binary" in line, line
    finally:
        _stop_bazel(work, cache)


@pytest.mark.slow
@needs_x86_64
def test_the_miniature_istio_takes_goarch_local_from_uname(example_upstream: Path, tmp_path: Path) -> None:
    """1.4-style Makefile.core.mk: TARGET_ARCH and GOARCH have no effect on build-linux until istio 0003."""
    pin = release.get("example").pins[release.Component.ISTIO].commit
    envoy = tmp_path / "envoy"
    envoy.write_bytes(b"not really envoy\n")
    env = {"PATH": str(Path(shutil.which("go") or "go").parent) + ":/usr/bin:/bin", "HOME": str(tmp_path),
           "GOCACHE": str(tmp_path / "gocache"), "TARGET_ARCH": "arm64", "GOARCH": "arm64", "GOOS": "linux",
           "USE_LOCAL_PROXY": "1", "ISTIO_ENVOY_LOCAL": str(envoy), "ISTIO_ENVOY_LOCAL_PATH": str(envoy)}  # fmt: skip

    def build_linux(patches: list[str]) -> int:
        checkout = tmp_path / f"istio-{len(patches)}"
        subprocess.run(["git", "clone", "-q", str(example_upstream / "istio"), str(checkout)], check=True)
        subprocess.run(["git", "checkout", "-q", pin], cwd=checkout, check=True)
        for name in patches:
            subprocess.run(
                ["git", "apply", str(REPO / "patches" / "istio" / "example" / name)], cwd=checkout, check=True
            )
        proc = subprocess.run(
            ["make", "build-linux"], cwd=checkout, env=env, capture_output=True, text=True, check=False
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return int.from_bytes((checkout / "out" / "linux_arm64" / "pilot-discovery").read_bytes()[18:20], "little")

    assert build_linux(["0001-build-linux-target-arch.patch"]) == 62  # EM_X86_64 in out/linux_arm64
    assert build_linux(["0001-build-linux-target-arch.patch", "0003-goarch-local-from-target-arch.patch"]) == 183


@pytest.mark.slow
def test_emulated_images_stage_runs_make_docker_in_the_builder(settings_for: SettingsFor, tmp_path: Path) -> None:
    """The images stage of an emulated plan, for real: `make docker` (build-linux, then docker build) runs in
    the builder and drives the host's daemon through its socket. A builder for this host's arch made from its
    Debian packages stands in for a foreign one: the plan is made as if this host were the other arch."""
    from helpers import execute

    builder, work = f"istiobuild/test-modes-builder:{HOST.goarch}", tmp_path / "w"
    settings, rel = settings_for(workdir=str(work), in_container=True, builder=builder), release.get("example")
    made = invoke("host-builder", "--name", builder, "--workdir", str(tmp_path / "hb"))
    assert made.returncode == 0, made.stderr
    # its rootfs tar was scratch of that run alone, under its workdir's cache: gone, and nothing in the shared one
    assert list((tmp_path / "hb" / "cache").iterdir()) == [] and not settings.cache.exists()
    try:
        box = ("--in-container", "--builder", builder)
        args = ("--release", "example", "--arch", HOST.value, "--toolchain", "gcc", "--workdir", str(work), *box)
        proc = invoke("build", *args, "--to", "istio")
        assert proc.returncode == 0, proc.stderr
        plan = make_plan(rel, HOST, toolchain.get("gcc"), settings, host=FOREIGN)
        assert plan.mode is Mode.EMULATED
        execute(plan, "images", settings, rel)
        execute(plan, "verify", settings, rel)  # raises on a wrong-arch file, platform or label
        log = (work / "logs" / f"example-{HOST}-images.log").read_text()
        assert log.count("-v /var/run/docker.sock:/var/run/docker.sock") == 2 and "Step 1/" in log
    finally:
        _stop_bazel(work, settings.cache)
        subprocess.run(["docker", "rmi", "-f", builder], capture_output=True, check=False)

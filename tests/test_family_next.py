"""example-next: the miniature of the 1.18+ release lines, built end to end for both arches (issue 11).

Its istio has no knob for a local envoy (bin/init.sh downloads envoy-<PROXY_REPO_SHA> unless it is in
out/linux_<arch>/release), downloads ztunnel the same way (bin/build_ztunnel.sh), builds every Go binary for
TARGET_ARCH, and defines its images in tools/docker.yaml for tools/docker-builder, which needs buildx. The build
pre-places the proxy stage's envoy and a supplied ztunnel and builds the images from tools/docker.yaml with the
classic builder; verify checks every ELF file of every image. Real tools: bazel, Go, gcc/clang and the aarch64
cross compilers, docker, qemu; the supplied ztunnel is a static C program compiled here for each arch.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import invoke, one_error
from istiobuild import baseimages, example, imagedefs, mechanism
from istiobuild.elf import read as read_elf

GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
CC = {"x86_64": "gcc", "aarch64": "aarch64-linux-gnu-gcc"}
IMAGES = ("pilot", "proxyv2", "ztunnel")
ZTUNNEL_SHA = "86fdabaf8cb15faf5ee4cf893c8df02ff79b6307"  # the example's ztunnel, pinned in istio-next's istio.deps
VERSION = example.VERSION  # the istio tag of the pinned commit

pytestmark = pytest.mark.slow


def ztunnel(directory: Path, arch: str) -> tuple[Path, str]:
    """A static binary for `arch` standing in for ztunnel, and its sha256."""
    source = directory / "ztunnel.c"
    source.write_text('#include <stdio.h>\nint main(void){puts("ztunnel (test)");return 0;}\n')
    binary = directory / f"ztunnel-{GOARCH[arch]}"
    subprocess.run([CC[arch], "-static", "-O2", "-o", str(binary), str(source)], check=True)
    return binary, hashlib.sha256(binary.read_bytes()).hexdigest()


def build(work: Path, arch: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Tagged with the version, as a real release: its istioctl takes its version as the default tag."""
    env = {"ISTIOBUILD_CACHE_DIR": str(work.parent.parent / "cache")}
    return invoke(
        "build", "--release", "example-next", "--arch", arch, "--workdir", str(work), "--hub", "istiobuild-next",
        "--tag", VERSION, *args, env=env,
    )  # fmt: skip


def ztunnel_checkout(directory: Path) -> Path:
    """A clone of the example's ztunnel at the commit istio-next pins (istio.deps ZTUNNEL_REPO_SHA)."""
    repos = example.generate(directory / "upstream")
    clone = directory / "ztunnel"
    subprocess.run(["git", "clone", "--quiet", str(repos["ztunnel"].path), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", repos["ztunnel"].commit], check=True)
    return clone


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """x86_64 with a supplied ztunnel; aarch64 with ztunnel built by cargo (Debian's, with the arm64 standard
    library) from the pinned commit."""
    root = tmp_path_factory.mktemp("next")
    works = {}
    for arch in GOARCH:
        (root / arch).mkdir()
        if arch == "x86_64":
            binary, digest = ztunnel(root / arch, arch)
            given = ("--ztunnel", str(binary), "--ztunnel-sha256", digest)
        else:
            given = ("--ztunnel-repo", str(ztunnel_checkout(root / arch)), "--cargo", "/usr/bin/cargo")
        work = root / arch / "work"
        proc = build(work, arch, *given)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        works[arch] = work
    yield works


@pytest.mark.parametrize("arch", list(GOARCH))
def test_builds_and_verifies_every_image_for_the_arch(built: dict[str, Path], arch: str) -> None:
    out = built[arch] / f"example-next-{arch}"
    findings = json.loads((out / "verify.json").read_text())
    images = {Path(f["image"].rpartition(":")[0]).name for f in findings}
    assert images == set(IMAGES)
    assert all(f["ok"] for f in findings), [f for f in findings if not f["ok"]]
    elves = [f["what"] for f in findings if "ELF files" in f["what"]]
    assert len(elves) == len(IMAGES) and all(w.endswith(f"for {arch}") for w in elves)
    record = json.loads((out / "build-record.json").read_text())
    placed = record["preplaced"]
    goarch = GOARCH[arch]
    istio = built[arch] / "example-next" / "istio"
    assert sorted(Path(p).relative_to(istio).as_posix() for p in placed) == sorted(
        [
            f"out/linux_{goarch}/release/envoy-83f51c191330234dc140cd9f72537845bc902265",
            f"out/linux_{goarch}/release/envoy",
            f"out/linux_{goarch}/release/ztunnel-{ZTUNNEL_SHA}",
            f"out/linux_{goarch}/ztunnel",
        ]
    )
    # the envoy in the image is the proxy stage's (pre-placed), ztunnel the supplied one; both for the arch
    envoy = out / "artifacts" / "envoy"
    for path, entry in placed.items():
        source = envoy if entry["source"] == "envoy" else None
        if source is not None:
            assert entry["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
        assert read_elf(Path(path)).arch is not None and read_elf(Path(path)).arch.value == arch
    # the contexts docker-copy.sh made: ELF files under <goarch>/, as the Dockerfiles COPY ${TARGETARCH}/...
    contexts = istio / "out" / f"linux_{goarch}" / "dockerx_build"
    assert (contexts / "build.docker.proxyv2" / goarch / "envoy").is_file()
    assert (contexts / "build.docker.ztunnel" / goarch / "ztunnel").is_file()
    assert not (contexts / "build.docker.istioctl").exists()  # defined in docker.yaml, not in DOCKER_TARGETS


@pytest.mark.parametrize("arch", list(GOARCH))
def test_the_release_archives_are_laid_out_as_the_1_24_lines_and_name_this_build(
    built: dict[str, Path], arch: str, tmp_path: Path
) -> None:
    """release-builder 1.24's layout: samples/ and tools/certs/ each filtered by its own patterns, manifests/charts
    and profiles; the defaults files name this build's hub and tag, and the archive's istioctl (go:embed, its build
    hub and version overlaid, no `profile dump`) installs this build's images."""
    release = built[arch] / f"example-next-{arch}" / "release"
    archive = release / f"istio-{VERSION}-linux-{GOARCH[arch]}.tar.gz"
    with tarfile.open(archive) as tar:
        names = {m.name.removeprefix(f"istio-{VERSION}/") for m in tar.getmembers() if m.isfile()}
        values = tar.extractfile(f"istio-{VERSION}/manifests/charts/istio-control/istio-discovery/values.yaml")
        assert values is not None
        text = values.read().decode()
        tar.extractall(tmp_path, filter="data")
    assert names == {
        "LICENSE", "README.md", "bin/istioctl", "manifest.yaml", "manifests/profiles/default.yaml",
        "manifests/charts/istio-control/istio-discovery/values.yaml",
        "manifests/charts/istio-control/istio-discovery/templates/deployment.yaml",
        "samples/README.md", "samples/httpbin/httpbin.yaml", "samples/httpbin/cleanup-httpbin.sh",
        "tools/certs/README.md", "tools/certs/Makefile.selfsigned.mk", "tools/certs/common.mk",
    }  # fmt: skip
    assert "hub: istiobuild-next" in text and f'tag: "{VERSION}"' in text and "gcr.io/istio-testing" not in text
    checks = json.loads((built[arch] / f"example-next-{arch}" / "archives.json").read_text())["checks"]
    assert checks["istioctl"]["version"] == VERSION and "defaults" not in checks["istioctl"]  # no check command
    istioctl = tmp_path / f"istio-{VERSION}" / "bin" / "istioctl"
    shown = subprocess.run([str(istioctl), "manifest", "generate"], capture_output=True, text=True, check=True)
    assert f'image: "istiobuild-next/pilot:{VERSION}"' in shown.stdout


def test_the_provenance_names_the_ztunnel_supplied_or_built(built: dict[str, Path]) -> None:
    def ztunnels(arch: str) -> list[dict[str, object]]:
        out = built[arch] / f"example-next-{arch}"
        statement = json.loads((out / "provenance.json").read_text())
        deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        return [d for d in deps if str(d["name"]).startswith("ztunnel")]

    supplied = hashlib.sha256((built["x86_64"].parent / "ztunnel-amd64").read_bytes()).hexdigest()
    assert ztunnels("x86_64") == [
        {"name": "ztunnel", "digest": {"sha256": supplied}, "annotations": {"role": "supplied"}}
    ]
    record = json.loads((built["aarch64"] / "example-next-aarch64" / "ztunnel.json").read_text())
    versions = record["versions"]
    assert versions["/usr/bin/cargo"].startswith("cargo ") and versions["/usr/bin/rustc"].startswith("rustc ")
    assert ztunnels("aarch64") == [
        {"name": "ztunnel", "digest": {"sha256": record["sha256"]}, "annotations": {"role": "built with cargo"}},
        {"name": "ztunnel source", "digest": {"gitCommit": ZTUNNEL_SHA}},
    ]
    # what cargo built is what was pre-placed (and what the image carries: verify checked its ELF)
    placed = json.loads((built["aarch64"] / "example-next-aarch64" / "preplaced.json").read_text())
    assert {e["sha256"] for e in placed.values() if e["source"] == "ztunnel"} == {record["sha256"]}
    assert record["commit"] == ZTUNNEL_SHA


def test_a_ztunnel_repo_without_the_pinned_commit_or_a_rustc_without_the_targets_std_is_refused(
    built: dict[str, Path], tmp_path: Path
) -> None:
    """The build exports the pinned commit from --ztunnel-repo (its working tree never counts): a repository
    without that commit is refused right after the checkout (the toolchain stage), before envoy is built, and left
    as it was."""
    other = tmp_path / "other"
    subprocess.run(["git", "init", "--quiet", str(other)], check=True)
    (other / "README").write_text("not ztunnel\n")
    (other / "build.rs").write_text("fn main() {}\n")
    proc = build(built["aarch64"], "aarch64", "--ztunnel-repo", str(other), "--cargo", "/usr/bin/cargo")
    assert f"does not have the ztunnel commit istio pins ({ZTUNNEL_SHA})" in one_error(proc)
    assert "-toolchain.log" in proc.stderr and "start proxy" not in proc.stdout + proc.stderr
    assert sorted(p.name for p in other.iterdir()) == [".git", "README", "build.rs"]
    clone = ztunnel_checkout(tmp_path)
    # a rustc whose sysroot has no aarch64 standard library (rustup's default install): refused before any stage
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "cargo").symlink_to("/usr/bin/cargo")
    (tools / "rustc").write_text(f"#!/bin/sh\necho {tmp_path / 'sysroot'}\n")
    (tools / "rustc").chmod(0o755)
    line = one_error(build(tmp_path / "w", "aarch64", "--ztunnel-repo", str(clone), "--cargo", str(tools / "cargo")))
    assert "has no standard library for aarch64-unknown-linux-gnu" in line
    assert not (tmp_path / "w" / "example-next").exists()


def test_without_preplacing_the_miniature_downloads_as_upstream_does(built: dict[str, Path], tmp_path: Path) -> None:
    """Without istiobuild's pre-placing, the miniature's init.sh goes for the release bucket, as 1.22's does (and
    fails offline): the mechanism the build relies on is the real one."""
    istio = built["x86_64"] / "example-next" / "istio"
    copy = tmp_path / "istio"
    subprocess.run(["git", "clone", "--quiet", "--shared", str(istio), str(copy)], check=True)
    env = {**os.environ, "TARGET_ARCH": "arm64", "ISTIO_ENVOY_LINUX_RELEASE_URL": "file:///nonexistent/envoy.tar.gz"}
    proc = subprocess.run(["make", "init"], cwd=copy, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0
    assert "Downloading envoy: file:///nonexistent/envoy.tar.gz" in proc.stdout
    assert "/out/linux_arm64/release/envoy-83f51c191330234dc140cd9f72537845bc902265" in proc.stdout


def test_a_build_without_ztunnel_is_refused_before_any_stage(tmp_path: Path) -> None:
    proc = build(tmp_path / "w" / "work", "aarch64")
    line = one_error(proc)
    assert "downloads ztunnel for amd64 unless it is pre-placed" in line
    assert "--ztunnel FILE --ztunnel-sha256 HEX" in proc.stderr
    assert not (tmp_path / "w" / "work" / "example-next").exists()


def test_a_ztunnel_for_the_other_arch_or_with_another_sha256_is_refused(tmp_path: Path) -> None:
    binary, digest = ztunnel(tmp_path, "x86_64")
    upper = digest.upper()  # the same digest as some tools print it
    line = one_error(build(tmp_path / "w" / "work", "aarch64", "--ztunnel", str(binary), "--ztunnel-sha256", upper))
    assert "binary, but the target is aarch64" in line
    wrong = "0" * 64
    line = one_error(build(tmp_path / "w" / "work", "x86_64", "--ztunnel", str(binary), "--ztunnel-sha256", wrong))
    assert f"has sha256 {digest}, not {wrong}" in line
    # a dry run checks the supplied file too (it only reads it)
    proc = build(tmp_path / "w" / "work", "x86_64", "--dry-run", "--ztunnel", str(binary), "--ztunnel-sha256", wrong)
    assert f"has sha256 {digest}, not {wrong}" in one_error(proc)
    assert not (tmp_path / "w" / "work" / "example-next").exists()


def test_ztunnel_settings_are_checked_against_their_grammar_and_the_release(tmp_path: Path) -> None:
    binary, digest = ztunnel(tmp_path, "x86_64")
    work = str(tmp_path / "work")
    line = one_error(invoke("plan", "--release", "example-next", "--workdir", work, "--ztunnel", str(binary)))
    assert "without its sha256" in line
    line = one_error(invoke("plan", "--release", "example-next", "--workdir", work, "--ztunnel-sha256", digest))
    assert "without --ztunnel" in line
    given = ("--ztunnel", str(binary), "--ztunnel-sha256", "-x")
    line = one_error(invoke("plan", "--release", "example-next", "--workdir", work, *given))
    assert "is not a sha256" in line
    line = one_error(
        invoke("plan", "--release", "example-next", "--workdir", work, "--ztunnel", "-rf", "--ztunnel-sha256", digest)
    )
    assert "ztunnel" in line
    proc = invoke(
        "build", "--release", "example", "--arch", "x86_64", "--workdir", work, "--ztunnel", str(binary),
        "--ztunnel-sha256", digest,
    )  # fmt: skip
    assert "has no ztunnel" in one_error(proc)


def test_plan_json_shows_the_mechanism_and_the_definitions_driver(tmp_path: Path) -> None:
    proc = invoke("plan", "--release", "example-next", "--arch", "aarch64", "--workdir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    text = json.dumps(plan)
    assert "tools/docker.yaml" in text and "docker-copy.sh" in text and "classic builder" in text
    assert "USE_LOCAL_PROXY" not in text
    assert "out/linux_arm64/release/envoy-83f51c191330234dc140cd9f72537845bc902265" in text
    # istio's build_ztunnel.sh never builds its own ztunnel over the placed one, and the build checks they stayed
    assert "BUILD_ZTUNNEL_REPO='' " in text and "still has the sha256 it was placed with" in text


def test_a_placed_file_changed_during_istios_make_is_refused(tmp_path: Path) -> None:
    """CheckPlaced: what istio's scripts overwrote (build_ztunnel.sh with BUILD_ZTUNNEL_REPO, say) stops the build."""
    import types

    from istiobuild.errors import StepFailed
    from istiobuild.preplace import CheckPlaced

    placed = tmp_path / "ztunnel"
    placed.write_bytes(b"placed")
    record = tmp_path / "preplaced.json"
    record.write_text(json.dumps({str(placed): {"sha256": hashlib.sha256(b"placed").hexdigest()}}))
    ex = types.SimpleNamespace(log=tmp_path / "istio.log")  # what the step uses of its executor
    step = CheckPlaced(record=record)
    step.perform(ex)  # type: ignore[arg-type]
    placed.write_bytes(b"cargo's own build")
    with pytest.raises(StepFailed, match="changed during istio's make"):
        step.perform(ex)  # type: ignore[arg-type]


# -- the pieces, on their own --------------------------------------------------------------------


def test_definitions_expand_select_and_refuse(tmp_path: Path) -> None:
    path = tmp_path / "docker.yaml"
    path.write_text(
        "images:\n- name: base\n  dockerfile: docker/Dockerfile.base\n  base: true\n"
        "- name: proxyv2\n  dockerfile: pilot/docker/Dockerfile.proxyv2\n  files:\n"
        "  - ${TARGET_OUT_LINUX}/${RELEASE_MODE}/${SIDECAR}\n  targets:\n  - ${TARGET_OUT_LINUX}/pilot-agent\n"
    )
    values = imagedefs.variables(Path("/src/istio"), "arm64")
    defs = imagedefs.load(path, values)
    (proxy,) = imagedefs.select(defs, ["docker.proxyv2"], where="docker.yaml")
    assert proxy.dependencies() == (
        "pilot/docker/Dockerfile.proxyv2",
        "/src/istio/out/linux_arm64/release/envoy",
        "/src/istio/out/linux_arm64/pilot-agent",
    )
    with pytest.raises(ValueError, match=r"unknown targets \['nope'\]"):
        imagedefs.select(defs, ["docker.nope"], where="docker.yaml")
    path.write_text("images:\n- name: x\n  dockerfile: ${HOME}/Dockerfile\n")
    with pytest.raises(ValueError, match=r"names \$\{HOME\}, which istiobuild does not set"):
        imagedefs.load(path, values)
    path.write_text("images:\n- name: x\n  dockerfile: a\n- name: x\n  dockerfile: b\n")
    with pytest.raises(ValueError, match="defines x more than once"):
        imagedefs.load(path, values)
    assert imagedefs.make_defaults("BASE_VERSION ?= v1\nISTIO_BASE_REGISTRY ?= gcr.io/r\n") == {
        "BASE_VERSION": "v1",
        "ISTIO_BASE_REGISTRY": "gcr.io/r",
    }


def test_from_lines_resolve_with_the_builders_args() -> None:
    dockerfile = (
        "ARG BASE_DISTRIBUTION=debug\nARG BASE_VERSION=latest\nARG ISTIO_BASE_REGISTRY=gcr.io/istio-release\n"
        "FROM ${ISTIO_BASE_REGISTRY}/base:${BASE_VERSION} as debug\nFROM ${BASE_DISTRIBUTION:-debug}\n"
    )
    mapping = {"gcr.io/istio-release/base:v9": "local/base:arm64"}
    assert baseimages.rewrite(dockerfile, mapping) == dockerfile  # not resolved: nothing names the literal
    rewritten = baseimages.rewrite(dockerfile, mapping, {"BASE_VERSION": "v9"})
    assert "FROM local/base:arm64 as debug\n" in rewritten
    assert rewritten.endswith("FROM ${BASE_DISTRIBUTION:-debug}\n")


def test_preplaced_paths_say_what_they_hold() -> None:
    assert mechanism.source_of("out/linux_{goarch}/release/envoy-{proxy_sha}") == "envoy"
    assert mechanism.source_of("out/linux_{goarch}/release/envoy-centos-{proxy_sha}") == "envoy"
    assert mechanism.source_of("out/linux_{goarch}/ztunnel") == "ztunnel"
    assert mechanism.source_of("{envoy_dir}/stats-filter.wasm") == "download"
    with pytest.raises(ValueError, match="not an envoy, ztunnel or .wasm file name"):
        mechanism.source_of("out/linux_{goarch}/release/pilot-agent")


# -- the allocator (1.22+: Google tcmalloc by default, gperftools opt-in; istio#51708) -----------


def proxy_command(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    stage = next(s for s in plan["stages"] if s["name"] == "proxy")
    return json.dumps(stage)


def test_the_allocator_follows_the_option_or_the_target_kernel(tmp_path: Path) -> None:
    base = ("plan", "--release", "example-next", "--arch", "aarch64", "--workdir", str(tmp_path), "--json")
    assert "tcmalloc=gperftools" not in proxy_command(invoke(*base))
    assert "--define=tcmalloc=gperftools" in proxy_command(invoke(*base, "--allocator", "gperftools"))
    # a 39-bit-VA deployment kernel (RK3588 and the like): auto takes gperftools, and the plan says why
    proc = invoke(*base, "--target-kernel", "page_size=4k,va_bits=39")
    assert "--define=tcmalloc=gperftools" in proxy_command(proc)
    notes = json.loads(proc.stdout)["notes"]
    assert any("allocator gperftools: the target kernel has 39-bit virtual addresses" in n for n in notes)
    line = one_error(invoke(*base, "--target-kernel", "page_size=4k,va_bits=39", "--allocator", "tcmalloc"))
    assert "--allocator tcmalloc contradicts the target kernel's 39-bit virtual addresses" in line


def test_an_allocator_the_line_cannot_take_is_refused(tmp_path: Path) -> None:
    line = one_error(invoke("plan", "--release", "example", "--workdir", str(tmp_path), "--allocator", "tcmalloc"))
    assert "--allocator tcmalloc: this release's envoy is built with gperftools" in line
    line = one_error(invoke("plan", "--release", "example", "--workdir", str(tmp_path), "--allocator", "jemalloc"))
    assert "is not an allocator" in line


def test_the_record_and_provenance_name_the_allocator(built: dict[str, Path]) -> None:
    out = built["x86_64"] / "example-next-x86_64"
    assert json.loads((out / "build-record.json").read_text())["allocator"] == "tcmalloc"
    statement = json.loads((out / "provenance.json").read_text())
    assert statement["predicate"]["buildDefinition"]["externalParameters"]["allocator"] == "tcmalloc"


def test_rebuild_takes_the_ztunnel_like_the_build(built: dict[str, Path], tmp_path: Path) -> None:
    """`invoke rebuild` of a 1.18+ build needs its ztunnel again (it is an input, never downloaded): given as for the
    build, checked the same way before anything is built."""
    record = str(built["x86_64"] / "example-next-x86_64" / "build-record.json")
    assert Path(record).is_file()
    line = one_error(invoke("rebuild", "--record", record, "--workdir", str(tmp_path / "r1")))
    assert "downloads ztunnel for amd64 unless it is pre-placed" in line
    binary, digest = ztunnel(tmp_path, "x86_64")
    wrong = "0" * 64
    given = ("--ztunnel", str(binary), "--ztunnel-sha256", wrong)
    line = one_error(invoke("rebuild", "--record", record, "--workdir", str(tmp_path / "r2"), *given))
    assert f"has sha256 {digest}, not {wrong}" in line


def test_a_cargo_variable_that_changes_the_build_is_refused(tmp_path: Path) -> None:
    """CARGO_PROFILE_RELEASE_*, CARGO_TARGET_*_LINKER and the like would change the ztunnel cargo builds without a
    trace: refused before any stage (cargo's fetch and output settings are left alone)."""
    clone = ztunnel_checkout(tmp_path)
    given = ("--ztunnel-repo", str(clone), "--cargo", "/usr/bin/cargo", "--dry-run")
    proc = invoke("build", "--release", "example-next", "--arch", "x86_64", "--workdir", str(tmp_path / "w"), *given,
                  env={"CARGO_PROFILE_RELEASE_LTO": "off", "CARGO_TERM_COLOR": "never"})  # fmt: skip
    line = one_error(proc)
    assert "CARGO_PROFILE_RELEASE_LTO in your environment would change the ztunnel" in line
    assert "CARGO_TERM_COLOR" not in line

"""Base images resolved for the target platform before any work, and recorded.

Data: `external_images` in releases/*.toml, validated on load; the example's list equals what its
Dockerfiles name (the real releases' lists are checked against the mirrors in test_upstream.py).
Resolution: a fake daemon for every outcome (local, pulled, wrong arch, missing, pinned digests),
then a real docker daemon: a base image of the wrong arch or a missing one stops `invoke build`
before the checkout stage with one error line; a pin is checked against a real image; a real
example build records the base images it used with their IDs and architecture.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import platform
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from helpers import invoke, one_error
from istiobuild import baseimages, fromlines, patches, release
from istiobuild.arch import Arch
from istiobuild.errors import DataError, IstiobuildError
from istiobuild.linetables import BASE_TARGET
from istiobuild.release import Component

REPO = Path(__file__).resolve().parent.parent
HOST = Arch(platform.machine()) if platform.machine() in {a.value for a in Arch} else Arch.X86_64
ID = "sha256:" + "1" * 64
MANIFEST = "sha256:" + "2" * 64
OTHER = "sha256:" + "3" * 64


# -- release data ---------------------------------------------------------------------------------


def test_every_release_lists_its_external_images() -> None:
    r14, r15, example = release.get("1.4.0"), release.get("1.5.10"), release.get("example")
    names = {image.name: image.targets for image in r14.external_images}
    assert names["ubuntu:bionic"] == (BASE_TARGET,)
    assert "docker.io/istio/base" not in " ".join(names)  # docker.base builds it
    assert {i.name for i in r14.external_images_for(Arch.AARCH64)} == {
        "ubuntu:bionic",
        "gcr.io/distroless/static:latest",
        "gcr.io/distroless/cc:latest",
    }  # istionightly/base_debug only for docker.app*, which aarch64 skips
    assert "istionightly/base_debug" in {i.name for i in r14.external_images_for(Arch.X86_64)}
    assert {i.name for i in r15.external_images} == {
        "ubuntu:bionic",
        "gcr.io/distroless/static:nonroot",
        "gcr.io/distroless/static:latest",
        "gcr.io/distroless/cc:latest",
    }
    assert [i.name for i in example.external_images] == ["debian:bookworm-slim", "gcr.io/distroless/cc:latest"]


def test_from_1_7_istio_builds_its_distroless_base_too() -> None:
    """pilot's `FROM docker.io/istio/distroless:${BASE_VERSION} as distroless` (1.7, 1.8) is istio's own
    docker.distroless, built first under the name the stage uses: not an external image named `...:latest`."""
    r18 = release.get("1.8.0")
    assert r18.istio_bases == ("docker.io/istio/base", "docker.io/istio/distroless")
    assert r18.base_targets == (BASE_TARGET, "docker.distroless") and r18.base_hub == "docker.io/istio"
    names = {i.name: i.targets for i in r18.external_images_for(Arch.AARCH64)}
    assert not [n for n in names if n.startswith("docker.io/istio/")], names
    assert names["ubuntu:bionic"] == (BASE_TARGET, "docker.distroless")
    assert release.get("1.6.0").istio_bases == ("docker.io/istio/base",)  # 1.6: a digest-pinned distroless stage


@pytest.mark.parametrize(("name", "repo"), [("example", "istio"), ("example-next", "istio-next")])
def test_example_list_is_what_its_dockerfiles_name(example_upstream: Path, name: str, repo: str) -> None:
    """example: Dockerfiles from tools/istio-docker.mk; example-next: from tools/docker.yaml, FROM lines resolved
    with docker-builder's build args (Makefile.core.mk's BASE_VERSION and ISTIO_BASE_REGISTRY)."""
    rel = release.get(name)
    definitions = rel.mechanism.definitions if rel.mechanism else ""
    expected = {image.name: image.targets for image in rel.external_images}
    for arch in Arch:
        series = patches.from_shipped(patches.select(rel, Component.ISTIO, arch))
        commit = rel.pins[Component.ISTIO].commit
        targets = (*rel.base_targets, *rel.docker_targets)
        found = fromlines.scan(example_upstream / repo, commit, series, targets, definitions, rel.istio_bases)
        assert found == expected


def _line_with(tmp_path: Path, entry: str) -> Path:
    text = (REPO / "releases" / "example.toml").read_text()
    start = text.index("[line.external_images]")
    end = text.index("[release.", start)
    (tmp_path / "example.toml").write_text(text[:start] + f"[line.external_images]\n{entry}\n\n" + text[end:])
    return tmp_path


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('"debian:bookworm-slim" = { targets = ["docker.nope"] }', "targets: must be a non-empty list"),
        ('"debian:bookworm-slim" = { targets = [] }', "targets: must be a non-empty list"),
        ('"debian:bookworm-slim" = ["docker.base"]', "must be a table with targets"),
        ('"debian:bookworm-slim" = { targets = ["docker.base"], digest = "x" }', "must be a table with targets"),
        ('"Debian;x" = { targets = ["docker.base"] }', "is not a docker image reference"),
        ('"d:1" = { targets = ["docker.base"], digests = { arm64 = "sha256:00" } }', "digests: must map aarch64"),
        ('"d:1" = { targets = ["docker.base"], digests = { aarch64 = "sha256:00" } }', "must be sha256:<64 hex"),
    ],
)
def test_bad_external_images_are_rejected_on_load(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(DataError) as info:
        release.matrix(_line_with(tmp_path, entry))
    assert message in info.value.message and "external_images" in info.value.message


@pytest.mark.parametrize(
    "bases",
    [
        '["docker.io/istio/distroless"]',  # no <hub>/base
        '["docker.io/istio/base", "gcr.io/istio-release/distroless"]',  # two hubs
        '["docker.io/istio/base:1.8"]',  # a tag
        '["docker.io/istio/base@sha256:00"]',
        '["docker.io/istio/base", "docker.io/istio/base"]',
        '["-o/x/base"]',  # option-like: it goes into make's HUB=
        '["docker.io/istio/base", "docker.io/istio/distroless;rm"]',
        '["Docker.io/istio/base"]',
        '["docker.io/istio/base", 3]',
        '["docker.io/istio/base", "docker.io/istio/distroless\\n"]',  # make would get target docker.distroless<LF>
        '["docker.io/istio/base", "docker.io/istio/all"]',  # make docker.all builds every image
    ],
)
def test_bad_istio_bases_are_rejected_on_load(tmp_path: Path, bases: str) -> None:
    text = (REPO / "releases" / "example.toml").read_text()
    start = text.index("istio_bases = ")
    end = text.index("\n", start)
    (tmp_path / "example.toml").write_text(text[:start] + f"istio_bases = {bases}" + text[end:])
    with pytest.raises(DataError) as info:
        release.matrix(tmp_path)
    assert "istio_bases: must be distinct image repositories under one hub" in info.value.message


def test_digests_per_arch_load(tmp_path: Path) -> None:
    digests = f'{{ aarch64 = "{ID}", x86_64 = "{"4" * 64}" }}'
    entry = f'"debian:bookworm-slim" = {{ targets = ["docker.base"], digests = {digests} }}'
    image = release.matrix(_line_with(tmp_path, entry))["example"].external_images[0]
    assert image.digests == {Arch.AARCH64: ID, Arch.X86_64: "sha256:" + "4" * 64}


# -- what a Dockerfile names ------------------------------------------------------------------------


def test_named_images_resolve_arg_defaults_and_skip_stages() -> None:
    dockerfile = (
        "ARG BASE_DISTRIBUTION=default\nARG BASE_VERSION=latest\n"
        "FROM docker.io/istio/base:${BASE_VERSION} as default\n"
        "FROM gcr.io/distroless/static:nonroot AS distroless\n"
        "FROM ${BASE_DISTRIBUTION}\nARG late=x\n"
        "FROM scratch\nFROM --platform=linux/arm64 golang:1.12 as builder\nFROM builder\n"
    )
    assert fromlines.named_images(dockerfile) == [
        "docker.io/istio/base:latest",
        "gcr.io/distroless/static:nonroot",
        "golang:1.12",
    ]
    assert fromlines.named_images(dockerfile, {"BASE_DISTRIBUTION": "ubuntu:xenial"})[2] == "ubuntu:xenial"


def test_dockerfile_for_reads_istio_docker_mk() -> None:
    makefile = (
        "docker.kubectl: BUILD_ARGS=--build-arg BASE_VERSION=${BASE_VERSION}\n"
        "docker.kubectl: docker/Dockerfile$$(suffix $$@)\n"
        "docker.pilot: $(ISTIO_OUT_LINUX)/pilot-discovery pilot/docker/Dockerfile.pilot\n"
    )
    assert fromlines.dockerfile_for(makefile, "docker.kubectl") == "docker/Dockerfile.kubectl"
    assert fromlines.dockerfile_for(makefile, "docker.pilot") == "pilot/docker/Dockerfile.pilot"
    with pytest.raises(DataError, match="docker.galley names 0 Dockerfiles"):
        fromlines.dockerfile_for(makefile, "docker.galley")


def test_bases_follow_the_map_and_pins() -> None:
    rel = release.get("1.4.0")
    pinned = release.ExternalImage(name="ubuntu:bionic", targets=(BASE_TARGET,), digests={Arch.AARCH64: ID})
    rel = dataclasses.replace(rel, external_images=(pinned, *rel.external_images[1:]))
    bases = {b.name: b for b in baseimages.bases_for(rel, Arch.AARCH64, {"gcr.io/distroless/cc:latest": "my/cc:1"})}
    assert bases["ubuntu:bionic"] == baseimages.Base(
        name="ubuntu:bionic", use="ubuntu:bionic", targets=(BASE_TARGET,), pin=ID
    )
    assert bases["gcr.io/distroless/cc:latest"].use == "my/cc:1"
    assert "istionightly/base_debug" not in bases
    remapped = baseimages.bases_for(rel, Arch.AARCH64, {"ubuntu:bionic": "local/ubuntu:arm64"})
    assert remapped[0].pin == ""  # the pin is for the image upstream names, not for the user's
    assert baseimages.bases_for(rel, Arch.X86_64, {})[0].pin == ""


# -- resolution against a fake daemon ---------------------------------------------------------------


class FakeImages:
    def __init__(self, local: dict[str, dict[str, Any]], registry: dict[str, dict[str, Any]] | None = None) -> None:
        self.local, self.registry = local, registry or {}
        self.pulled: list[tuple[str, str]] = []

    def get(self, name: str) -> Any:
        import docker

        if name not in self.local:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return SimpleNamespace(attrs=self.local[name])

    def pull(self, name: str, platform: str) -> Any:
        import docker

        self.pulled.append((name, platform))
        if name not in self.registry:
            raise docker.errors.APIError("pull", explanation=f"manifest for {name} not found\nsecond line")
        self.local[name] = self.registry[name]
        return self.get(name)


def image(arch: str, *, image_id: str = ID, digests: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"Id": image_id, "Os": "linux", "Architecture": arch, "RepoDigests": list(digests)}


def resolve(images: FakeImages, *bases: baseimages.Base, arch: Arch = Arch.AARCH64) -> list[dict[str, Any]]:
    cli = SimpleNamespace(images=images)
    found: list[dict[str, Any]] = baseimages.resolve(
        cli, bases, arch, debs=Path("/nonexistent"), rootfs=Path("/nonexistent"), log=Path("/dev/null")
    )
    return found


def failure(images: FakeImages, *bases: baseimages.Base, arch: Arch = Arch.AARCH64) -> str:
    with pytest.raises(IstiobuildError) as info:
        resolve(images, *bases, arch=arch)
    message: str = info.value.message
    assert "\n" not in message and "docs/base-images.md" in info.value.hint
    return message


def test_local_image_of_the_target_arch_is_used_and_recorded() -> None:
    images = FakeImages({"ubuntu:bionic": image("arm64", digests=(f"ubuntu@{MANIFEST}",))})
    [found] = resolve(images, baseimages.Base(name="ubuntu:bionic", use="ubuntu:bionic", targets=(BASE_TARGET,)))
    assert found == {
        "name": "ubuntu:bionic",
        "image": "ubuntu:bionic",
        "targets": [BASE_TARGET],
        "id": ID,
        "repo_digests": [f"ubuntu@{MANIFEST}"],
        "os": "linux",
        "architecture": "arm64",
        "variant": "",
        "pinned": "",
        "how": "local",
    }
    assert images.pulled == []


def test_missing_image_is_pulled_for_the_platform() -> None:
    images = FakeImages({}, {"gcr.io/distroless/cc:latest": image("arm64")})
    [found] = resolve(images, baseimages.Base(name="gcr.io/distroless/cc:latest", use="gcr.io/distroless/cc:latest"))
    assert images.pulled == [("gcr.io/distroless/cc:latest", "linux/arm64")]
    assert found["how"] == "pulled" and found["architecture"] == "arm64"


def test_wrong_arch_names_the_image_the_arch_and_the_fix() -> None:
    images = FakeImages({"ubuntu:bionic": image("amd64")})
    assert failure(images, baseimages.Base(name="ubuntu:bionic", use="ubuntu:bionic")) == (
        "base image ubuntu:bionic is linux/amd64, not linux/arm64: map it under base_images.aarch64 to a "
        "linux/arm64 image, or replace it with `docker pull --platform linux/arm64 ubuntu:bionic`"
    )
    mapped = baseimages.Base(name="ubuntu:bionic", use="local/ubuntu:arm64")
    assert failure(FakeImages({"local/ubuntu:arm64": image("amd64")}), mapped) == (
        "base image local/ubuntu:arm64 (base_images.aarch64 maps ubuntu:bionic to it) is linux/amd64, not "
        "linux/arm64: point base_images.aarch64 'ubuntu:bionic' at a linux/arm64 image"
    )


def test_a_pull_that_brings_the_wrong_arch_is_an_error() -> None:
    images = FakeImages({}, {"single/arch:1": image("amd64")})
    message = failure(images, baseimages.Base(name="single/arch:1", use="single/arch:1"))
    assert message.startswith("base image single/arch:1 pulled for linux/arm64 is linux/amd64, not linux/arm64")


def test_missing_and_unpullable_is_one_line_with_the_fix() -> None:
    message = failure(FakeImages({}), baseimages.Base(name="ubuntu:bionic", use="ubuntu:bionic"))
    assert message == (
        "base image ubuntu:bionic for linux/arm64 is not available (APIError: manifest for ubuntu:bionic not "
        "found): docker pull --platform linux/arm64 ubuntu:bionic (air-gapped: docker load it, or map it under "
        "base_images.aarch64)"
    )


def test_every_problem_is_reported_at_once() -> None:
    images = FakeImages({"a:1": image("amd64"), "ok:1": image("arm64")})
    bases = [baseimages.Base(name=n, use=n) for n in ("a:1", "ok:1", "b:1")]
    message = failure(images, *bases)
    assert message.startswith("2 base images cannot be used for linux/arm64: base image a:1 is linux/amd64")
    assert "; base image b:1 for linux/arm64 is not available" in message


@pytest.mark.parametrize("pin", [ID, MANIFEST])
def test_pin_matches_the_image_id_or_a_repo_digest(pin: str) -> None:
    images = FakeImages({"ubuntu:bionic": image("arm64", digests=(f"ubuntu@{MANIFEST}",))})
    [found] = resolve(images, baseimages.Base(name="ubuntu:bionic", use="ubuntu:bionic", pin=pin))
    assert found["pinned"] == pin


def test_pin_mismatch_is_an_error() -> None:
    images = FakeImages({"ubuntu:bionic": image("arm64", digests=(f"ubuntu@{MANIFEST}",))})
    message = failure(images, baseimages.Base(name="ubuntu:bionic", use="ubuntu:bionic", pin=OTHER))
    assert message.startswith(
        f"base image ubuntu:bionic for linux/arm64 is {ID} (repo digests: ubuntu@{MANIFEST}), "
        f"but the release pins {OTHER}"
    )


# -- a real docker daemon ---------------------------------------------------------------------------


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


@pytest.fixture(scope="module")
def foreign() -> Iterator[tuple[str, str, Arch]]:
    """A one-file image imported on this daemon (so of the daemon's arch) under a name only this module uses:
    (name, its goarch, a target arch it is not for)."""
    name = f"istiobuild-test/wrong-arch-{uuid.uuid4().hex[:8]}:1"
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("etc/hostname")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"test\n"))
    subprocess.run(["docker", "import", "-", name], input=data.getvalue(), capture_output=True, check=True)
    try:
        have = docker("image", "inspect", "-f", "{{.Architecture}}", name).strip()
        target = Arch.AARCH64 if have == Arch.X86_64.goarch else Arch.X86_64
        yield name, have, target
    finally:
        docker("rmi", "-f", name, check=False)


def build_example(work: Path, arch: Arch, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = ("--release", "example", "--arch", arch.value, "--toolchain", "gcc", "--workdir", str(work))
    return invoke("build", *args, cwd=cwd)


def nothing_ran(work: Path, arch: Arch, proc: subprocess.CompletedProcess[str]) -> None:
    assert not (work / "example").exists() and not (work / "example-upstream").exists()  # no checkout
    assert not list((work / f"example-{arch.value}" / "stamps").glob("*.json"))
    assert "checkout" not in proc.stdout


@pytest.mark.slow
def test_wrong_arch_base_stops_the_build_before_any_stage(foreign: tuple[str, str, Arch], tmp_path: Path) -> None:
    name, have, target = foreign
    (tmp_path / "istiobuild.toml").write_text(f'[base_images.{target.value}]\n"debian:bookworm-slim" = "{name}"\n')
    work = tmp_path / "work"
    proc = build_example(work, target, tmp_path)
    assert one_error(proc) == (
        f"error: base image {name} (base_images.{target.value} maps debian:bookworm-slim to it) is linux/{have}, "
        f"not {target.oci_platform}: point base_images.{target.value} 'debian:bookworm-slim' at a "
        f"{target.oci_platform} image"
    )
    nothing_ran(work, target, proc)


@pytest.mark.slow
def test_missing_base_stops_the_build_with_one_line(tmp_path: Path) -> None:
    missing = f"example.invalid/nobase-{uuid.uuid4().hex[:8]}:1"
    (tmp_path / "istiobuild.toml").write_text(f'[base_images.aarch64]\n"gcr.io/distroless/cc:latest" = "{missing}"\n')
    work = tmp_path / "work"
    proc = build_example(work, Arch.AARCH64, tmp_path)
    line = one_error(proc)
    assert line.startswith(
        f"error: base image {missing} for linux/arm64 is not available (base_images.aarch64 maps "
        "gcr.io/distroless/cc:latest to it) ("
    )
    assert line.endswith("point base_images.aarch64 'gcr.io/distroless/cc:latest' at an image you have for linux/arm64")
    nothing_ran(work, Arch.AARCH64, proc)


@pytest.mark.slow
def test_pin_is_checked_against_a_real_image(foreign: tuple[str, str, Arch], tmp_path: Path) -> None:
    from istiobuild import dockerapi

    name, have, target = foreign
    arch = next(a for a in Arch if a.goarch == have)
    image_id = docker("image", "inspect", "-f", "{{.Id}}", name).strip()
    kwargs: dict[str, Any] = {"debs": tmp_path, "rootfs": tmp_path, "log": tmp_path / "log"}
    cli = dockerapi.client()
    [found] = baseimages.resolve(cli, [baseimages.Base(name=name, use=name, pin=image_id)], arch, **kwargs)
    assert (found["id"], found["architecture"], found["how"]) == (image_id, have, "local")
    with pytest.raises(IstiobuildError, match=f"is {image_id} \\(repo digests: none\\), but the release pins {OTHER}"):
        baseimages.resolve(cli, [baseimages.Base(name=name, use=name, pin=OTHER)], arch, **kwargs)
    with pytest.raises(IstiobuildError, match=f"is linux/{have}, not {target.oci_platform}"):
        baseimages.resolve(cli, [baseimages.Base(name=name, use=name)], target, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example built once for this host's arch with gcc (no qemu); the bazel server stopped afterwards."""
    work = tmp_path_factory.mktemp("base-images") / "work"
    try:
        proc = build_example(work, HOST, work.parent)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield work
    finally:
        root, proxy = work / "cache" / "bazel-root", work / "example" / "proxy"
        if proxy.exists():
            subprocess.run(
                ["bazel", f"--output_user_root={root}", "shutdown"], cwd=proxy, capture_output=True, check=False
            )


@pytest.mark.slow
def test_a_good_build_records_its_base_images(built: Path) -> None:
    record = json.loads((built / f"example-{HOST.value}" / "base-images.json").read_text())
    assert (record["arch"], record["platform"]) == (HOST.value, HOST.oci_platform)
    assert [i["name"] for i in record["images"]] == ["debian:bookworm-slim", "gcr.io/distroless/cc:latest"]
    for found in record["images"]:
        assert found["image"] == f"{baseimages.EXAMPLE_BASE}:{HOST.goarch}"
        assert found["id"] == docker("image", "inspect", "-f", "{{.Id}}", found["image"]).strip()
        assert found["id"].startswith("sha256:") and (found["os"], found["architecture"]) == ("linux", HOST.goarch)
    assert record["images"][0]["targets"] == [BASE_TARGET, "docker.distroless"]  # istio_bases: docker.distroless too
    assert record["images"][1]["targets"] == ["docker.proxyv2"]
    build_record = json.loads((built / f"example-{HOST.value}" / "build-record.json").read_text())
    for key in ("base-images", "base_images"):  # once stages/record.py collects layout.record("base-images")
        if key in build_record:
            assert build_record[key] == record
    # istio's own bases were tagged <hub>/base:<build tag> only for the FROM lines: untagged once the images exist
    suffix = "-w" + hashlib.sha256(str(built).encode()).hexdigest()[:8]
    listed = docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert [n for n in listed if n.startswith(("istio/base:", "istio/distroless:")) and n.endswith(suffix)] == []
    assert [n for n in listed if n.startswith("istio/pilot:") and n.endswith(suffix)]  # the images stay

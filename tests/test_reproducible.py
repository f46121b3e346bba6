"""Reproducible, provable release builds, for real (issue 9).

The example is built twice per arch (aarch64 cross, x86_64), from different workdir paths with cold caches, with
every image of the first build, the classic builder's cache and the registry's content removed in between: envoy,
the Go binaries, the image IDs and the pushed digests must be byte-identical, and no workdir path, host name or
user name may appear in them. Both builds push with the same hub (istio's binaries embed it) to a registry on the
same port, started empty for the second build, so docker uploads and compresses every layer again.

The second build's registry stays up for the rest: its signed provenance (attached next to each image), `invoke
verify --provenance --key`, `invoke manifest` (refusing an image without a verified provenance) and `invoke rebuild`
(identical for a record; the artifact named when the toolchain changes).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import socket
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import invoke, keypair, one_error
from istiobuild import archives, provenance, release, sbom, signing
from istiobuild.arch import Arch
from test_images import docker, free_port, start_registry

pytestmark = pytest.mark.slow
ARCHES = ("aarch64", "x86_64")
EPOCH = 1704067200  # the example istio commit's committer time: releases/example.toml source_date_epoch
ISTIO_COMMIT = release.get("example").pins[release.Component.ISTIO].commit
GOARCH = {"aarch64": "arm64", "x86_64": "amd64"}


def build(work: Path, cache: Path, arch: str, hub: str, key: Path, config: Path) -> dict[str, Any]:
    proc = invoke(
        "build", "--release", "example", "--arch", arch, "--workdir", str(work), "--hub", hub, "--push",
        "--signing-key", str(key), env={"ISTIOBUILD_CACHE_DIR": str(cache)}, cwd=config,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = work / f"example-{arch}"
    record = json.loads((out / "build-record.json").read_text())
    return {
        "envoy": record["envoy"]["sha256"],
        "go": {k: v["sha256"] for k, v in record["istio"].items()},
        "images": record["image_ids"],
        "pushed": record["pushed"],
        "out": out,
    }


def own_base_images(config: Path, hub: str) -> Path:
    """istiobuild.toml in `config` mapping the example's base images to ones only this module uses (the example's
    busybox rootfs imported again for each arch, with another ID): no other build on the daemon, also one running
    at the same time in another test worker, makes layers the classic builder could take from its cache."""
    from istiobuild import baseimages, dockerapi, normalize

    lines = []
    for arch, goarch in GOARCH.items():
        name = f"{hub.rpartition('/')[2]}-base:{goarch}"
        tar = config / f"busybox-{goarch}.tar"
        tar.write_bytes(baseimages.busybox_rootfs(baseimages.busybox_deb(Arch(arch), config / "debs", config / "log")))
        docker("import", "--platform", f"linux/{goarch}", str(tar), name)
        cli = dockerapi.client()
        normalize.normalize(
            cli, name, arch=Arch(arch), epoch=0, labels={"io.istiobuild.test": hub},
            keep=normalize.layer_ids(cli, [name]), scratch=config / "scratch",
        )  # fmt: skip
        lines.append(
            f'[base_images.{arch}]\n"debian:bookworm-slim" = "{name}"\n"gcr.io/distroless/cc:latest" = "{name}"\n'
        )
    (config / "istiobuild.toml").write_text("\n".join(lines))
    return config


def forget_images(hub: str) -> None:
    """Remove every image and tag of this hub (the images stage untags istio's own bases itself), then the dangling
    images: the classic builder's cache is its intermediate images. Only what this module made: its builds start
    from base images only it uses (hub_and_config), so another worker's builds never share their layers."""
    names = docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    ours = [n for n in names if n.startswith(hub + "/")]
    if ours:
        docker("rmi", "-f", *ours, check=False)
    docker("image", "prune", "-f", check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("keys")
    key, pub = keypair(d, "release")
    _, other = keypair(d, "other")
    return {"key": key, "pub": pub, "other": other}


@pytest.fixture(scope="module")
def hub_and_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The hub of this module's builds and the directory whose istiobuild.toml names its own base images: every
    `invoke` of a build or rebuild here runs there."""
    hub = f"127.0.0.1:{free_port()}/repro{uuid.uuid4().hex[:8]}"
    yield hub, own_base_images(tmp_path_factory.mktemp("repro-config"), hub)
    docker("rmi", "-f", *(f"{hub.rpartition('/')[2]}-base:{g}" for g in GOARCH.values()), check=False)


@pytest.fixture(scope="module")
def twice(
    keys: dict[str, Path], hub_and_config: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, Any], dict[str, Any], str]]:
    hub, config = hub_and_config
    port = int(hub.split(":")[1].split("/")[0])
    runs: list[dict[str, Any]] = []
    registry = None
    try:
        for name in ("first", "second"):
            forget_images(hub)
            root = tmp_path_factory.mktemp(f"repro-{name}")
            _, registry = start_registry(root / "registry", port=port)
            runs.append({arch: build(root / "work", root / "cache", arch, hub, keys["key"], config) for arch in ARCHES})
            if name == "first":
                registry.terminate()
                registry.wait(timeout=30)
        yield runs[0], runs[1], hub
    finally:
        if registry is not None:
            registry.terminate()
            registry.wait(timeout=30)
        forget_images(hub)


Twice = tuple[dict[str, Any], dict[str, Any], str]


@pytest.mark.parametrize("arch", ARCHES)
def test_two_builds_are_identical(twice: Twice, arch: str) -> None:
    first, second, _ = twice
    a, b = first[arch], second[arch]
    assert a["out"] != b["out"]
    assert a["envoy"] == b["envoy"]
    assert a["go"] == b["go"] and a["go"]
    assert a["images"] == b["images"] and a["images"]
    assert a["pushed"] == b["pushed"] and set(a["pushed"]) == set(a["images"])
    log = (b["out"].parent / "logs" / f"example-{arch}-images.log").read_text(errors="replace")
    assert "Using cache" not in log  # the second build made every layer again


def test_no_paths_hosts_or_users_in_outputs(twice: Twice) -> None:
    first, _, _ = twice
    host = socket.gethostname().encode()
    user = getpass.getuser().encode()
    for arch in ARCHES:
        out: Path = first[arch]["out"]
        workdir = str(out.parent).encode()
        binaries = [out / "artifacts" / "envoy", *sorted((out.parent / "example" / "istio" / "out").rglob("pilot-*"))]
        assert len(binaries) >= 3
        for path in binaries:
            data = path.read_bytes()
            assert workdir not in data, f"{path} names the workdir"
            # a short name ("vm") or "root" is a word binaries hold anyway (Go's runtime, libc): only longer ones
            if len(host) >= 6:
                assert host not in data, f"{path} names this host"
            if len(user) >= 6:
                assert user not in data, f"{path} names the user"


def test_image_config_times_come_from_the_sources(twice: Twice) -> None:
    _, second, _ = twice
    for image_id in second["x86_64"]["images"].values():
        config = json.loads(docker("image", "inspect", image_id))[0]
        assert config["Created"] == "2024-01-01T00:00:00Z"
        assert config["Config"]["Labels"]["org.opencontainers.image.created"] == "2024-01-01T00:00:00Z"
        assert config["Config"]["Labels"]["org.opencontainers.image.source"] == "example:istio"
        assert config["Container"] == "" and config["ContainerConfig"]["Hostname"] == ""


def test_layer_files_are_clamped_to_the_source_date(twice: Twice, tmp_path: Path) -> None:
    _, second, _ = twice
    image_id = second["aarch64"]["images"][next(iter(second["aarch64"]["images"]))]
    saved = tmp_path / "image.tar"
    subprocess.run(["docker", "save", "-o", str(saved), image_id], check=True)
    with tarfile.open(saved) as outer:
        manifest = json.loads(outer.extractfile("manifest.json").read())[0]  # type: ignore[union-attr]
        assert len(manifest["Layers"]) > 2
        for layer in manifest["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer), mode="r|") as inner:
                late = [m.name for m in inner if m.mtime > EPOCH or m.uname or m.gname]
            assert not late, f"{layer}: {late[:5]}"


# -- SBOM ----------------------------------------------------------------------------------------


def test_an_sbom_per_image_valid_and_reproducible(twice: Twice) -> None:
    first, second, _ = twice
    for arch in ARCHES:
        a, b = first[arch]["out"] / "sbom", second[arch]["out"] / "sbom"
        names = sorted(p.name for p in b.glob("*.cdx.json"))
        assert names == sorted(p.name for p in a.glob("*.cdx.json")) and "proxyv2.cdx.json" in names
        for name in names:
            assert (a / name).read_bytes() == (b / name).read_bytes(), f"{arch} {name} differs between the builds"
    doc = json.loads((second["x86_64"]["out"] / "sbom" / "proxyv2.cdx.json").read_text())
    sbom.validate(doc)  # the CycloneDX 1.6 JSON schema bundled with cyclonedx-python-lib, strict
    by_name = {c["name"]: c for c in doc["components"]}
    envoy = by_name["/usr/local/bin/envoy"]
    assert envoy["hashes"] == [{"alg": "SHA-256", "content": second["x86_64"]["envoy"]}]
    commits = {c["name"]: c["pedigree"]["commits"][0]["uid"] for c in doc["components"] if c.get("pedigree")}
    assert commits.get("istio") == ISTIO_COMMIT, commits
    assert any(c.get("purl", "").startswith("pkg:golang/") for c in doc["components"])  # pilot-agent's modules
    assert str(second["x86_64"]["out"].parent) not in json.dumps(doc)


# -- provenance, signatures, verify ------------------------------------------------------------


def test_provenance_names_every_artifact(twice: Twice, keys: dict[str, Path]) -> None:
    _, second, hub = twice
    b = second["aarch64"]
    statement = json.loads((b["out"] / "provenance.json").read_text())
    provenance.validate(statement)  # the published protobuf schemas (in-toto Statement v1, SLSA Provenance v1)
    subjects = provenance.subjects_of(statement)
    assert subjects["envoy"] == {"sha256": b["envoy"]}
    for name, digest in b["go"].items():
        assert name == "envoy" or subjects[name] == {"sha256": digest}
    for image, digest in b["pushed"].items():
        assert subjects[image] == {"sha256": digest.removeprefix("sha256:")}
    definition = statement["predicate"]["buildDefinition"]
    assert definition["externalParameters"] == {
        "release": "example", "arch": "aarch64", "toolchain": "clang", "pageSize": "4k", "allocator": "gperftools",
        "hub": hub, "tag": "example",
    }  # fmt: skip
    names = {d.get("name") for d in definition["resolvedDependencies"]}
    assert {"proxy", "envoy", "istio"} <= names
    assert any(str(n).startswith("patches/proxy/example/") for n in names)
    text = json.dumps(statement)
    assert str(b["out"].parent) not in text  # no workdir path
    byproducts = {d["name"]: d for d in statement["predicate"]["runDetails"]["byproducts"]}
    assert byproducts["verify.json"]["annotations"] == {"verification": "passed"}
    assert "sbom/proxyv2.cdx.json" in byproducts
    envelope = json.loads((b["out"] / "provenance.dsse.json").read_text())
    assert signing.verify(envelope, keys["pub"]) == statement
    with pytest.raises(signing.VerificationError, match="wrong key"):
        signing.verify(envelope, keys["other"])
    forged = dict(statement, subject=statement["subject"][:1])
    tampered = dict(envelope, payload=base64.b64encode(provenance.dumps(forged)).decode())
    with pytest.raises(signing.VerificationError, match="modified"):
        signing.verify(tampered, keys["pub"])


def test_the_provenance_is_attached_next_to_each_pushed_image(twice: Twice, keys: dict[str, Path]) -> None:
    _, second, _ = twice
    b = second["x86_64"]
    for image, digest in b["pushed"].items():
        repo = image.rpartition(":")[0]
        envelopes = signing.fetch_attached(repo, digest, insecure=True, scratch=b["out"] / "att-scratch")
        assert envelopes and signing.verify(envelopes[0], keys["pub"])["subject"]


def test_verify_checks_provenance_and_signature(twice: Twice, keys: dict[str, Path]) -> None:
    _, second, _ = twice
    b = second["x86_64"]
    image = next(iter(b["pushed"]))
    envelope = b["out"] / "provenance.dsse.json"
    common = ("verify", "--image", image, "--arch", "x86_64", "--provenance")
    proc = invoke(*common, str(envelope), "--key", str(keys["pub"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "provenance: subject" in proc.stdout and "signed by key" in proc.stdout
    wrong = invoke(*common, str(envelope), "--key", str(keys["other"]))
    assert "wrong key" in one_error(wrong)
    other_arch = second["aarch64"]["out"] / "provenance.dsse.json"
    proc = invoke(*common, str(other_arch))
    assert proc.returncode != 0 and "not one of its subjects" in proc.stdout


# -- invoke manifest: only verified per-arch images --------------------------------------------


def test_manifest_joins_verified_images_and_records_the_indexes(
    twice: Twice, keys: dict[str, Path], tmp_path: Path
) -> None:
    _, _, hub = twice
    proc = invoke(
        "manifest", "--hub", hub, "--tag", "example", "--release", "example", "--names", "pilot,proxyv2",
        "--key", str(keys["pub"]), "--signing-key", str(keys["key"]), env={"ISTIOBUILD_WORKDIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "signed by key" in proc.stdout
    envelope = json.loads((tmp_path / "manifest-example" / "provenance.dsse.json").read_text())
    subjects = signing.verify(envelope, keys["pub"])["subject"]
    assert {s["name"] for s in subjects} == {f"{hub}/pilot:example", f"{hub}/proxyv2:example"}
    assert all(s["annotations"]["digestOf"] == "index" for s in subjects)


def test_manifest_refuses_an_unverified_image(twice: Twice, keys: dict[str, Path], tmp_path: Path) -> None:
    _, second, hub = twice
    # another image (a label more), pushed by hand: no provenance names it
    source = next(iter(second["aarch64"]["images"]))
    plain = f"{hub}/pilot:plain-arm64"
    subprocess.run(
        ["docker", "build", "-q", "-t", plain, "--label", "hand=made", "-"], input=f"FROM {source}\n".encode(),
        check=True, capture_output=True, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    docker("tag", second["x86_64"]["images"][next(iter(second["x86_64"]["images"]))], f"{hub}/pilot:plain-amd64")
    docker("push", plain)
    docker("push", f"{hub}/pilot:plain-amd64")
    proc = invoke(
        "manifest", "--hub", hub, "--tag", "plain", "--release", "example", "--names", "pilot",
        env={"ISTIOBUILD_WORKDIR": str(tmp_path)},
    )  # fmt: skip
    assert f"{plain}" in one_error(proc) and "is not verified: no provenance is attached" in proc.stderr
    allowed = invoke(
        "manifest", "--hub", hub, "--tag", "plain", "--release", "example", "--names", "pilot", "--allow-unverified",
        env={"ISTIOBUILD_WORKDIR": str(tmp_path)},
    )  # fmt: skip
    assert allowed.returncode == 0 and "NOT verified (--allow-unverified)" in allowed.stdout


# -- invoke rebuild ----------------------------------------------------------------------------


def test_rebuild_reports_identical(twice: Twice, hub_and_config: tuple[str, Path], tmp_path: Path) -> None:
    _, second, _ = twice
    record = second["x86_64"]["out"] / "build-record.json"
    proc = invoke("rebuild", "--record", str(record), "--workdir", str(tmp_path / "again"), cwd=hub_and_config[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == f"{len(lines) - 1} of {len(lines) - 1} artifacts identical", proc.stdout
    assert any(line.startswith("identical  envoy") for line in lines)


def test_rebuild_names_what_a_changed_toolchain_changes(
    twice: Twice, hub_and_config: tuple[str, Path], tmp_path: Path
) -> None:
    _, second, _ = twice
    record = second["x86_64"]["out"] / "build-record.json"
    proc = invoke(
        "rebuild", "--record", str(record), "--workdir", str(tmp_path / "gcc"), "--toolchain", "gcc",
        cwd=hub_and_config[1],
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "DIFFERS    envoy" in proc.stdout
    assert "first difference at offset" in proc.stdout and "section" in proc.stdout
    assert "DIFFERS    pilot-agent" not in proc.stdout  # Go does not use the C toolchain
    assert "proxyv2" in proc.stdout and "layer" in proc.stdout  # the image holding envoy: its layer and file
    assert "/usr/local/bin/envoy" in proc.stdout
    fresh = invoke("rebuild", "--record", str(record), "--workdir", str(tmp_path / "gcc"))
    assert "is not empty: a rebuild needs a fresh workdir" in one_error(fresh)


# -- release archives (issue 12) ---------------------------------------------------------------


def _archives(out: Path, arch: str) -> tuple[Path, Path]:
    release_dir = out / "release"
    return (
        release_dir / f"istio-0.1.0-linux-{GOARCH[arch]}.tar.gz",
        release_dir / f"istioctl-0.1.0-linux-{GOARCH[arch]}.tar.gz",
    )


@pytest.mark.parametrize("arch", ARCHES)
def test_release_archives_are_identical_and_name_the_build_s_images(twice: Twice, arch: str, tmp_path: Path) -> None:
    first, second, hub = twice
    for a, b in zip(_archives(first[arch]["out"], arch), _archives(second[arch]["out"], arch), strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs between the two workdirs"
        digest = subprocess.run(["sha256sum", a.name], cwd=a.parent, capture_output=True, text=True, check=True)
        assert (a.parent / f"{a.name}.sha256").read_text() == digest.stdout  # `sha256sum -c` reads it
    install, standalone = _archives(second[arch]["out"], arch)
    files = dict(archives.members(install))
    top = "istio-0.1.0"
    for chart in ("install/kubernetes/helm/istio/values.yaml", "install/kubernetes/operator/profiles/default.yaml"):
        text = files[f"{top}/{chart}"].decode()
        assert f"hub: {hub}" in text and "tag: example" in text and "istio-testing" not in text, chart
    with tarfile.open(install) as tar:
        assert all(m.mtime == EPOCH and m.uid == 0 and m.gid == 0 and not m.uname for m in tar)
        names = tar.getnames()
    assert names == sorted(names) and f"{top}/bin/istioctl" in names and f"{top}/manifest.yaml" in names
    assert dict(archives.members(standalone)) == {"istioctl": files[f"{top}/bin/istioctl"]}
    istioctl = tmp_path / "istioctl"
    istioctl.write_bytes(files[f"{top}/bin/istioctl"])
    istioctl.chmod(0o755)
    assert archives.wrong_elves(install, Arch(arch)) == (1, [])
    machine = subprocess.run(["file", "-b", str(istioctl)], capture_output=True, text=True, check=True).stdout
    assert ("ARM aarch64" if arch == "aarch64" else "x86-64") in machine
    # run it: under qemu-user (binfmt) for arm64 on this host
    version = subprocess.run([str(istioctl), "version", "--remote=false"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "0.1.0"
    dump = subprocess.run([str(istioctl), "profile", "dump"], capture_output=True, text=True, check=True).stdout
    assert f"hub: {hub}" in dump and "tag: example" in dump  # the embedded profile, regenerated
    generated = subprocess.run([str(istioctl), "manifest", "generate"], capture_output=True, text=True, check=True)
    assert f'image: "{hub}/pilot:example"' in generated.stdout


def test_release_manifest_and_provenance_name_the_archives(twice: Twice) -> None:
    import yaml

    _, second, hub = twice
    out = second["aarch64"]["out"]
    manifest = yaml.safe_load((out / "release" / "manifest.yaml").read_text())
    install, standalone = _archives(out, "aarch64")
    assert manifest["version"] == "0.1.0" and manifest["docker"] == hub and manifest["tag"] == "example"
    assert manifest["dependencies"]["istio"]["sha"] == ISTIO_COMMIT
    assert {a["name"]: a["sha256"] for a in manifest["archives"]} == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (install, standalone)
    }
    applied = [p["name"] for p in manifest["patches"]["istio"]]
    assert applied[-1] == "generated/release-defaults.patch" and all(p["sha256"] for p in manifest["patches"]["istio"])
    assert {i["name"] for i in manifest["images"]} == set(second["aarch64"]["images"])
    subjects = provenance.subjects_of(json.loads((out / "provenance.json").read_text()))
    assert subjects[f"release/{install.name}"] == {"sha256": hashlib.sha256(install.read_bytes()).hexdigest()}
    assert f"release/{standalone.name}" in subjects and "release/manifest.yaml" in subjects


def test_invoke_release_collects_every_arch(twice: Twice, tmp_path: Path) -> None:
    import yaml

    _, second, _ = twice
    work = second["x86_64"]["out"].parent
    proc = invoke("release", "--workdir", str(work), "--out", str(tmp_path / "dist"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dist = tmp_path / "dist"
    for arch in ARCHES:
        for archive in _archives(second[arch]["out"], arch):
            assert (dist / archive.name).read_bytes() == archive.read_bytes()
        for name in ("manifest.yaml", "build-record.json", "provenance.json", "provenance.dsse.json"):
            assert (dist / arch / name).is_file(), f"{arch}/{name}"
        assert (dist / arch / "sbom" / "proxyv2.cdx.json").is_file()
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=dist, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    joined = yaml.safe_load((dist / "manifest.yaml").read_text())
    assert joined["architectures"] == ["aarch64", "x86_64"] and len(joined["builds"]) == 2
    again = invoke("release", "--workdir", str(work), "--out", str(dist))
    assert "exists and is not an empty directory" in one_error(again)

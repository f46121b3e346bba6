"""Docker images: local base images, OCI labels, verification, push and multi-arch manifests.

The docker SDK does daemon checks, inspect, export, run and push; the CLI (through the runner)
does what the SDK cannot: `docker import --platform` and `docker manifest`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from istiobuild.arch import Arch
from istiobuild.elf import MACHINE_NAMES, MAGIC
from istiobuild.errors import IstiobuildError, SourceError, ToolError
from istiobuild.run import run, which

EXAMPLE_BASE = "istiobuild/example-base"
BUSYBOX_APPLETS = (
    "sh", "ash", "cat", "chmod", "chown", "cp", "echo", "env", "false", "grep", "id", "ln", "ls", "mkdir",
    "mv", "rm", "sed", "sleep", "test", "[", "touch", "true", "uname", "which",
)  # fmt: skip


class DockerError(ToolError):
    """The docker daemon cannot be used."""


def client() -> Any:
    """A docker SDK client for the daemon DOCKER_HOST names (default: the local socket)."""
    import docker

    try:
        cli = docker.from_env(timeout=300)
        cli.ping()
    except docker.errors.DockerException as exc:
        reason = str(exc)
        if "Permission denied" in reason:
            raise DockerError(
                "no permission to use the docker daemon",
                hint="add your user to the docker group (then log in again) or run as root",
            ) from None
        raise DockerError(
            "the docker daemon is not reachable",
            hint="start it (`dockerd &` or `systemctl start docker`); DOCKER_HOST selects another daemon",
        ) from None
    return cli


def has_image(cli: Any, name: str) -> bool:
    import docker

    try:
        cli.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def image_arch(cli: Any, name: str) -> tuple[str, str]:
    attrs = cli.images.get(name).attrs
    return attrs.get("Os", ""), attrs.get("Architecture", "")


# ---------------------------------------------------------------------------------------------
# base images


def busybox_deb(arch: Arch, cache: Path, log: Path) -> Path:
    """busybox-static for the arch, from Debian (apt verifies it against the signed index)."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"busybox-static_*_{arch.goarch}.deb"))
    if found:
        return found[-1]
    if which("apt-get") is None:
        raise ToolError(
            f"no busybox-static .deb for {arch} in {debs}, and no apt-get to fetch one",
            hint=f"put busybox-static_<version>_{arch.goarch}.deb from Debian in {debs}",
        )
    result = run(["apt-get", "download", f"busybox-static:{arch.goarch}"], cwd=debs, log=log, check=False)
    found = sorted(debs.glob(f"busybox-static_*_{arch.goarch}.deb"))
    if result.returncode != 0 or not found:
        raise ToolError(
            f"apt-get could not download busybox-static:{arch.goarch}",
            hint=f"as root: dpkg --add-architecture {arch.goarch} && apt-get update (bash ci/setup.sh does this)",
            log=log,
        )
    return found[-1]


def busybox_rootfs(deb: Path) -> bytes:
    """A minimal root filesystem (tar): busybox, its applets, /etc/passwd and group, /tmp."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as deb_tar:
        member = next(m for m in deb_tar.getmembers() if m.name.lstrip("./") == "bin/busybox")
        fh = deb_tar.extractfile(member)
        assert fh is not None
        busybox = fh.read()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, body: bytes = b"", mode: int = 0o644, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.mode, info.type, info.linkname, info.mtime = mode, kind, link, 0
            info.size = len(body) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)

        for d in ("bin", "etc", "home", "root", "usr", "usr/bin", "usr/lib", "usr/local", "usr/local/bin", "var"):
            add(d, mode=0o755, kind=tarfile.DIRTYPE)
        add("tmp", mode=0o1777, kind=tarfile.DIRTYPE)
        add("bin/busybox", busybox, mode=0o755)
        for applet in BUSYBOX_APPLETS:
            add(f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return out.getvalue()


def ensure_base_images(cli: Any, mapping: Mapping[str, str], arch: Arch, cache: Path, log: Path) -> list[str]:
    """Every image the base-image map points to exists locally for the arch; returns what was made."""
    made = []
    for image in sorted(set(mapping.values())):
        if has_image(cli, image):
            os_, have = image_arch(cli, image)
            if have != arch.goarch:
                raise DockerError(
                    f"base image {image} is {os_}/{have}, but the target is {arch.oci_platform}",
                    hint=f"point base_images.{arch.value} at an image for {arch.oci_platform}",
                )
            continue
        if image.startswith(EXAMPLE_BASE + ":"):
            rootfs = cache / "rootfs" / f"busybox-{arch.goarch}.tar"
            rootfs.parent.mkdir(parents=True, exist_ok=True)
            rootfs.write_bytes(busybox_rootfs(busybox_deb(arch, cache, log)))
            run(
                ["docker", "import", "--platform", arch.oci_platform, str(rootfs), image],
                log=log,
                what=f"docker import {image}",
            )
            finalize(cli, image, {}, arch, cache / "rootfs" / "scratch")  # this daemon ignores --platform
            made.append(image)
            continue
        try:
            cli.images.pull(image, platform=arch.oci_platform)
        except Exception as exc:
            raise DockerError(
                f"base image {image} for {arch.oci_platform} is not available: {type(exc).__name__}",
                hint=f"pull or import it, or map it to one you have with base_images.{arch.value} "
                f"(e.g. {EXAMPLE_BASE}:{arch.goarch})",
            ) from None
    return made


# ---------------------------------------------------------------------------------------------
# labels


def finalize(cli: Any, image: str, labels: Mapping[str, str], arch: Arch, scratch: Path) -> None:
    """Set the image config's labels and platform (os/architecture), same name.

    The classic builder (no buildx here) commits intermediate images with the daemon's platform,
    so a foreign-arch build either fails (--platform) or claims the host's arch. The content is
    what matters and `verify` checks every ELF in it; this makes the metadata say what it is.
    """
    import hashlib

    scratch.mkdir(parents=True, exist_ok=True)
    saved = scratch / "image.tar"
    with saved.open("wb") as fh:
        for chunk in cli.images.get(image).save(named=True):
            fh.write(chunk)
    rewritten = scratch / "image-final.tar"
    with tarfile.open(saved) as src:
        manifest = json.loads(src.extractfile("manifest.json").read())  # type: ignore[union-attr]
        old_name = manifest[0]["Config"]
        config = json.loads(src.extractfile(old_name).read())  # type: ignore[union-attr]
        config["os"], config["architecture"] = "linux", arch.goarch
        config.setdefault("config", {})
        config["config"]["Labels"] = {**(config["config"].get("Labels") or {}), **labels}
        body = json.dumps(config, separators=(",", ":")).encode()
        new_name = hashlib.sha256(body).hexdigest() + ".json"
        manifest[0]["Config"] = new_name
        manifest[0]["RepoTags"] = [image]
        with tarfile.open(rewritten, "w") as dst:
            for member in src.getmembers():
                if member.name in (old_name, "manifest.json", "repositories"):
                    continue
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
            for name, data in ((new_name, body), ("manifest.json", json.dumps(manifest).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                dst.addfile(info, io.BytesIO(data))
    with rewritten.open("rb") as fh:
        cli.images.load(fh.read())
    saved.unlink()
    rewritten.unlink()


# ---------------------------------------------------------------------------------------------
# verification


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finding:
    image: str
    ok: bool
    what: str


def scan_elves(stream: Iterable[bytes], arch: Arch) -> tuple[int, list[tuple[str, str]], set[str]]:
    """Read an exported filesystem tar once; returns (ELF files seen, [(path, machine)] of the wrong
    ones, every regular file's path)."""
    reader = _StreamReader(stream)
    count, wrong, files = 0, [], set()
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                files.add("/" + member.name.lstrip("./"))
            if not member.isfile() or member.size < 20:
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            head = fh.read(20)
            if head[:4] != MAGIC:
                continue
            count += 1
            machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
            if machine != arch.elf_machine:
                wrong.append(("/" + member.name.lstrip("./"), MACHINE_NAMES.get(machine, f"machine {machine}")))
    return count, wrong, files


class _StreamReader(io.RawIOBase):
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(target), len(self._buffer))
        target[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n


def verify_image(
    cli: Any, image: str, arch: Arch, *, labels: Mapping[str, str] | None, envoy: str = "/usr/local/bin/envoy"
) -> list[Finding]:
    """Platform, the arch of every ELF in the filesystem, envoy --version (if present), labels."""
    import docker

    findings = []
    try:
        attrs = cli.images.get(image).attrs
    except docker.errors.ImageNotFound:
        return [Finding(image=image, ok=False, what="image not found")]
    platform = f"{attrs.get('Os')}/{attrs.get('Architecture')}"
    findings.append(Finding(image=image, ok=platform == arch.oci_platform, what=f"platform {platform}"))
    container = cli.containers.create(image, entrypoint=["/nonexistent"], platform=arch.oci_platform)
    try:
        count, wrong, files = scan_elves(container.export(), arch)
    finally:
        container.remove(force=True)
    for path, machine in wrong:
        findings.append(Finding(image=image, ok=False, what=f"{path} is a {machine} binary, not {arch}"))
    findings.append(Finding(image=image, ok=not wrong, what=f"{count} ELF files, {count - len(wrong)} for {arch}"))
    if envoy in files:
        try:
            out = cli.containers.run(
                image, entrypoint=[envoy], command=["--version"], remove=True, platform=arch.oci_platform, stderr=True
            )
            text = out.decode(errors="replace").strip()
            findings.append(
                Finding(
                    image=image, ok="version" in text, what=f"envoy --version: {text.splitlines()[-1] if text else ''}"
                )
            )
        except docker.errors.ContainerError as exc:
            findings.append(Finding(image=image, ok=False, what=f"envoy --version failed: exit {exc.exit_status}"))
    if labels is not None:
        have = attrs.get("Config", {}).get("Labels") or {}
        missing = [k for k, v in labels.items() if have.get(k) != v]
        findings.append(
            Finding(
                image=image,
                ok=not missing,
                what="labels: "
                + ("source repos and commits recorded" if not missing else f"missing or wrong {', '.join(missing)}"),
            )
        )
    return findings


# ---------------------------------------------------------------------------------------------
# publishing


def push(cli: Any, images: Iterable[str]) -> dict[str, str]:
    """Push each image; credentials come from the docker config or its credential helpers."""
    digests = {}
    for image in images:
        repo, _, tag = image.rpartition(":")
        try:
            for event in cli.images.push(repo, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise SourceError(_push_error(image, str(event["error"])), hint=_PUSH_HINT)
                aux = event.get("aux") or {}
                if "Digest" in aux:
                    digests[image] = aux["Digest"]
        except IstiobuildError:
            raise
        except Exception as exc:
            raise SourceError(_push_error(image, type(exc).__name__), hint=_PUSH_HINT) from None
    return digests


_PUSH_HINT = "check that the registry runs and `docker login <registry>` (credentials are never printed)"


def _push_error(image: str, reason: str) -> str:
    lowered = reason.lower()
    if "unauthorized" in lowered or "denied" in lowered or "authentication" in lowered:
        return f"the registry refused {image}: not authorized"
    if "connection refused" in lowered or "no such host" in lowered or "dial tcp" in lowered or "timeout" in lowered:
        return f"the registry for {image} is not reachable"
    return f"pushing {image} failed: {reason.splitlines()[0][:200]}"


def manifest(target: str, sources: Iterable[str], *, insecure: bool, log: Path) -> None:
    """Join per-arch images (already in the registry) into one multi-arch tag and push it."""
    flag = ["--insecure"] if insecure else []
    run(["docker", "manifest", "rm", target], log=log, check=False)
    run(["docker", "manifest", "create", *flag, target, *sources], log=log, what=f"docker manifest create {target}")
    run(["docker", "manifest", "push", *flag, "--purge", target], log=log, what=f"docker manifest push {target}")

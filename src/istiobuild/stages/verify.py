"""Stage verify: every image's platform, the arch of every ELF file in it, envoy --version, the labels;
then the verified images get their final names."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from istiobuild import dockerapi, fsutil
from istiobuild.arch import Arch
from istiobuild.elf import MACHINE_NAMES, MAGIC
from istiobuild.errors import StepFailed
from istiobuild.executor import Executor
from istiobuild.stages.images import labels, names
from istiobuild.steps import Action, PlanInput, Stage, StageName


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
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):  # already being removed
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifyImages(Action):
    images: tuple[str, ...]
    arch: Arch
    labels: Mapping[str, str]
    record: Path

    def render(self) -> str:
        return (
            f"check {', '.join(self.images)}: platform {self.arch.oci_platform}, every ELF file for {self.arch}, "
            f"envoy --version where present, the OCI labels; findings in {self.record}"
        )

    def perform(self, ex: Executor) -> None:
        findings = []
        for image in self.images:
            findings += verify_image(ex.docker(), image, self.arch, labels=self.labels)
        fsutil.write_json(self.record, [dataclasses.asdict(f) for f in findings])
        for finding in findings:
            if finding.ok:
                ex.console.info(f"{finding.image}: {finding.what}")
        bad = [f for f in findings if not f.ok]
        if bad:
            raise StepFailed(
                f"{bad[0].image}: {bad[0].what}" + (f" (and {len(bad) - 1} more problems)" if len(bad) > 1 else ""),
                hint=f"every finding is in {self.record}",
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class TagImages(Action):
    pairs: tuple[tuple[str, str], ...]  # (built, final)

    def render(self) -> str:
        return "tag the verified images under their final names: " + ", ".join(f"{a} -> {b}" for a, b in self.pairs)

    def perform(self, ex: Executor) -> None:
        for built, final in self.pairs:
            with dockerapi.name_lock(final):
                dockerapi.tag(ex.docker(), built, final)
        ex.console.info(f"images: {', '.join(final for _, final in self.pairs)}")


def plan(p: PlanInput) -> Stage:
    from istiobuild.stages.images import build_tag

    built, final = names(p, build_tag(p)), names(p, p.arch_tag)
    return Stage(
        name=StageName.VERIFY,
        summary="check every image: platform, ELF arch of every file, envoy --version, labels",
        steps=(
            VerifyImages(images=built, arch=p.arch, labels=labels(p), record=p.layout.record("verify")),
            TagImages(pairs=tuple(zip(built, final, strict=True))),
        ),
        produces=(p.layout.record("verify"),),
        images=final,
    )

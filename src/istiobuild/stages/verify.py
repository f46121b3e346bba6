"""Stage verify: every image's platform, the arch of every ELF file in it, the versions its binaries and
its config report (against the plan's release metadata), the labels; then the verified images get their
final names."""

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
from istiobuild.release import Component
from istiobuild.stages import record
from istiobuild.stages.images import labels, names
from istiobuild.steps import Action, PlanInput, Stage, StageName

# Istio binaries whose `version` command (istio.io/pkg/version) is run where an image has them.
VERSION_PROBES: dict[str, tuple[str, ...]] = {
    "/usr/local/bin/pilot-discovery": ("version",),
    "/usr/local/bin/pilot-agent": ("version",),
    "/usr/local/bin/istioctl": ("version", "--remote=false", "--short=false"),
}
# Image config variables the proxy Dockerfiles set from the istio_version / proxy_version build args.
VERSION_ENV = ("ISTIO_META_ISTIO_VERSION", "ISTIO_META_ISTIO_PROXY_SHA")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finding:
    image: str
    ok: bool
    what: str
    reported: Mapping[str, str] | None = None  # the version fields a binary or the image config reported


@dataclasses.dataclass(frozen=True, kw_only=True)
class Expected:
    """What the plan says the images must report (docs/metadata.md)."""

    istio: Mapping[str, str]  # BuildInfo fields of istio's Go binaries
    envoy: Mapping[str, str]  # revision and status in envoy --version
    env: Mapping[str, str]  # image config variables
    modified_ok: bool = False  # the patch stage recorded --allow-modified edits: a status may end in -modified


def expected(p: PlanInput) -> Expected:
    meta = record.metadata(p)
    return Expected(
        istio=record.istio_expected(meta),
        envoy=record.envoy_expected(meta),
        env={
            "ISTIO_META_ISTIO_VERSION": meta.version,
            "ISTIO_META_ISTIO_PROXY_SHA": f"istio-proxy:{meta.proxy_revision}",
        },
    )


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
    cli: Any,
    image: str,
    arch: Arch,
    *,
    labels: Mapping[str, str] | None,
    envoy: str = "/usr/local/bin/envoy",
    expect: Expected | None = None,
) -> list[Finding]:
    """Platform, the arch of every ELF in the filesystem, the versions envoy, istio's binaries and the image
    config report (compared with `expect` when given), labels."""
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
        findings.append(_envoy_version(cli, image, arch, envoy, expect))
    for path, args in VERSION_PROBES.items():
        if path in files:
            findings.append(_istio_version(cli, image, arch, path, args, expect))
    findings += _config_versions(image, attrs, expect)
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


def _run(cli: Any, image: str, arch: Arch, path: str, args: tuple[str, ...]) -> tuple[str, int]:
    """Run one file of the image with `args` (under qemu for a foreign arch): (output, exit status)."""
    import docker

    try:
        out = cli.containers.run(
            image, entrypoint=[path], command=list(args), remove=True, platform=arch.oci_platform, stderr=True
        )
    except docker.errors.ContainerError as exc:
        return "", exc.exit_status
    return out.decode(errors="replace").strip(), 0


def _compare(reported: Mapping[str, str], wanted: Mapping[str, str] | None, expect: Expected | None) -> list[str]:
    if expect is None or wanted is None:
        return []
    return record.mismatches(reported, wanted, modified_ok=expect.modified_ok)


def _envoy_version(cli: Any, image: str, arch: Arch, envoy: str, expect: Expected | None) -> Finding:
    text, status = _run(cli, image, arch, envoy, ("--version",))
    if status:
        return Finding(image=image, ok=False, what=f"envoy --version failed: exit {status}")
    reported = record.envoy_reported(text)
    wrong = _compare(reported, expect.envoy if expect else None, expect)
    line = text.splitlines()[-1] if text else ""
    what = f"envoy --version: {line}" + (f" (wrong: {'; '.join(wrong)})" if wrong else "")
    return Finding(image=image, ok="version" in text and not wrong, what=what, reported=reported)


def _istio_version(
    cli: Any, image: str, arch: Arch, path: str, args: tuple[str, ...], expect: Expected | None
) -> Finding:
    name = f"{path.rsplit('/', 1)[-1]} {' '.join(args)}"
    text, status = _run(cli, image, arch, path, args)
    reported = record.istio_reported(text)
    if status or not reported:
        return Finding(image=image, ok=False, what=f"{name}: no version reported (exit {status})")
    wrong = _compare(reported, expect.istio if expect else None, expect)
    shown = ", ".join(f"{k} {v}" for k, v in reported.items() if k != "GolangVersion")
    what = f"{name}: {shown}" + (f" (wrong: {'; '.join(wrong)})" if wrong else "")
    return Finding(image=image, ok=not wrong, what=what, reported=reported)


def _config_versions(image: str, attrs: Mapping[str, Any], expect: Expected | None) -> list[Finding]:
    pairs = (item.partition("=") for item in (attrs.get("Config") or {}).get("Env") or [])
    env = {k: v for k, _, v in pairs if k in VERSION_ENV}
    if not env:
        return []
    wrong = _compare(env, {k: v for k, v in (expect.env if expect else {}).items() if k in env}, expect)
    what = "image env " + ", ".join(f"{k}={v}" for k, v in sorted(env.items()))
    return [
        Finding(image=image, ok=not wrong, what=what + (f" (wrong: {'; '.join(wrong)})" if wrong else ""), reported=env)
    ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class VerifyImages(Action):
    images: tuple[str, ...]
    arch: Arch
    labels: Mapping[str, str]
    record: Path
    expect: Expected
    patches_record: Path

    def render(self) -> str:
        wanted = ", ".join(f"{k} {v}" for k, v in {**self.expect.istio, **self.expect.env}.items())
        envoy = ", ".join(f"{k} {v}" for k, v in self.expect.envoy.items())
        return (
            f"check {', '.join(self.images)}: platform {self.arch.oci_platform}, every ELF file for {self.arch}, "
            f"envoy --version where present ({envoy}), {', '.join(VERSION_PROBES)} `version` where present and the "
            f"image config ({wanted}), the OCI labels; findings in {self.record}"
        )

    def perform(self, ex: Executor) -> None:
        findings = []
        modified_ok = record.modified(self.patches_record, list(Component))
        expect = dataclasses.replace(self.expect, modified_ok=modified_ok)
        for image in self.images:
            findings += verify_image(ex.docker(), image, self.arch, labels=self.labels, expect=expect)
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
        summary="check every image: platform, ELF arch of every file, the versions it reports, labels",
        steps=(
            VerifyImages(
                images=built,
                arch=p.arch,
                labels=labels(p),
                record=p.layout.record("verify"),
                expect=expected(p),
                patches_record=p.layout.record("patches"),
            ),
            TagImages(pairs=tuple(zip(built, final, strict=True))),
        ),
        produces=(p.layout.record("verify"),),
        images=final,
    )

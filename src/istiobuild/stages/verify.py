"""Stage verify: every image's platform, the arch of every ELF file in it, the versions its binaries and
its config report (against the plan's release metadata), the labels; then the verified images get their
final names."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild import dockerapi, fsutil, imagefs, sbom
from istiobuild.arch import Arch
from istiobuild.elf import MACHINE_NAMES
from istiobuild.errors import StepFailed
from istiobuild.executor import Executor
from istiobuild.release import Component
from istiobuild.secrets import redact_url
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
    # istio's make docker passes proxy_version=istio-proxy:<sha>; docker-builder (tools/docker.yaml) the bare sha
    definitions = bool(p.release.mechanism and p.release.mechanism.definitions)
    return Expected(
        istio=record.istio_expected(meta),
        envoy=record.envoy_expected(meta),
        env={
            "ISTIO_META_ISTIO_VERSION": meta.version,
            "ISTIO_META_ISTIO_PROXY_SHA": meta.proxy_revision if definitions else f"istio-proxy:{meta.proxy_revision}",
        },
    )


def verify_image(
    cli: Any,
    image: str,
    arch: Arch,
    *,
    labels: Mapping[str, str] | None,
    envoy: str = "/usr/local/bin/envoy",
    expect: Expected | None = None,
    scan: imagefs.ImageScan | None = None,
    scratch: Path | None = None,
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
    if scan is None:
        scan = imagefs.scan_image(cli, image, scratch or Path(tempfile.gettempdir()), platform=arch.oci_platform)
    elves = [f for f in scan.files if f.elf_machine is not None]
    wrong = [(f.path, MACHINE_NAMES.get(f.elf_machine or 0, f"machine {f.elf_machine}")) for f in elves
             if f.elf_machine != arch.elf_machine]  # fmt: skip
    count, files = len(elves), {f.path for f in scan.files}
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

    container = cli.containers.create(image, entrypoint=[path], command=list(args), platform=arch.oci_platform)
    try:
        container.start()
        status = int(container.wait().get("StatusCode", 1))
        out = container.logs(stdout=True, stderr=True) if status == 0 else b""
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):  # already being removed
            container.remove(force=True)
    return out.decode(errors="replace").strip(), status


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
    finals: tuple[str, ...]  # the names the SBOMs give the images (not the workdir's build names)
    arch: Arch
    labels: Mapping[str, str]
    record: Path
    expect: Expected
    patches_record: Path
    sbom_dir: Path
    sources: tuple[sbom.SourceRef, ...]
    base_images: Path  # the images stage's record: the base image of docker.base
    epoch: int
    scratch: Path

    def render(self) -> str:
        wanted = ", ".join(f"{k} {v}" for k, v in {**self.expect.istio, **self.expect.env}.items())
        envoy = ", ".join(f"{k} {v}" for k, v in self.expect.envoy.items())
        return (
            f"check {', '.join(self.images)}: platform {self.arch.oci_platform}, every ELF file for {self.arch}, "
            f"envoy --version where present ({envoy}), {', '.join(VERSION_PROBES)} `version` where present and the "
            f"image config ({wanted}), the OCI labels; findings in {self.record}; from the same read of every file, "
            f"a CycloneDX SBOM per image in {self.sbom_dir}"
        )

    def perform(self, ex: Executor) -> None:
        findings = []
        modified_ok = record.modified(self.patches_record, list(Component))
        expect = dataclasses.replace(self.expect, modified_ok=modified_ok)
        cli = ex.docker()
        for image, final in zip(self.images, self.finals, strict=True):
            scan = imagefs.scan_image(cli, image, self.scratch, platform=self.arch.oci_platform)
            findings += verify_image(cli, image, self.arch, labels=self.labels, expect=expect, scan=scan)
            self._sbom(cli, image, final, scan)
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

    def _sbom(self, cli: Any, image: str, final: str, scan: imagefs.ImageScan) -> None:
        from istiobuild.attest import version

        doc = sbom.build(
            image=final,
            image_id=dockerapi.image_id(cli, image),
            platform=self.arch.oci_platform,
            scan=scan,
            sources=self.sources,
            base=_base(self.base_images),
            epoch=self.epoch,
            tool_version=version(),
        )
        sbom.write(self.sbom_dir / sbom_name(final), doc)


def sbom_name(image: str) -> str:
    """proxyv2.cdx.json for <hub>/proxyv2:<tag>."""
    return image.rpartition("/")[2].partition(":")[0] + ".cdx.json"


def _base(record_path: Path) -> tuple[str, str] | None:
    """The base image of istio's docker.base (every image's base) by repo digest, else its ID."""
    data = fsutil.read_json_object(record_path) or {}
    for entry in data.get("images", []):
        if "docker.base" in entry.get("targets", []):
            digests = [d.rpartition("@")[2] for d in entry.get("repo_digests") or []]
            return str(entry["image"]), (digests or [str(entry["id"])])[0]
    return None


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
                finals=final,
                arch=p.arch,
                labels=labels(p),
                record=p.layout.record("verify"),
                expect=expected(p),
                patches_record=p.layout.record("patches"),
                sbom_dir=p.layout.out_dir / "sbom",
                sources=tuple(
                    sbom.SourceRef(name=c.value, url=redact_url(p.release.urls[c]), commit=pin.commit, tag=pin.tag)
                    for c, pin in p.release.pins.items()
                ),
                base_images=p.layout.record("base-images"),
                epoch=p.release.source_date_epoch,
                scratch=p.layout.scratch,
            ),
            TagImages(pairs=tuple(zip(built, final, strict=True))),
        ),
        produces=(p.layout.record("verify"), *(p.layout.out_dir / "sbom" / sbom_name(n) for n in final)),
        images=final,
    )

"""Stage images: istio's images built by istio's own make targets, under names unique to this workdir."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from istiobuild import baseimages, container, dockerapi, downloads, fsutil, normalize
from istiobuild.arch import Arch
from istiobuild.errors import StepFailed
from istiobuild.executor import Executor
from istiobuild.imagedefs import BuildFromDefinitions
from istiobuild.release import Component
from istiobuild.secrets import redact_url
from istiobuild.stages import record
from istiobuild.stages.istio import environment, istio_out
from istiobuild.steps import Action, PlanInput, Stage, StageName, Step


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnsureBaseImages(Action):
    """Every base image the Dockerfiles of this build name, resolved for the target platform and recorded.

    The pipeline's preflight calls `resolve` before any stage runs; `perform` resolves again right before
    `make docker` (hours later) and writes the record."""

    bases: tuple[baseimages.Base, ...]
    arch: Arch
    debs: Path
    rootfs: Path
    record: Path

    def render(self) -> str:
        named = ", ".join(
            b.name + (f" -> {b.use}" if b.use != b.name else "") + (f" (pinned {b.pin})" if b.pin else "")
            for b in self.bases
        )
        return (
            f"every base image the Dockerfiles name ({named or 'none'}) must exist locally for "
            f"{self.arch.oci_platform} (the example's are imported from a busybox-static rootfs; others are pulled "
            f"with --platform {self.arch.oci_platform}), with the pinned digest if any; recorded in {self.record}"
        )

    def resolve(self, ex: Executor) -> list[dict[str, object]]:
        resolved = baseimages.resolve(
            ex.docker(), self.bases, self.arch, debs=self.debs, rootfs=self.rootfs, log=ex.log
        )
        for found in resolved:
            if found["how"] != "local":
                ex.console.info(f"base image {found['image']} {found['how']} for {self.arch.oci_platform}")
        return resolved

    def perform(self, ex: Executor) -> None:
        baseimages.write_record(self.record, self.arch, self.resolve(ex))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FinalizeImages(Action):
    """Reproducible images (normalize.py): the same sources and base images give the same image IDs."""

    images: tuple[str, ...]
    labels: Mapping[str, str]
    arch: Arch
    epoch: int
    bases: tuple[str, ...]  # external base images: their layers are kept byte for byte
    replace: Mapping[str, str]  # the workdir's build tag -> the final tag, in history text
    scratch: Path

    def render(self) -> str:
        return (
            f"rewrite {', '.join(self.images)} reproducibly: platform {self.arch.oci_platform} (the classic builder "
            f"records the host's); every layer the build made with file mtimes clamped to SOURCE_DATE_EPOCH="
            f"{self.epoch}, no user/group names, no atime/ctime (the layers of {', '.join(self.bases) or 'no base'} "
            f"kept as they are); the config's times and history at {normalize.iso(self.epoch)}, no build container, "
            f"host or daemon details, {', '.join(f'{k} -> {v}' for k, v in self.replace.items())} in history; "
            f"the OCI labels {', '.join(f'{k}={v}' for k, v in sorted(self.labels.items()))}"
        )

    def perform(self, ex: Executor) -> None:
        cli = ex.docker()
        keep = normalize.layer_ids(cli, self.bases)
        for image in self.images:
            if not dockerapi.has_image(cli, image):
                raise StepFailed(f"istio's make docker finished but {image} does not exist", log=ex.log)
            image_id = normalize.normalize(
                cli,
                image,
                arch=self.arch,
                epoch=self.epoch,
                labels=self.labels,
                keep=keep,
                replace=self.replace,
                scratch=self.scratch,
            )
            ex.console.info(f"{image}: {image_id}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class UntagBases(Action):
    """istio's own bases were built under this workdir's build tag only for the FROM lines of `make docker`: once
    the images are made, the tags go (the layers the images share stay), so builds do not pile them up."""

    names: tuple[str, ...]

    def render(self) -> str:
        return f"untag {', '.join(self.names)} (intermediate: only the FROM lines of the images above used them)"

    def perform(self, ex: Executor) -> None:
        cli = ex.docker()
        for name in self.names:
            if dockerapi.has_image(cli, name):
                cli.images.remove(name, noprune=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckBinaries(Action):
    """What the images copy from istio's out dir is what the istio stage built and recorded: a binary replaced
    since (a pre-placed envoy or ztunnel, a Go binary) is refused, not packed."""

    root: Path
    record: Path

    def render(self) -> str:
        return f"every ELF file {self.record} lists under {self.root} must still have its recorded sha256"

    def perform(self, ex: Executor) -> None:
        recorded = fsutil.read_json_object(self.record) or {}
        for name, entry in sorted(recorded.items()):
            path = self.root / name
            if not path.is_file() or downloads.sha256_file(path) != entry.get("sha256"):
                raise StepFailed(
                    f"{path} changed since the istio stage built and recorded it",
                    hint="rebuild it: invoke build --from istio",
                    log=ex.log,
                )


def build_tag(p: PlanInput) -> str:
    """The tag images are built under: the per-arch tag plus a suffix unique to the workdir, so two builds in
    different workdirs with the same hub and tag never see each other's images. Verify tags the final names."""
    suffix = hashlib.sha256(str(p.settings.workdir).encode()).hexdigest()[:8]
    return f"{p.arch_tag}-w{suffix}"


def names(p: PlanInput, tag: str) -> tuple[str, ...]:
    targets = p.release.docker_targets_for(p.arch)
    return tuple(f"{p.settings.hub}/{t.removeprefix('docker.')}:{tag}" for t in targets)


def labels(p: PlanInput) -> dict[str, str]:
    """OCI labels naming the sources and commits: the release's repositories, not the mirror or path this build
    fetched from (labels are part of the image: they must not depend on the machine), and the sources' time."""
    return {
        "org.opencontainers.image.created": normalize.iso(p.release.source_date_epoch),
        "org.opencontainers.image.source": redact_url(p.release.urls[Component.ISTIO]),
        "org.opencontainers.image.revision": p.release.pins[Component.ISTIO].commit,
        "org.opencontainers.image.version": p.release.version,
        "io.istiobuild.release": p.release.version,
        "io.istiobuild.arch": p.arch.value,
        "io.istiobuild.toolchain": p.toolchain.name,
        **{f"io.istiobuild.{c.value}.source": redact_url(p.release.urls[c]) for c in Component},
        **{f"io.istiobuild.{c.value}.revision": p.release.pins[c].commit for c in Component},
    }


def plan(p: PlanInput) -> Stage:
    istio_dir = p.checkout(Component.ISTIO)
    tag = build_tag(p)
    targets = p.release.docker_targets_for(p.arch)
    skipped = sorted(set(p.release.docker_targets) - set(targets))
    base_map = {**p.release.base_images.get(p.arch, {}), **p.settings.base_images.get(p.arch.value, {})}
    # the classic builder (no buildx); no --platform: the base images are already the target's, and
    # forcing it breaks multi-stage builds on dockerd 20.10
    env = {**environment(p), "DOCKER_BUILDKIT": "0"}
    built = names(p, tag)
    bases = baseimages.bases_for(p.release, p.arch, base_map)
    summary = "build istio's images with istio's own make targets"
    untag: tuple[Step, ...] = ()
    if p.release.mechanism and p.release.mechanism.images == "docker_builder_yaml":
        summary = f"build istio's images from istio's own definitions ({p.release.mechanism.definitions})"
        driver: tuple[Step, ...] = (
            BuildFromDefinitions(
                istio=istio_dir,
                definitions=p.release.mechanism.definitions,
                docker_targets=targets,
                goarch=p.arch.goarch,
                hub=p.settings.hub,
                tag=tag,
                versions={"proxy": p.release.pins[Component.PROXY].commit, "istio": record.metadata(p).version},
                env=env,
            ),
        )
    else:
        driver = _make_docker(p, {**env, "TAG": tag, "BASE_VERSION": tag}, tag, targets, skipped)
        untag = (UntagBases(names=tuple(f"{base}:{tag}" for base in p.release.istio_bases)),)
    return Stage(
        name=StageName.IMAGES,
        summary=summary,
        steps=(
            EnsureBaseImages(
                bases=bases,
                arch=p.arch,
                debs=p.layout.debs,
                rootfs=p.layout.rootfs,
                record=p.layout.record("base-images"),
            ),
            CheckBinaries(root=istio_out(p), record=p.layout.record("istio")),
            *driver,
            FinalizeImages(
                images=built,
                labels=labels(p),
                arch=p.arch,
                epoch=p.release.source_date_epoch,
                bases=tuple(sorted({b.use for b in bases})),
                replace={tag: p.arch_tag},
                scratch=p.layout.scratch,
            ),
            *untag,
        ),
        reads=(istio_dir,),
        consumes=(p.layout.artifacts / "envoy", p.layout.record("istio")),
        images=built,
        notes=tuple(f"base image {k} -> {v}" for k, v in sorted(base_map.items())),
    )


def _make_docker(
    p: PlanInput, env: Mapping[str, str], tag: str, targets: Sequence[str], skipped: Sequence[str]
) -> tuple[Step, ...]:
    """Up to 1.13: istio's make docker targets, the bases first (docker.base, from 1.7 docker.distroless) under the
    names the Dockerfiles' FROM lines use, whatever HUB is. 1.13's tools/docker-builder needs buildx: its own
    switch DOCKER_V2_BUILDER=false keeps the classic rule (docs/lines.md)."""
    istio_dir = p.checkout(Component.ISTIO)
    mechanism = p.release.mechanism
    # one variant, untagged: a DOCKER_BUILD_VARIANTS from the caller's environment would tag <hub>/base:<tag>-debug
    classic = ["DOCKER_BUILD_VARIANTS=default"]
    classic += ["DOCKER_V2_BUILDER=false"] if mechanism and mechanism.images == "docker_builder_make" else []
    hub = p.release.base_hub
    make_docker = [
        "make",
        "docker",
        f"HUB={p.settings.hub}",
        f"TAG={tag}",
        f"BASE_VERSION={tag}",
        *classic,
        f"DOCKER_TARGETS={' '.join(targets)}",
    ]
    bases = list(p.release.base_targets)
    return (
        container.images_command(
            p,
            ["make", *bases, f"HUB={hub}", f"TAG={tag}", *classic],
            istio_dir,
            env,
            f"the base images ({', '.join(bases)}) under the names the Dockerfiles' FROM lines use, "
            f"{hub}/<name>:{tag}, whatever HUB is",
        ),
        container.images_command(
            p, make_docker, istio_dir, env, f"images; skipped for {p.arch}: {', '.join(skipped) or 'none'}"
        ),
    )

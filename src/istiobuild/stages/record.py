"""Stage record: what was built, from what, with what: one JSON file per release and arch.

Also the release metadata every binary is stamped with (`metadata`): the version, the pinned revisions
and a build status naming our patch series, decided by the plan, written by the proxy and istio stages
and checked by the verify stage (docs/metadata.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from istiobuild import fsutil
from istiobuild.downloads import sha256_file
from istiobuild.errors import StepFailed
from istiobuild.executor import Executor
from istiobuild.mechanism import source_of
from istiobuild.release import Component
from istiobuild.resources import relative
from istiobuild.stages import patch
from istiobuild.steps import Action, PlanInput, Stage, StageName

MODIFIED = "-modified"  # appended to a status when --allow-modified built edits made after the patch stage


@dataclasses.dataclass(frozen=True, kw_only=True)
class Metadata:
    """What the binaries of a build report about themselves."""

    version: str  # istio's buildVersion and the images' VERSION (istio_version build arg)
    tag: str  # istio's buildTag (what `git describe --tags` says on the pinned release)
    hub: str  # istio's buildHub (istioctl's default image hub)
    istio_revision: str  # istio's buildGitRevision: the istio pin
    istio_status: str  # istio's buildStatus
    istio_series: str  # sha256 the status names ("" when nothing is applied)
    proxy_revision: str  # envoy's BUILD_SCM_REVISION: the proxy pin
    proxy_status: str  # envoy's BUILD_SCM_STATUS
    proxy_series: str


def series_status(series: Iterable[patch.Series]) -> tuple[str, str]:
    """("Clean", "") for a pristine pinned tree, else ("istiobuild-<sha12>", sha256) where the sha256 covers
    every patch applied to the trees (path and content) and the generated Dockerfile FROM rewrites."""
    lines = []
    for s in series:
        lines += [f"{s.component.value} {relative(p)} {sha256_file(p)}" for p in s.patches]
        lines += [f"{s.component.value} FROM {k} -> {v}" for k, v in sorted(s.base_images.items())]
    if not lines:
        return "Clean", ""
    digest = hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()
    return f"istiobuild-{digest[:12]}", digest


def metadata(p: PlanInput) -> Metadata:
    """Pure: from the pins, the settings and the shipped patch files the patch stage applies."""
    trees = {s.component: s for step in patch.plan(p).steps if isinstance(step, patch.ApplySeries) for s in step.series}
    istio_status, istio_series = series_status([trees[Component.ISTIO]])
    proxy_status, proxy_series = series_status([trees[Component.PROXY], trees[Component.ENVOY]])
    istio_pin = p.release.pins[Component.ISTIO]
    version = istio_pin.tag or p.release.version
    return Metadata(
        version=version,
        tag=version,
        hub=p.settings.hub,
        istio_revision=istio_pin.commit,
        istio_status=istio_status,
        istio_series=istio_series,
        proxy_revision=p.release.pins[Component.PROXY].commit,
        proxy_status=proxy_status,
        proxy_series=proxy_series,
    )


def modified(patches_record: Path, components: Iterable[Component]) -> bool:
    """True when the patch stage recorded --allow-modified edits in one of the components' checkouts."""
    data = fsutil.read_json_object(patches_record) or {}
    return any(isinstance(data.get(c.value), dict) and data[c.value].get("modified") for c in components)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteRecord(Action):
    path: Path
    parts: tuple[tuple[str, Path], ...]  # (key, the stage record it is read from)
    facts: tuple[tuple[str, str], ...]
    images: tuple[str, ...]
    metadata: Metadata

    def render(self) -> str:
        return f"write {self.path}: {', '.join(k for k, _ in self.facts)}, the stamped metadata, " + ", ".join(
            k for k, _ in self.parts
        )

    def perform(self, ex: Executor) -> None:
        record: dict[str, object] = dict(self.facts)
        record["pins"] = {c.value: dataclasses.asdict(pin) for c, pin in ex.release.pins.items()}
        record["metadata"] = dataclasses.asdict(self.metadata)
        for key, path in self.parts:
            record[key.replace("-", "_")] = json.loads(path.read_text()) if path.is_file() else None
        record["images"] = list(self.images)
        if self.images:
            from istiobuild import dockerapi

            cli = ex.docker()
            record["image_ids"] = {name: dockerapi.image_id(cli, name) for name in self.images}
        fsutil.write_json(self.path, record)
        ex.console.info(f"build record: {self.path}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteProvenance(Action):
    """An in-toto statement with SLSA provenance (attest.py), signed into a DSSE envelope with the user's key,
    attached next to every pushed image the way `cosign attest` does."""

    path: Path
    envelope: Path
    signing_key: Path | None
    external: Mapping[str, str]
    internal: Mapping[str, str]
    images: tuple[str, ...]
    pushed: Path | None  # the publish stage's record: the pushed digests
    builder: str  # --in-container's image ("" = none)

    def render(self) -> str:
        text = f"write the provenance of this build to {self.path} (in-toto Statement v1, SLSA Provenance v1)"
        if self.signing_key is None:
            text += "; unsigned (no signing_key)"
        else:
            text += f"; sign it with {self.signing_key} into {self.envelope} (DSSE, ed25519)"
        if self.pushed is not None:
            text += "; attach the envelope to every pushed image as <repo>:sha256-<digest>.att (cosign's convention)"
        return text

    def perform(self, ex: Executor) -> None:
        from istiobuild import attest, dockerapi, signing

        cli = ex.docker() if self.images or self.builder else None
        image_ids = {name: dockerapi.image_id(cli, name) for name in self.images}
        pushed = (fsutil.read_json_object(self.pushed) or {}) if self.pushed else {}
        builder = (self.builder, dockerapi.image_id(cli, self.builder)) if self.builder else None
        statement = attest.statement(
            release=ex.release,
            layout=ex.layout,
            external=self.external,
            internal=self.internal,
            image_ids=image_ids,
            pushed=pushed,
            builder=builder,
        )
        fsutil.write_json(self.path, statement)
        if self.signing_key is None:
            self.envelope.unlink(missing_ok=True)
            envelope = signing.unsigned(statement)
            ex.console.info(f"provenance: {self.path} (unsigned: no signing key given)")
        else:
            envelope = signing.sign(statement, self.signing_key)
            fsutil.write_json(self.envelope, envelope)
            ex.console.info(f"provenance: {self.envelope} (signed)")
        for name, digest in sorted(pushed.items()):
            ref = signing.attach(
                envelope, name.rpartition(":")[0], digest, insecure=False, scratch=ex.layout.scratch, log=ex.log
            )
            ex.console.info(f"attached the provenance of {name}: {ref}")


def _preplaces(p: PlanInput) -> bool:
    """The line pre-places envoy or ztunnel for istio's init scripts (the istio stage records them)."""
    mech = p.release.mechanism
    return mech is not None and any(source_of(t) != "download" for t in mech.preplace)


def plan(p: PlanInput, images: tuple[str, ...]) -> Stage:
    path = p.layout.record("build-record")
    keys: tuple[str, ...] = (
        "patches",
        "toolchain",
        "proxy-toolchain",
        "envoy",
        "istio",
        "downloads",
        "base-images",
        "verify",
    )
    keys += ("preplaced",) if _preplaces(p) else ()
    keys += ("ztunnel",) if p.settings.ztunnel_repo else ()
    keys += ("archives",) if p.release.archive is not None else ()
    keys += ("pushed",) if p.settings.push else ()
    facts: tuple[tuple[str, str], ...] = (
        ("release", p.release.version),
        ("arch", p.arch.value),
        ("host", p.host.value),
        ("page_size", p.page_size),
        ("allocator", p.allocator),
        ("toolchain_profile", p.toolchain.name),
        ("hub", p.settings.hub),
        ("tag", p.settings.tag or p.release.version),
        ("source_date_epoch", str(p.release.source_date_epoch)),
    )
    # the deployment kernel the page size followed (--target-kernel), only when given: other records keep their keys
    facts += (("target_kernel", p.settings.target_kernel),) if p.settings.target_kernel else ()
    key = Path(p.settings.signing_key) if p.settings.signing_key else None
    prov = WriteProvenance(
        path=p.layout.out_dir / "provenance.json",
        envelope=p.layout.out_dir / "provenance.dsse.json",
        signing_key=key,
        external={
            "release": p.release.version,
            "arch": p.arch.value,
            "toolchain": p.toolchain.name,
            "pageSize": p.page_size,
            "allocator": p.allocator,
            "hub": p.settings.hub,
            "tag": p.tag,
            **({"targetKernel": p.settings.target_kernel} if p.settings.target_kernel else {}),
        },
        internal={"mode": p.mode.value, "host": p.host.value, "sourceDateEpoch": str(p.release.source_date_epoch)},
        images=images,
        pushed=p.layout.record("pushed") if p.settings.push else None,
        builder=p.settings.builder if p.settings.in_container else "",
    )
    return Stage(
        name=StageName.RECORD,
        summary="record what was built (pins, patches, toolchain, artifacts, images) and its signed provenance",
        steps=(
            WriteRecord(
                path=path,
                parts=tuple((k, p.layout.record(k)) for k in keys),
                facts=facts,
                images=images,
                metadata=metadata(p),
            ),
            prov,
        ),
        consumes=tuple(p.layout.record(k) for k in keys) + ((key,) if key else ()),
        produces=(path, prov.path) + ((prov.envelope,) if key else ()),
    )


# -- what a binary reports, and what the plan expects it to report

_BUILDINFO = re.compile(r'\b(Version|GitRevision|GolangVersion|BuildStatus|GitTag):"([^"]*)"')
_ENVOY = re.compile(r"\bversion:\s*(?P<revision>[^/\s]+)/(?P<version>[^/\s]+)/(?P<status>[^/\s]+)/(?P<type>[^/\s]+)/")
STATUS_KEYS = ("BuildStatus", "status")


def istio_reported(text: str) -> dict[str, str]:
    """The fields of istio.io/pkg/version's BuildInfo as `<binary> version` prints it (its LongForm)."""
    return dict(_BUILDINFO.findall(text))


def envoy_reported(text: str) -> dict[str, str]:
    """`envoy --version`: <revision>/<version>/<status>/<build type>/<ssl library>."""
    match = _ENVOY.search(text)
    return match.groupdict() if match else {}


def istio_expected(meta: Metadata) -> dict[str, str]:
    return {
        "Version": meta.version,
        "GitRevision": meta.istio_revision,
        "BuildStatus": meta.istio_status,
        "GitTag": meta.tag,
    }


def envoy_expected(meta: Metadata) -> dict[str, str]:
    return {"revision": meta.proxy_revision, "status": meta.proxy_status}


def require(
    what: str, reported: Mapping[str, str], wanted: Mapping[str, str], *, modified_ok: bool, hint: str, log: Path
) -> None:
    """A StepFailed naming every value `what` reports differently from the plan."""
    wrong = mismatches(reported, wanted, modified_ok=modified_ok)
    if wrong:
        raise StepFailed(f"{what} reports {'; '.join(wrong)}", hint=hint, log=log)


def mismatches(reported: Mapping[str, str], wanted: Mapping[str, str], *, modified_ok: bool = False) -> list[str]:
    """What differs from the plan ("" when nothing); a status may carry -modified when the build recorded edits."""
    wrong = []
    for key, want in wanted.items():
        have = reported.get(key)
        if have == want or (modified_ok and key in STATUS_KEYS and have == want + MODIFIED):
            continue
        wrong.append(f"{key} {have!r} (expected {want!r})" if have is not None else f"no {key} (expected {want!r})")
    return wrong

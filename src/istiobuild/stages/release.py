"""Stage release: the istioctl and install archives of this arch, laid out like upstream's for the release line,
their `.sha256` files and a release manifest; then every archive is checked (ELF files for the arch, istioctl runs
and reports the version, the charts, profiles and istioctl name this build's hub and tag as their defaults)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild import archives, dockerapi, fsutil
from istiobuild.arch import Arch
from istiobuild.archivespec import ArchiveSpec, DefaultsSpec
from istiobuild.downloads import sha256_file
from istiobuild.errors import StepFailed
from istiobuild.executor import Executor
from istiobuild.git import git
from istiobuild.release import Component
from istiobuild.stages import istio, record
from istiobuild.stages.images import names
from istiobuild.steps import Action, PlanInput, Stage, StageName
from istiobuild.targets import run_target

MANIFEST = "manifest.yaml"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Archives:
    """Where the archives go and what they are made of (the plan's data for both steps)."""

    spec: ArchiveSpec
    defaults: DefaultsSpec | None
    out: Path  # <out_dir>/release
    istio_dir: Path
    istioctl: Path
    version: str
    arch: Arch
    hub: str
    tag: str
    epoch: int

    @property
    def install(self) -> Path:
        return self.out / self.spec.fill(self.spec.name, self.version, self.arch.goarch)

    @property
    def istioctl_archive(self) -> Path:
        return self.out / self.spec.fill(self.spec.istioctl_name, self.version, self.arch.goarch)

    @property
    def top(self) -> str:
        return self.spec.fill(self.spec.top, self.version, self.arch.goarch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MakeArchives(Action):
    a: Archives
    manifest: Mapping[str, Any]  # the release manifest without its outputs (filled in when run)
    images: tuple[str, ...]
    patches: Path  # the patch stage's record: every patch applied, generated ones too, with sha256
    built: Path  # the istio stage's record: the sha256 of the istioctl it built and checked
    record: Path

    def render(self) -> str:
        spec = self.a.spec
        copies = "".join(f", {source} as {dest}" for source, dest in spec.copies)
        return (
            f"write {self.a.install} ({self.a.top}/: {spec.istioctl} from {self.a.istioctl} (only if its sha256 is "
            f"the one {self.built} records), {MANIFEST}, {', '.join(spec.files)}{copies}, and from "
            + "; ".join(f"{d} the files git tracks matching {' '.join(keep)}" for d, keep in spec.dirs)
            + "; "
            f"from {self.a.istio_dir}), {self.a.istioctl_archive} (istioctl), a .sha256 for each, and "
            f"{self.a.out / MANIFEST} (the inputs, the images' IDs, the archives' sha256); sorted entries, owner "
            f"0:0, mtime {self.a.epoch}, gzip without name or time"
        )

    def perform(self, ex: Executor) -> None:
        self.record.unlink(missing_ok=True)  # `invoke release` takes only archives whose check passed
        recorded = ((fsutil.read_json_object(self.built) or {}).get("istioctl") or {}).get("sha256")
        if not self.a.istioctl.is_file() or sha256_file(self.a.istioctl) != recorded:
            raise StepFailed(
                f"{self.a.istioctl} is not the istioctl the istio stage built and checked (sha256 {recorded or 'none'} "
                f"in {self.built})",
                hint="rebuild it: `invoke build ... --from istio`",
                log=ex.log,
            )
        ids = dockerapi.local_image_ids()
        images = [{"name": n, "imageID": ids.get(dockerapi.short_name(n), "")} for n in self.images]
        applied = fsutil.read_json_object(self.patches) or {}
        patches = {c.value: applied.get(c.value, []) for c in Component}
        inner = archives.manifest_yaml({**self.manifest, "patches": patches, "images": images})
        tracked = set(git(self.a.istio_dir, "ls-files", "-z").stdout.split("\0"))  # not what a build left around
        entries = archives.install_entries(self.a.spec, self.a.istio_dir, self.a.istioctl, inner, self.a.top, tracked)
        outputs = []
        for path, content in (
            (self.a.install, entries),
            (self.a.istioctl_archive, [archives.Entry(name="istioctl", source=self.a.istioctl, executable=True)]),
        ):
            digest = archives.write_with_sha256(path, archives.tar_gz(content, self.a.epoch))
            outputs.append({"name": path.name, "sha256": digest, "size": path.stat().st_size})
            ex.console.info(f"release: {path.name} sha256 {digest[:16]}")
        outer = {**self.manifest, "patches": patches, "images": images, "archives": outputs}
        fsutil.write_atomic(self.a.out / MANIFEST, archives.manifest_yaml(outer))
        fsutil.write_json(self.record, {"archives": outputs, "images": images, "manifest": dict(self.manifest)})


@dataclasses.dataclass(frozen=True, kw_only=True)
class RemoveArchives(Action):
    """This build makes no archives: what an earlier build in the workdir left must not pass for this one's."""

    paths: tuple[Path, ...]

    def render(self) -> str:
        return (
            f"remove {' and '.join(map(str, self.paths))} if an earlier build left them (this build makes no archives)"
        )

    def perform(self, ex: Executor) -> None:
        for path in self.paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckArchives(Action):
    a: Archives
    host: Arch
    record: Path

    def render(self) -> str:
        check = " ".join(self.a.defaults.check) if self.a.defaults and self.a.defaults.check else ""
        files = ", ".join(sorted(self.a.defaults.files)) if self.a.defaults else "no files (the line has none)"
        return (
            f"check {self.a.install.name} and {self.a.istioctl_archive.name}: the .sha256 files, every ELF file is "
            f"{self.a.arch}; istioctl from the archive reports version {self.a.version}"
            + (f" and `istioctl {check}` names hub {self.a.hub} and tag {self.a.tag}" if check else "")
            + f"; wherever the archive carries one of {files}, it names them as defaults; results in {self.record}"
        )

    def perform(self, ex: Executor) -> None:
        found: dict[str, Any] = {}
        for archive in (self.a.install, self.a.istioctl_archive):
            archives.check_sha256_file(archive)
            count, wrong = archives.wrong_elves(archive, self.a.arch)
            if wrong or not count:
                raise StepFailed(
                    f"{archive.name}: " + ("; ".join(wrong) or "no ELF files (istioctl is missing)"), log=ex.log
                )
            found[archive.name] = {"elf_files": count}
        files = dict(archives.members(self.a.install))
        found["defaults"] = self._defaults(files)
        found["istioctl"] = self._istioctl(ex, files[f"{self.a.top}/{self.a.spec.istioctl}"])
        data = fsutil.read_json_object(self.record) or {}
        fsutil.write_json(self.record, {**data, "checks": found})
        ex.console.info(
            f"release: archives checked: {self.a.arch} ELF files, version {self.a.version}, "
            f"defaults {self.a.hub} {self.a.tag}"
        )

    def _defaults(self, files: Mapping[str, bytes]) -> dict[str, str]:
        """Each defaults file wherever the archive carries it (its generated copy is checked through istioctl)."""
        checked = {}
        for path in sorted(self.a.defaults.files) if self.a.defaults else ():
            for name in self.a.spec.archive_paths(path):
                text = files.get(f"{self.a.top}/{name}", b"").decode(errors="replace")
                missing = archives.names_defaults(text, self.a.hub, self.a.tag)
                if missing:
                    raise StepFailed(f"{self.a.install.name}: {name} does not name {' and '.join(missing)} as defaults")
                checked[name] = f"{self.a.hub} {self.a.tag}"
        return checked

    def _istioctl(self, ex: Executor, binary: bytes) -> dict[str, str]:
        scratch = self.a.out / ".istioctl-check"
        fsutil.write_atomic(scratch, binary, mode=0o755)
        try:
            version = run_target(scratch, "version", "--remote=false", arch=self.a.arch, host=self.host, log=ex.log)
            if self.a.version not in version:
                raise StepFailed(
                    f"istioctl from {self.a.install.name} reports {version!r}, not {self.a.version}", log=ex.log
                )
            result = {"version": version}
            if self.a.defaults and self.a.defaults.check:
                dump = run_target(scratch, *self.a.defaults.check, arch=self.a.arch, host=self.host, log=ex.log)
                missing = archives.names_defaults(dump, self.a.hub, self.a.tag)
                if missing:
                    raise StepFailed(
                        f"istioctl from {self.a.install.name}: `istioctl {' '.join(self.a.defaults.check)}` does not "
                        f"name {' and '.join(missing)}: its embedded charts/profiles were not regenerated",
                        log=ex.log,
                    )
                result["defaults"] = "ok"
            return result
        finally:
            scratch.unlink(missing_ok=True)


def manifest(p: PlanInput) -> dict[str, Any]:
    """The release manifest (release-builder's manifest.yaml, plus what istiobuild adds): no patches, images and
    archives yet (they are read when it is written)."""
    meta = record.metadata(p)
    return {
        "version": meta.version,
        "docker": p.settings.hub,
        "tag": p.tag,
        "architectures": [p.arch.value],
        "dependencies": {
            c.value: {
                "git": p.release.urls[c],
                "sha": p.release.pins[c].commit,
                **({"tag": p.release.pins[c].tag} if p.release.pins[c].tag else {}),
            }
            for c in Component
        },
        "source_date_epoch": p.release.source_date_epoch,
    }


def out_dir(p: PlanInput) -> Path:
    return p.layout.out_dir / "release"


def plan(p: PlanInput) -> Stage:
    spec, version = p.release.archive, record.metadata(p).version
    skipped = ""
    if spec is None:
        skipped = f"line {p.release.line} has no [line.archive]: no release archives"
    elif p.release.defaults and p.release.defaults.version_is_tag and p.tag != version:
        skipped = (
            f"no release archives: istioctl {version} installs {p.settings.hub}/<name>:{version} (it takes its "
            f"version as the default tag), but this build's images are tagged {p.tag}; leave --tag out to get archives"
        )
    if skipped or spec is None:
        stale = (out_dir(p), p.layout.record("archives"))
        return Stage(
            name=StageName.RELEASE, summary="no release archives", steps=(RemoveArchives(paths=stale),),
            notes=(skipped,),
        )  # fmt: skip
    a = Archives(
        spec=spec,
        defaults=p.release.defaults,
        out=out_dir(p),
        istio_dir=p.checkout(Component.ISTIO),
        istioctl=istio.istio_out(p) / "istioctl",
        version=version,
        arch=p.arch,
        hub=p.settings.hub,
        tag=p.tag,
        epoch=p.release.source_date_epoch,
    )
    rec = p.layout.record("archives")
    return Stage(
        name=StageName.RELEASE,
        summary=f"istioctl and install archives for {p.arch}, with {p.settings.hub} and {p.tag} as defaults",
        steps=(
            MakeArchives(
                a=a,
                manifest=manifest(p),
                images=names(p, p.arch_tag),
                patches=p.layout.record("patches"),
                built=p.layout.record("istio"),
                record=rec,
            ),
            CheckArchives(a=a, host=p.host, record=rec),
        ),
        reads=(a.istio_dir,),
        consumes=(a.istioctl, p.layout.record("patches"), p.layout.record("istio")),
        produces=(
            a.install,
            a.istioctl_archive,
            *(x.with_name(f"{x.name}.sha256") for x in (a.install, a.istioctl_archive)),
            a.out / MANIFEST,
            rec,
        ),
    )

"""`invoke release --out DIR`: every arch's release archives, manifests, records, provenance and SBOMs of one
release built in a workdir, checked and gathered into one directory that can be published as it is.

DIR/
  istio-<v>-linux-<goarch>.tar.gz[.sha256], istioctl-<v>-linux-<goarch>.tar.gz[.sha256]   (every arch)
  manifest.yaml        the release: inputs, architectures, and per arch its tag, patches, images, archives
  SHA256SUMS           every other file of DIR, as sha256sum prints it
  <arch>/              manifest.yaml, build-record.json, provenance.json[, provenance.dsse.json], sbom/

Every archive must be what the build recorded and its provenance names (sha256), with its `.sha256` right and
every ELF file built for its arch; an arch whose release stage or record stage did not finish is refused, never
left out. The workdir is locked meanwhile (no build changes it), and DIR appears whole or not at all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from istiobuild import archives, fsutil, provenance
from istiobuild.arch import Arch
from istiobuild.errors import StepFailed, UsageError
from istiobuild.validate import check_path_text

PER_ARCH = ("build-record.json", "provenance.json", "provenance.dsse.json")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Build:
    """One arch's release as the workdir holds it, checked."""

    arch: Arch
    out: Path  # <workdir>/<release>-<arch>
    archives: tuple[Path, ...]
    record: dict[str, Any]  # archives.json
    modified: bool  # built with --allow-modified edits


def collect(workdir: Path, out: Path, release: str = "") -> list[str]:
    """Check and gather; `out` must not exist or be empty. The lines to print."""
    _check_out(workdir, out)
    if release and not _NAME.match(release):
        raise UsageError(f"--release {release!r} is not a release name", hint="`invoke releases` lists them")
    with fsutil.workdir_lock(workdir):  # no build writes the workdir while it is read
        name, outs = _built(workdir, release)
        builds = [_read(arch, path, name, workdir) for arch, path in sorted(outs.items(), key=lambda i: i[0].value)]
        _same_release(builds)
        try:
            _write(builds, out)
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror or exc}", hint="choose a writable --out") from None
    lines = [f"{out}: {name} for {', '.join(b.arch.value for b in builds)}"]
    lines += [f"  {p.name}" for b in builds for p in b.archives]
    lines += [f"  warning: {b.arch} was built with local modifications (see its build-record.json)"
              for b in builds if b.modified]  # fmt: skip
    return [*lines, "  manifest.yaml, SHA256SUMS"]


def _check_out(workdir: Path, out: Path) -> None:
    check_path_text(str(out), "--out")
    if not workdir.is_dir():
        raise UsageError(f"{workdir} is not a directory", hint="name the workdir the build used with --workdir")
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise UsageError(f"{out} exists and is not an empty directory", hint="name a new directory with --out")
    if out.resolve().is_relative_to(workdir.resolve()):
        raise UsageError(f"{out} is inside the workdir {workdir}", hint="name a directory outside the workdir")
    if out.parent.exists() and not out.parent.is_dir():
        raise UsageError(f"{out.parent} is not a directory", hint="choose another --out")


def _built(workdir: Path, release: str) -> tuple[str, dict[Arch, Path]]:
    """The release (given, or the only one) and the out dirs of its arches that have release archives, complete or
    not (an incomplete one is refused when read)."""
    found: dict[str, dict[Arch, Path]] = {}
    for arch in Arch:
        for out in sorted(workdir.glob(f"*-{arch.value}")):
            if (out / "release").is_dir() or (out / "archives.json").exists():
                found.setdefault(out.name.removesuffix(f"-{arch.value}"), {})[arch] = out
    if not release and len(found) == 1:
        release = next(iter(found))
    if release in found:
        return release, found[release]
    if found and not release:
        raise UsageError(
            f"{workdir} holds release archives of {', '.join(sorted(found))}", hint="name one with --release"
        )
    raise UsageError(
        f"{workdir} holds no release archives" + (f" of {release}" if release else ""),
        hint=f"build first: `invoke build --release {release or 'R'} --arch A --workdir {workdir}`",
    )


def _read(arch: Arch, out: Path, release: str, workdir: Path) -> Build:
    rebuild = f"`invoke build --release {release} --arch {arch} --workdir {workdir}`"
    record = fsutil.read_json_object(out / "archives.json") or {}
    entries = record.get("archives")
    if not record.get("checks") or not isinstance(entries, list) or not entries or not all(_entry(e) for e in entries):
        raise UsageError(
            f"the {arch} archives of {release} are incomplete or did not pass the release stage's checks "
            f"({out / 'archives.json'})",
            hint=f"rebuild them: {rebuild}; nothing was collected",
        )
    claimed = _provenance(out, arch, rebuild)
    paths = []
    for entry in entries:
        path = out / "release" / entry["name"]
        problem = _archive_problem(path, entry["sha256"], claimed.get(f"release/{entry['name']}", ""), arch)
        if problem:
            raise UsageError(f"{path}: {problem}", hint=f"nothing was collected; rebuild the archives: {rebuild}")
        paths.append(path)
    if not (out / "release" / "manifest.yaml").is_file():
        raise UsageError(f"{out / 'release' / 'manifest.yaml'} is missing", hint=f"rebuild: {rebuild}")
    build_record = fsutil.read_json_object(out / "build-record.json") or {}
    modified = any(isinstance(v, dict) and v.get("modified") for v in (build_record.get("patches") or {}).values())
    return Build(arch=arch, out=out, archives=tuple(paths), record=record, modified=modified)


def _entry(entry: object) -> bool:
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("name"), str)
        and "/" not in entry["name"]
        and not entry["name"].startswith(".")
        and isinstance(entry.get("sha256"), str)
        and bool(_HEX64.match(entry["sha256"]))
    )


def _provenance(out: Path, arch: Arch, rebuild: str) -> dict[str, str]:
    """The archive subjects (name -> sha256) of the build's provenance: the build finished its record stage."""
    try:
        statement = json.loads((out / "provenance.json").read_text())
        subjects = provenance.subjects_of(statement)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"the {arch} build has no valid provenance ({out / 'provenance.json'}: {type(exc).__name__})",
            hint=f"the build did not finish; run {rebuild}",
        ) from None
    return {name: digest.get("sha256", "") for name, digest in subjects.items() if name.startswith("release/")}


def _archive_problem(path: Path, recorded: str, claimed: str, arch: Arch) -> str:
    if not path.is_file():
        return "missing"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != recorded or digest != claimed:
        return f"sha256 {digest[:16]}... is not what the build recorded and its provenance names ({recorded[:16]}...)"
    try:
        archives.check_sha256_file(path)
    except StepFailed as exc:
        return exc.message
    count, wrong = archives.wrong_elves(path, arch)
    if wrong or not count:
        return "; ".join(wrong[:3]) + f" (not {arch})" if wrong else "no ELF files"
    return ""


def _same_release(builds: list[Build]) -> None:
    keys = ("version", "docker", "tag", "dependencies")
    inputs = {json.dumps({k: (b.record.get("manifest") or {}).get(k) for k in keys}, sort_keys=True) for b in builds}
    if len(inputs) > 1:
        raise UsageError(
            "the arches in the workdir were built from different versions, commits, hubs or tags",
            hint="rebuild them from the same release; nothing was collected",
        )


def _write(builds: list[Build], out: Path) -> None:
    """Into a staging directory next to `out`, then renamed: `out` appears whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for b in builds:
            for path in b.archives:
                for name in (path.name, f"{path.name}.sha256"):
                    shutil.copyfile(path.parent / name, staging / name)
            _per_arch(b.out, staging / b.arch.value)
        fsutil.write_atomic(staging / "manifest.yaml", archives.manifest_yaml(_joined(builds)))
        fsutil.write_atomic(staging / "SHA256SUMS", _sums(staging))
        for path in [staging, *staging.rglob("*")]:  # readable by all, whatever the umask: it is to be published
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _joined(builds: list[Build]) -> dict[str, Any]:
    """One manifest for the directory: what every arch shares, then per arch its archives and images."""
    first = builds[0].record.get("manifest") or {}
    shared = {k: first[k] for k in ("version", "docker", "tag", "dependencies", "source_date_epoch") if k in first}
    return {
        **shared,
        "architectures": [b.arch.value for b in builds],
        "builds": [
            {"arch": b.arch.value, "manifest": f"{b.arch.value}/manifest.yaml", "modified": b.modified,
             "archives": b.record.get("archives", []), "images": b.record.get("images", [])}
            for b in builds
        ],
    }  # fmt: skip


def _per_arch(out: Path, dest: Path) -> None:
    dest.mkdir()
    shutil.copyfile(out / "release" / "manifest.yaml", dest / "manifest.yaml")
    for name in PER_ARCH:
        if (out / name).is_file() and not (out / name).is_symlink():
            shutil.copyfile(out / name, dest / name)
    sboms = sorted(p for p in (out / "sbom").glob("*.json") if p.is_file() and not p.is_symlink())
    if sboms:
        (dest / "sbom").mkdir()
    for sbom in sboms:
        shutil.copyfile(sbom, dest / "sbom" / sbom.name)


def _sums(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    return "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}\n" for p in files)

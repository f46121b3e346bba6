"""`invoke release --out DIR`: every arch's release archives, manifests, records, provenance and SBOMs of one
release built in a workdir, checked and gathered into one directory that can be published as it is.

DIR/
  istio-<v>-linux-<goarch>.tar.gz[.sha256], istioctl-<v>-linux-<goarch>.tar.gz[.sha256]   (every arch)
  manifest.yaml        the release: inputs, architectures, and per arch its tag, patches, images, archives
  SHA256SUMS           every other file of DIR, as sha256sum prints it
  <arch>/              manifest.yaml, build-record.json, provenance.json[, provenance.dsse.json], sbom/
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from istiobuild import archives, fsutil
from istiobuild.arch import Arch
from istiobuild.errors import UsageError

PER_ARCH = ("build-record.json", "provenance.json", "provenance.dsse.json")


def built(workdir: Path, release: str) -> dict[Arch, Path]:
    """The arches of `release` (or of the only release) whose release stage wrote archives: {arch: out dir}.
    Archives whose check did not pass (a failed release stage) are refused, not left out."""
    found: dict[str, dict[Arch, Path]] = {}
    for arch in Arch:
        for out in sorted(workdir.glob(f"*-{arch.value}")):
            record = fsutil.read_json_object(out / "archives.json")
            if record and record.get("archives") and (out / "release" / "manifest.yaml").is_file():
                found.setdefault(out.name.removesuffix(f"-{arch.value}"), {})[arch] = out
    if not release and len(found) == 1:
        release = next(iter(found))
    if release not in found:
        raise UsageError(
            f"{workdir} holds no release archives" + (f" of {release}" if release else f" of one release: "
                                                      f"{', '.join(sorted(found))}" if found else ""),
            hint="name one with --release" if found and not release else
            f"build first: `invoke build --release {release or 'R'} --arch A --workdir {workdir}`",
        )  # fmt: skip
    for arch, out in found[release].items():
        if not (fsutil.read_json_object(out / "archives.json") or {}).get("checks"):
            raise UsageError(
                f"the {arch} archives of {release} did not pass the release stage's checks ({out / 'archives.json'})",
                hint=f"rebuild them: `invoke build --release {release} --arch {arch} --workdir {workdir}`; "
                "nothing was collected",
            )
    return found[release]


def check(arch: Arch, out: Path) -> list[Path]:
    """The arch's archives, each with its .sha256 right and every ELF file built for `arch`."""
    record = fsutil.read_json_object(out / "archives.json") or {}
    paths = []
    for entry in record.get("archives", []):
        path = out / "release" / str(entry.get("name", ""))
        if not path.is_file():
            raise UsageError(f"{path} is missing", hint=f"rebuild: `invoke build --from release --arch {arch}`")
        archives.check_sha256_file(path)
        count, wrong = archives.wrong_elves(path, arch)
        if wrong or not count:
            raise UsageError(
                f"{path.name}: " + ("; ".join(wrong[:3]) + " (not " + arch.value + ")" if wrong else "no ELF files"),
                hint="nothing was collected; rebuild the archives of that arch",
            )
        paths.append(path)
    return paths


def collect(workdir: Path, out: Path, release: str = "") -> list[str]:
    """Check and gather; `out` must not exist or be empty. The lines to print."""
    if out.is_symlink() or (out.exists() and (not out.is_dir() or any(out.iterdir()))):
        raise UsageError(f"{out} exists and is not an empty directory", hint="name a new directory with --out")
    arches = built(workdir, release)
    checked = {arch: check(arch, path) for arch, path in sorted(arches.items(), key=lambda i: i[0].value)}
    manifests = {arch: _manifest(arches[arch]) for arch in checked}
    _same_release(manifests)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for arch, paths in checked.items():
            for path in paths:
                for name in (path.name, f"{path.name}.sha256"):
                    shutil.copyfile(path.parent / name, staging / name)
            _per_arch(arches[arch], staging / arch.value)
        fsutil.write_atomic(staging / "manifest.yaml", archives.manifest_yaml(_joined(manifests)))
        fsutil.write_atomic(staging / "SHA256SUMS", _sums(staging))
        staging.chmod(0o755)  # a directory to publish: readable by all (mkdtemp makes it 0700)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    names = sorted(p.name for paths in checked.values() for p in paths)
    return [f"{out}: {', '.join(a.value for a in checked)}", *(f"  {n}" for n in names), "  manifest.yaml, SHA256SUMS"]


def _manifest(out: Path) -> dict[str, Any]:
    return {"release": fsutil.read_json_object(out / "archives.json") or {}}


def _same_release(manifests: dict[Arch, dict[str, Any]]) -> None:
    inputs = {
        json.dumps(
            {k: m["release"].get("manifest", {}).get(k) for k in ("version", "docker", "tag", "dependencies")},
            sort_keys=True,
        )
        for m in manifests.values()
    }
    if len(inputs) > 1:
        raise UsageError(
            "the arches in the workdir were built from different versions, commits, hubs or tags",
            hint="rebuild them from the same release; nothing was collected",
        )


def _joined(manifests: dict[Arch, dict[str, Any]]) -> dict[str, Any]:
    """One manifest for the directory: what every arch shares, then per arch its tag, archives and images."""
    first = next(iter(manifests.values()))["release"].get("manifest", {})
    shared = {k: first[k] for k in ("version", "docker", "tag", "dependencies", "source_date_epoch") if k in first}
    return {
        **shared,
        "architectures": [a.value for a in manifests],
        "builds": [
            {"arch": a.value, "manifest": f"{a.value}/manifest.yaml", "archives": m["release"].get("archives", []),
             "images": m["release"].get("images", [])}
            for a, m in manifests.items()
        ],
    }  # fmt: skip


def _per_arch(out: Path, dest: Path) -> None:
    dest.mkdir()
    shutil.copyfile(out / "release" / "manifest.yaml", dest / "manifest.yaml")
    for name in PER_ARCH:
        if (out / name).is_file():
            shutil.copyfile(out / name, dest / name)
    if (out / "sbom").is_dir():
        shutil.copytree(out / "sbom", dest / "sbom")


def _sums(root: Path) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    return "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(root).as_posix()}\n" for p in files)

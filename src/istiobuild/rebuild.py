"""`invoke rebuild`: build again from exactly the inputs a record (or provenance) names, in a fresh workdir, and
compare every subject: envoy, each Go binary, each image. The rebuild stops after the images stage: its images
keep their workdir-unique build names, so the original's tags are never moved.

A difference is named with where it is (compare.py): a file's first differing offset and ELF section, an image's
differing config fields or first differing layer and the files in it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild import compare, fsutil
from istiobuild.errors import UsageError
from istiobuild.plan import BuildPlan
from istiobuild.stages.istio import CheckElves
from istiobuild.stages.record import WriteRecord

# record facts -> the settings they came from
PARAMETERS = {"release": "release", "arch": "arch", "toolchain_profile": "toolchain", "page_size": "page_size",
              "allocator": "allocator", "hub": "hub", "tag": "tag"}  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subject:
    """One artifact of the original build: its digest and, when it is still here, where it is."""

    name: str
    kind: str  # "file" or "image"
    digest: str
    path: Path | None = None  # a file of the original build
    image: str = ""  # an image name of the original build (final name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    name: str
    identical: bool
    original: str
    rebuilt: str
    details: tuple[str, ...] = ()


def load(path: Path) -> dict[str, Any]:
    """A build record (build-record.json), an in-toto statement or a DSSE envelope of one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a readable JSON file ({exc})", hint="pass a build-record.json") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a build record", hint="pass <workdir>/<release>-<arch>/build-record.json")
    if "payload" in data and "payloadType" in data:
        from istiobuild import provenance

        try:
            data = provenance.decode_envelope(data)
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}", hint="pass a build record, a statement or its DSSE envelope") from None
    if data.get("_type") == "https://in-toto.io/Statement/v1":
        return _from_statement(data, path)
    if not all(k in data for k in ("release", "arch", "toolchain_profile")):
        raise UsageError(f"{path} is not a build record", hint="pass <workdir>/<release>-<arch>/build-record.json")
    return dict(data)


def _from_statement(statement: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The record-shaped facts of a provenance statement: parameters and subjects (no paths)."""
    external = statement.get("predicate", {}).get("buildDefinition", {}).get("externalParameters", {})
    missing = [k for k in ("release", "arch", "toolchain") if k not in external]
    if missing:
        raise UsageError(f"{path}: the provenance has no {', '.join(missing)}", hint="pass the build record instead")
    return {
        "release": external["release"],
        "arch": external["arch"],
        "toolchain_profile": external["toolchain"],
        "page_size": external.get("pageSize", "auto"),
        "allocator": external.get("allocator", ""),
        "hub": external.get("hub", "istio"),
        "tag": external.get("tag", ""),
        "subjects": statement.get("subject", []),
    }


def settings_of(record: Mapping[str, Any], overrides: Mapping[str, Any], workdir: Path) -> dict[str, Any]:
    """The CLI settings layer of the rebuild: the record's parameters, then what the user changes on purpose."""
    values = {setting: str(record[key]) for key, setting in PARAMETERS.items() if record.get(key)}
    return {**values, **{k: v for k, v in overrides.items() if v is not None}, "workdir": str(workdir)}


def fresh(workdir: Path) -> None:
    if workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise UsageError(
            f"{workdir} is not empty: a rebuild needs a fresh workdir",
            hint="pass --workdir with a new directory (nothing was changed)",
        )


def _go_root(plan: BuildPlan) -> Path:
    return next(s.root for s in plan.stage("istio").steps if isinstance(s, CheckElves))


def _final_names(plan: BuildPlan) -> tuple[str, ...]:
    return next(s.images for s in plan.stage("record").steps if isinstance(s, WriteRecord))


def subjects(record: Mapping[str, Any], original: BuildPlan | None) -> list[Subject]:
    """What the original build made: from a record (with paths), or a provenance's subjects (digests only)."""
    if "subjects" in record:  # a pushed image's manifest digest, the release archives: not from a rebuild that
        # stops at images (the archives' istioctl is compared as the Go binary it is)
        return [_subject_of(s) for s in record["subjects"] if _digest_of(s) not in ("manifest", "index")
                and not str((s.get("annotations") or {}).get("role", "")).startswith("release")]  # fmt: skip
    envoy = record.get("envoy") or {}
    found = [Subject(name="envoy", kind="file", digest=envoy.get("sha256", ""), path=_path(envoy.get("path")))]
    root = _go_root(original) if original else None
    for name, entry in sorted((record.get("istio") or {}).items()):
        if name != "envoy":
            found.append(Subject(name=name, kind="file", digest=entry["sha256"], path=root / name if root else None))
    for name, image_id in sorted((record.get("image_ids") or {}).items()):
        found.append(Subject(name=name, kind="image", digest=image_id, image=name))
    return found


def _digest_of(entry: Mapping[str, Any]) -> str:
    """What an image subject's digest is (provenance.image_subject: imageID, manifest, index); "" for a file."""
    return str((entry.get("annotations") or {}).get("digestOf", ""))


def _subject_of(entry: Mapping[str, Any]) -> Subject:
    digest = "sha256:" + str((entry.get("digest") or {}).get("sha256", ""))
    kind = "image" if _digest_of(entry) == "imageID" else "file"
    return Subject(name=entry["name"], kind=kind, digest=digest, image=entry["name"] if kind == "image" else "")


def _path(text: object) -> Path | None:
    return Path(str(text)) if text else None


def outcomes(subjects_: list[Subject], rebuilt: BuildPlan, cli: Any) -> list[Outcome]:
    """Each subject against the rebuild in `rebuilt`'s workdir."""
    from istiobuild import dockerapi

    envoy = fsutil.read_json_object(rebuilt.layout.record("envoy")) or {}
    go = fsutil.read_json_object(rebuilt.layout.record("istio")) or {}
    built_names = dict(zip(_final_names(rebuilt), rebuilt.stage("images").images, strict=True))
    root = _go_root(rebuilt)
    results = []
    for s in subjects_:
        if s.kind == "image":
            built = built_names.get(s.name, "")
            new = dockerapi.image_id(cli, built) if built else ""
            results.append(_image_outcome(s, new, built, cli, rebuilt.layout.scratch))
            continue
        if s.name == "envoy":
            new_digest, new_path = str(envoy.get("sha256", "")), rebuilt.layout.artifacts / "envoy"
        else:
            new_digest, new_path = str((go.get(s.name) or {}).get("sha256", "")), root / s.name
        results.append(_file_outcome(s, new_digest.removeprefix("sha256:"), new_path))
    return results


def _file_outcome(s: Subject, new: str, new_path: Path) -> Outcome:
    old = s.digest.removeprefix("sha256:")
    if old == new:
        return Outcome(name=s.name, identical=True, original=old, rebuilt=new)
    if s.path is not None and s.path.is_file() and new_path.is_file():
        diff = compare.compare_files(s.path, new_path, artifact=s.name)
        details = tuple(diff.render()) if diff else ("the original file changed since it was recorded",)
    else:
        details = ("the original file is gone: only its digest is known",)
    return Outcome(name=s.name, identical=False, original=old, rebuilt=new or "(not built)", details=details)


def _image_outcome(s: Subject, new: str, built: str, cli: Any, scratch: Path) -> Outcome:
    from istiobuild import dockerapi

    if s.digest == new:
        return Outcome(name=s.name, identical=True, original=s.digest, rebuilt=new)
    if new and dockerapi.image_id(cli, s.digest):
        diff = compare.compare_images(cli, s.digest, built, scratch, artifact=s.name)
        details = tuple(diff.render()) if diff else ()
    else:
        details = ("the original image is not in this docker: only its ID is known",)
    return Outcome(name=s.name, identical=False, original=s.digest, rebuilt=new or "(not built)", details=details)


def report(results: list[Outcome]) -> list[str]:
    lines = []
    for r in results:
        lines.append(f"{'identical' if r.identical else 'DIFFERS':<9}  {r.name}  {r.original[:19]}")
        if not r.identical:
            lines.append(f"           rebuilt {r.rebuilt[:19]}")
            lines += [f"           {d}" for d in r.details]
    same = sum(r.identical for r in results)
    lines.append(f"{same} of {len(results)} artifacts identical")
    return lines

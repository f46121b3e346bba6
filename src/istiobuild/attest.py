"""The provenance of one build (provenance.py's format, docs/provenance.md's build type), assembled from the
records the stages wrote: what was made (envoy, Go binaries, images) from what (pins, patches, base images,
supplied downloads, tools), by whom and when. Paths never appear: names are relative, repositories canonical.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from istiobuild import provenance
from istiobuild.downloads import sha256_file
from istiobuild.layout import Layout
from istiobuild.provenance import Dependency, Subject
from istiobuild.release import Component, Release
from istiobuild.resources import data_root
from istiobuild.secrets import redact_url

LOCAL_BUILDER = "https://istiobuild.github.io/builders/local/v1"


def _json(path: Path) -> Any:
    """A record the stages wrote (None when missing or unreadable)."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def subjects(layout: Layout, image_ids: Mapping[str, str], pushed: Mapping[str, str]) -> list[Subject]:
    envoy = _json(layout.record("envoy")) or {}
    found = [Subject(name="envoy", digest={"sha256": envoy["sha256"]})] if envoy.get("sha256") else []
    for name, entry in sorted((_json(layout.record("istio")) or {}).items()):
        if name != "envoy":  # istio's copy of the same envoy
            found.append(Subject(name=name, digest={"sha256": entry["sha256"]}))
    for name, image_id in sorted(image_ids.items()):
        if image_id:
            found.append(provenance.image_subject(name, manifest_digest=pushed.get(name, ""), image_id=image_id))
    return found + release_subjects(layout)


def release_subjects(layout: Layout) -> list[Subject]:
    """The release stage's archives and its manifest.yaml (names relative to the build output)."""
    release = _json(layout.record("archives")) or {}
    found = [
        Subject(name=f"release/{a['name']}", digest={"sha256": a["sha256"]}, annotations={"role": "release archive"})
        for a in release.get("archives", [])
    ]
    manifest = layout.out_dir / "release" / "manifest.yaml"
    if found and manifest.is_file():
        found.append(
            Subject(name="release/manifest.yaml", digest={"sha256": sha256_file(manifest)},
                    annotations={"role": "release manifest"})
        )  # fmt: skip
    return found


def dependencies(release: Release, layout: Layout, builder: tuple[str, str] | None) -> list[Dependency]:
    deps = []
    for comp in Component:
        pin = release.pins[comp]
        ref = f"refs/tags/{pin.tag}" if pin.tag else pin.commit
        deps.append(provenance.git_dependency(comp.value, redact_url(release.urls[comp]), ref, pin.commit))
    for entries in (_json(layout.record("patches")) or {}).values():
        for entry in entries if isinstance(entries, list) else ():
            deps.append(Dependency(name=entry["name"], digest={"sha256": entry["sha256"]}))
    for entry in (_json(layout.record("base-images")) or {}).get("images", []):
        deps.append(provenance.image_dependency(entry["image"], entry["id"], role="base image for " + entry["name"]))
    for name, entry in sorted((_json(layout.artifacts / "downloads.json") or {}).items()):
        if isinstance(entry, Mapping) and entry.get("sha256"):
            deps.append(Dependency(name=name, digest={"sha256": entry["sha256"]}, annotations={"role": "download"}))
    ztunnels = {
        (e["sha256"], "built with cargo" if e.get("built") else "supplied")
        for e in (_json(layout.record("preplaced")) or {}).values()
        if e.get("source") == "ztunnel"
    }
    deps += [Dependency(name="ztunnel", digest={"sha256": h}, annotations={"role": r}) for h, r in sorted(ztunnels)]
    source = _json(layout.record("ztunnel")) or {}
    if source.get("commit"):
        deps.append(Dependency(name="ztunnel source", digest={"gitCommit": source["commit"]}))
    if builder:
        deps.append(provenance.image_dependency(builder[0], builder[1], role="builder"))
    deps += tools(layout)
    return deps


def tools(layout: Layout) -> list[Dependency]:
    found = {}
    for var, entry in (_json(layout.record("proxy-toolchain")) or {}).items():
        if isinstance(entry, Mapping) and entry.get("version"):
            found[f"{var} {Path(str(entry.get('resolved', ''))).name}"] = str(entry["version"])
    binaries: dict[str, Any] = _json(layout.record("istio")) or {}
    go = next(
        (str(b["version"]["GolangVersion"]) for b in binaries.values() if "GolangVersion" in b.get("version", {})), ""
    )
    if go:
        found["go"] = go
    return [provenance.tool_dependency(name, version) for name, version in sorted(found.items())]


def byproducts(layout: Layout) -> list[Dependency]:
    """The verification results and the SBOMs, by digest (their files sit next to the provenance)."""
    found = []
    verify = layout.record("verify")
    if verify.is_file():
        results = _json(verify) or []
        passed = all(isinstance(f, Mapping) and f.get("ok") for f in results) and bool(results)
        found.append(
            Dependency(
                name="verify.json",
                digest={"sha256": sha256_file(verify)},
                annotations={"verification": "passed" if passed else "failed"},
            )
        )
    for sbom in sorted((layout.out_dir / "sbom").glob("*.json")):
        found.append(
            Dependency(name=f"sbom/{sbom.name}", digest={"sha256": sha256_file(sbom)}, annotations={"role": "sbom"})
        )
    return found


def run_details() -> tuple[str, str]:
    """(builder id, invocation id): the CI run when there is one, else this machine's istiobuild, a fresh id."""
    env = os.environ
    if env.get("GITHUB_ACTIONS") == "true" and env.get("GITHUB_RUN_ID"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        builder = f"{server}/{env['GITHUB_WORKFLOW_REF']}" if env.get("GITHUB_WORKFLOW_REF") else LOCAL_BUILDER
        run = f"{server}/{env.get('GITHUB_REPOSITORY', '')}/actions/runs/{env['GITHUB_RUN_ID']}"
        return builder, f"{run}/attempts/{env.get('GITHUB_RUN_ATTEMPT', '1')}"
    if env.get("GITLAB_CI") == "true" and env.get("CI_JOB_URL"):
        return f"{env.get('CI_SERVER_URL', '')}/{env.get('CI_PROJECT_PATH', '')}", env["CI_JOB_URL"]
    return LOCAL_BUILDER, f"urn:uuid:{uuid.uuid4()}"


def started(layout: Layout) -> dt.datetime:
    """When the build's first recorded stage finished (the stamps are written as stages end)."""
    times = [p.stat().st_mtime for p in layout.stamps.glob("*.json")]
    return dt.datetime.fromtimestamp(min(times) if times else dt.datetime.now().timestamp(), tz=dt.timezone.utc)


def statement(
    *,
    release: Release,
    layout: Layout,
    external: Mapping[str, str],
    internal: Mapping[str, Any],
    image_ids: Mapping[str, str],
    pushed: Mapping[str, str],
    builder: tuple[str, str] | None = None,
) -> dict[str, Any]:
    builder_id, invocation = run_details()
    return provenance.statement(
        subjects=subjects(layout, image_ids, pushed),
        external=external,
        internal=internal,
        dependencies=dependencies(release, layout, builder),
        builder_id=builder_id,
        builder_version={"istiobuild": version()},
        invocation_id=invocation,
        started=started(layout),
        finished=dt.datetime.now(tz=dt.timezone.utc),
        byproducts=byproducts(layout),
    )


def version() -> str:
    try:
        return metadata.version("istiobuild")
    except metadata.PackageNotFoundError:
        return "unknown (" + str(data_root().name) + ")"


# -- checking an image against a provenance (invoke verify --provenance, invoke manifest)


def read(path: Path, key: Path | None) -> tuple[dict[str, Any], str]:
    """The statement in `path` (a statement or its DSSE envelope) and who signed it ("" = not checked).

    With `key` the envelope's signature must verify with it; a bare statement cannot be checked then."""
    import json

    from istiobuild import signing
    from istiobuild.errors import UsageError

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path} is not a readable JSON file ({exc})", hint="pass provenance.json or its envelope"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is neither a statement nor a DSSE envelope", hint="pass provenance.dsse.json")
    envelope = "payload" in data
    if key is not None:
        if not envelope:
            raise UsageError(
                f"{path} is an unsigned statement: --key checks a signature",
                hint="pass the DSSE envelope (provenance.dsse.json) of a build made with --signing-key",
            )
        return signing.verify(data, key), f"signed by key {signing.key_id(key)[:16]}"
    try:
        statement = provenance.decode_envelope(data) if envelope else data
        provenance.validate(statement)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}", hint="pass the provenance.json or provenance.dsse.json of a build") from None
    return statement, ""


def image_digests(cli: Any, image: str) -> set[str]:
    """The local image's ID and its repository digests, as bare sha256 hex."""
    attrs = cli.images.get(image).attrs
    found = {str(attrs.get("Id", "")).removeprefix("sha256:")}
    found.update(d.rpartition("@sha256:")[2] for d in attrs.get("RepoDigests") or [])
    return found - {""}


def subject_for(statement: Mapping[str, Any], digests: set[str]) -> str:
    """The name of the subject with one of `digests` ("" when none)."""
    for subject in statement.get("subject", []):
        if subject.get("digest", {}).get("sha256") in digests:
            return str(subject.get("name", ""))
    return ""


def verification_passed(statement: Mapping[str, Any]) -> bool:
    """The build's own verification (byproduct verify.json) passed."""
    byproducts = statement.get("predicate", {}).get("runDetails", {}).get("byproducts", [])
    return any(
        b.get("name") == "verify.json" and b.get("annotations", {}).get("verification") == "passed" for b in byproducts
    )

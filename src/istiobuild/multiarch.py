"""`invoke manifest`: join per-arch images, built on different machines, into multi-arch tags, but only images
that istiobuild built, verified and pushed: each must carry an attached provenance (a DSSE envelope at
`<repo>:sha256-<digest>.att`) naming it as a subject, built for that arch, whose verification passed, signed by
`--key` when one is given. The join writes the provenance of the indexes it made (signed with the signing key).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from istiobuild import attest, fsutil, provenance, signing
from istiobuild.arch import Arch
from istiobuild.errors import SourceError, UsageError
from istiobuild.run import run

UNVERIFIED_HINT = (
    "build and push it with `invoke build --push` (the provenance is attached next to the image; --signing-key signs "
    "it, which --key checks), or join it anyway with --allow-unverified"
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Part:
    """A per-arch image of a multi-arch tag, by its pushed manifest digest."""

    reference: str
    arch: Arch
    digest: str
    verified: str  # how it was verified ("" = not checked: --allow-unverified)


def manifest_digest(reference: str, *, insecure: bool, log: Path) -> str:
    result = run(
        ["skopeo", "inspect", f"--tls-verify={'false' if insecure else 'true'}", "--format", "{{.Digest}}", "--",
         f"docker://{reference}"],
        capture=True, check=False, log=log, what=f"read the digest of {reference}",
    )  # fmt: skip
    digest = result.stdout.strip()
    if result.returncode != 0 or not digest.startswith("sha256:"):
        raise SourceError(f"{reference} is not in the registry", hint="push it first (`invoke build --push`)")
    return digest


def check(
    reference: str, arch: Arch, *, key: Path | None, insecure: bool, scratch: Path, log: Path, allow: bool
) -> Part:
    """The per-arch image, verified by its attached provenance; UsageError naming why it is not."""
    digest = manifest_digest(reference, insecure=insecure, log=log)
    if allow:
        return Part(reference=reference, arch=arch, digest=digest, verified="")
    repo = reference.rpartition(":")[0]
    envelopes = signing.fetch_attached(repo, digest, insecure=insecure, scratch=scratch)
    reasons = []
    for envelope in envelopes:
        try:
            statement = signing.verify(envelope, key) if key else provenance.decode_envelope(envelope)
        except (ValueError, signing.VerificationError) as exc:
            reasons.append(str(exc))
            continue
        reason = _problem(statement, digest, arch)
        if not reason:
            signed = "signed" if envelope.get("signatures") else "unsigned"
            signer = (
                f"signed by key {signing.key_id(key)[:16]}" if key else f"{signed}, signature not checked (no --key)"
            )
            return Part(reference=reference, arch=arch, digest=digest, verified=signer)
        reasons.append(reason)
    why = "; ".join(reasons) if reasons else "no provenance is attached to it"
    raise UsageError(f"{reference} ({digest[:19]}) is not verified: {why}", hint=UNVERIFIED_HINT)


def _problem(statement: dict[str, Any], digest: str, arch: Arch) -> str:
    if not attest.subject_for(statement, {digest.removeprefix("sha256:")}):
        return "its provenance is for other images"
    built_for = statement["predicate"]["buildDefinition"]["externalParameters"].get("arch")
    if built_for != arch.value:
        return f"its provenance says it was built for {built_for}, not {arch}"
    if not attest.verification_passed(statement):
        return "its provenance records a verification that did not pass"
    return ""


def index_statement(
    indexes: dict[str, str], parts: Sequence[Part], *, release: str, hub: str, tag: str
) -> dict[str, Any]:
    """The provenance of the multi-arch indexes: subjects the indexes, dependencies the per-arch images."""
    builder, invocation = attest.run_details()
    now = dt.datetime.now(tz=dt.timezone.utc)
    arches = ",".join(sorted({p.arch.value for p in parts}))
    return provenance.statement(
        subjects=[provenance.image_subject(ref, manifest_digest=d, index=True) for ref, d in sorted(indexes.items())],
        external={"release": release, "arch": arches, "toolchain": "", "pageSize": "", "hub": hub, "tag": tag},
        internal={"join": "invoke manifest"},
        dependencies=[
            provenance.image_dependency(p.reference, p.digest, role=f"{p.arch} image ({p.verified or 'unverified'})")
            for p in parts
        ],
        builder_id=builder,
        builder_version={"istiobuild": attest.version()},
        invocation_id=invocation,
        started=now,
        finished=now,
    )


def write(statement: dict[str, Any], out: Path, signing_key: Path | None) -> Path:
    fsutil.write_json(out / "provenance.json", statement)
    if signing_key is None:
        return out / "provenance.json"
    envelope = signing.sign(statement, signing_key)
    fsutil.write_json(out / "provenance.dsse.json", envelope)
    return out / "provenance.dsse.json"

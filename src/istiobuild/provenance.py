"""Build provenance: an in-toto Statement v1 carrying a SLSA Provenance v1 predicate (docs/provenance.md).

`statement` builds one, `validate` checks one against the published protobuf schemas of the in-toto
attestation framework (in-toto-attestation: unknown fields and wrong types are refused) and against SLSA
Provenance v1's required fields, `subjects_of` reads back what it attests, `dumps` is its canonical JSON
(sorted keys: the same statement gives the same bytes, the payload signing.sign signs).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import STATEMENT_TYPE_URI, Statement

from istiobuild.downloads import sha256_file

STATEMENT_TYPE = STATEMENT_TYPE_URI  # https://in-toto.io/Statement/v1
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"  # a DSSE envelope's payloadType for an in-toto statement
BUILD_TYPE = "https://istiobuild.github.io/buildtypes/release/v1"  # specified in docs/provenance.md
# The externalParameters of BUILD_TYPE: exactly these, each a string (docs/provenance.md).
EXTERNAL_PARAMETERS = ("release", "arch", "toolchain", "pageSize", "hub", "tag")
OPTIONAL_EXTERNAL_PARAMETERS = ("targetKernel", "allocator")  # targetKernel when given; allocator since 1.22 support

# Digest algorithms the in-toto DigestSet spec fixes a size for (bytes); their values are lower-case hex.
_DIGEST_BYTES = {
    **dict.fromkeys(("md5",), 16),
    **dict.fromkeys(("sha1", "gitCommit"), 20),
    **dict.fromkeys(("sha224", "sha512_224", "sha3_224"), 28),
    **dict.fromkeys(("sha256", "sha512_256", "sha3_256", "dirHash"), 32),
    **dict.fromkeys(("sha384", "sha3_384"), 48),
    **dict.fromkeys(("sha512", "sha3_512"), 64),
}
_HEX = re.compile(r"[0-9a-f]+")
_SHA256 = re.compile(r"(?:sha256:)?([0-9a-f]{64})")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Subject:
    """An artifact the build produced: a binary (name = its path under the build output) or an image."""

    name: str
    digest: Mapping[str, str]
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dependency:
    """An input of the build: a pinned repository, a patch, a base image, a tool (resolvedDependencies)."""

    name: str = ""
    uri: str = ""
    digest: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The conventions of BUILD_TYPE, one constructor each (docs/provenance.md)


def file_subject(path: Path, root: Path) -> Subject:
    """A file the build produced, named by its path relative to the build output `root`."""
    return Subject(name=path.relative_to(root).as_posix(), digest={"sha256": sha256_file(path)})


def image_subject(reference: str, *, manifest_digest: str = "", image_id: str = "", index: bool = False) -> Subject:
    """An image by reference: the pushed manifest's digest when there is one, else the local image ID
    (the sha256 of its config); a multi-arch tag (`index`) by its index digest. `digestOf` says which."""
    if manifest_digest:
        kind, digest = ("index" if index else "manifest"), manifest_digest
    elif image_id and not index:
        kind, digest = "imageID", image_id
    else:
        raise ValueError(f"{reference}: an image subject needs a manifest digest, or an image ID when not pushed")
    return Subject(name=reference, digest={"sha256": _sha256_hex(digest)}, annotations={"digestOf": kind})


def git_dependency(name: str, url: str, ref: str, commit: str) -> Dependency:
    """A pinned repository: git+https://github.com/istio/istio@refs/tags/1.5.0, {"gitCommit": sha}."""
    return Dependency(name=name, uri=f"git+{url}@{ref}", digest={"gitCommit": commit})


def file_dependency(name: str, path: Path) -> Dependency:
    """A file the build read (a patch, a supplied download), named as it is in the source tree."""
    return Dependency(name=name, digest={"sha256": sha256_file(path)})


def image_dependency(reference: str, digest: str, *, role: str) -> Dependency:
    """An image the build used (a base image, the builder image) by its manifest or image digest."""
    return Dependency(name=reference, digest={"sha256": _sha256_hex(digest)}, annotations={"role": role})


def tool_dependency(name: str, version: str) -> Dependency:
    """A tool of the toolchain (clang, go, bazel ...) by the version it reported: no digest."""
    return Dependency(name=name, annotations={"version": version})


def _sha256_hex(digest: str) -> str:
    match = _SHA256.fullmatch(digest)
    if not match:
        raise ValueError(f"{digest!r} is not a sha256 digest (64 lower-case hex digits, optionally 'sha256:')")
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Building, serialising, reading back


def statement(
    *,
    subjects: Iterable[Subject],
    external: Mapping[str, Any],
    internal: Mapping[str, Any],
    dependencies: Iterable[Dependency],
    builder_id: str,
    builder_version: Mapping[str, str],
    invocation_id: str,
    started: dt.datetime,
    finished: dt.datetime,
    byproducts: Sequence[Dependency] = (),
) -> dict[str, Any]:
    """The provenance of one build, validated; subjects sorted by name, so equal inputs give equal bytes."""
    build_definition = {
        "buildType": BUILD_TYPE,
        "externalParameters": _json_copy(external, "externalParameters"),
        "resolvedDependencies": [_descriptor(d) for d in dependencies],
    }
    if internal:
        build_definition["internalParameters"] = _json_copy(internal, "internalParameters")
    run_details: dict[str, Any] = {
        "builder": {"id": builder_id, "version": dict(builder_version)},
        "metadata": {
            "invocationId": invocation_id,
            "startedOn": _timestamp(started),
            "finishedOn": _timestamp(finished),
        },
    }
    if byproducts:
        run_details["byproducts"] = [_descriptor(b) for b in byproducts]
    doc = {
        "_type": STATEMENT_TYPE,
        "subject": [_descriptor(s) for s in sorted(subjects, key=lambda s: s.name)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {"buildDefinition": build_definition, "runDetails": run_details},
    }
    validate(doc)
    return doc


def dumps(doc: Mapping[str, Any]) -> bytes:
    """The canonical UTF-8 JSON of a statement: sorted keys, no insignificant white space."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def subjects_of(doc: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """name -> digest set of every subject of a valid statement."""
    validate(doc)
    return {s["name"]: dict(s["digest"]) for s in doc["subject"]}


def decode_envelope(envelope: Mapping[str, Any]) -> dict[str, Any]:
    """The valid statement inside a DSSE envelope, its signature NOT checked (signing.verify does that);
    ValueError when it holds none."""
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        raise ValueError(f"not a DSSE envelope of an in-toto statement (payloadType {PAYLOAD_TYPE})")
    try:
        doc: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"], validate=True))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ValueError(f"the envelope's payload is not a JSON statement: {exc}") from None
    validate(doc)
    return doc


def _descriptor(item: Subject | Dependency) -> dict[str, Any]:
    out: dict[str, Any] = {"name": item.name} if item.name else {}
    if isinstance(item, Dependency) and item.uri:
        out["uri"] = item.uri
    if item.digest:
        out["digest"] = dict(item.digest)
    if item.annotations:
        out["annotations"] = dict(item.annotations)
    return out


def _json_copy(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    try:
        copied: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON: {exc}") from None
    return copied


def _timestamp(when: dt.datetime) -> str:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"{when.isoformat()} has no time zone: give an aware datetime (e.g. datetime.now(timezone.utc))"
        )
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Validation


def validate(doc: Mapping[str, Any]) -> None:
    """Raise ValueError naming what is wrong unless `doc` is an in-toto Statement v1 whose predicate is a
    SLSA Provenance v1 with the fields istiobuild's provenance always has (docs/provenance.md)."""
    if not isinstance(doc, Mapping):
        raise ValueError(f"a statement is a JSON object, not {type(doc).__name__}")
    try:
        dumps(doc)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the statement is not JSON: {exc}") from None
    pb = _parse(doc, statement_pb2.Statement(), "statement")
    missing = [k for k in ("_type", "subject", "predicateType", "predicate") if not doc.get(k)]
    if missing:
        raise ValueError(f"not an in-toto Statement v1: {missing[0]} is missing")
    if pb.type != STATEMENT_TYPE:
        raise ValueError(f"_type is {pb.type!r}, not {STATEMENT_TYPE!r}")
    try:
        Statement.copy_from_pb(pb).validate()
    except ValueError as exc:
        raise ValueError(f"not an in-toto Statement v1: {exc}") from None
    if doc["predicateType"] != PREDICATE_TYPE:
        raise ValueError(f"predicateType is {doc['predicateType']!r}, not {PREDICATE_TYPE!r}")
    _check_provenance(_parse(doc["predicate"], provenance_pb2.Provenance(), "predicate"))
    _check_descriptors(doc)
    if doc["predicate"]["buildDefinition"]["buildType"] == BUILD_TYPE:
        _check_external(doc["predicate"]["buildDefinition"]["externalParameters"])


def _parse(data: Any, message: Any, what: str) -> Any:
    """`data` parsed into the protobuf `message`; unknown fields, wrong types and non-JSON names refused."""
    _check_json_names(data, message.DESCRIPTOR, what)
    try:
        return json_format.ParseDict(data, message)
    except json_format.ParseError as exc:
        first = str(exc).splitlines()[0].rstrip(".")
        raise ValueError(f"{what} does not match the schema: {first}") from None


def _check_json_names(data: Any, descriptor: Any, where: str) -> None:
    """Only the schema's JSON names (`predicateType`, never the protobuf alias `predicate_type`)."""
    if not isinstance(data, Mapping):
        return  # ParseDict names the wrong type
    fields = {f.json_name: f for f in descriptor.fields}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            raise ValueError(f"{where} has an unknown field {key!r} (known: {', '.join(fields)})")
        sub = field.message_type
        if sub is None or sub.GetOptions().map_entry or sub.full_name.startswith("google.protobuf."):
            continue
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            _check_json_names(item, sub, f"{where}.{key}" + (f"[{i}]" if isinstance(value, list) else ""))


def _check_provenance(pb: Any) -> None:
    """SLSA Provenance v1's required fields (as in-toto's Go validator has them), plus run metadata."""
    definition, details = pb.build_definition, pb.run_details
    required = (
        (pb.HasField("build_definition"), "predicate.buildDefinition"),
        (definition.build_type != "", "predicate.buildDefinition.buildType"),
        (definition.HasField("external_parameters"), "predicate.buildDefinition.externalParameters"),
        (pb.HasField("run_details"), "predicate.runDetails"),
        (details.HasField("builder"), "predicate.runDetails.builder"),
        (details.builder.id != "", "predicate.runDetails.builder.id"),
        (details.metadata.invocation_id != "", "predicate.runDetails.metadata.invocationId"),
        (details.metadata.HasField("started_on"), "predicate.runDetails.metadata.startedOn"),
        (details.metadata.HasField("finished_on"), "predicate.runDetails.metadata.finishedOn"),
    )
    missing = [name for present, name in required if not present]
    if missing:
        raise ValueError(f"not a SLSA Provenance v1: {missing[0]} is missing")
    for what, uri in (("buildType", definition.build_type), ("builder.id", details.builder.id)):
        if not _is_uri(uri):
            raise ValueError(f"predicate {what} {uri!r} is not a URI")
    if details.metadata.finished_on.ToDatetime() < details.metadata.started_on.ToDatetime():
        raise ValueError("predicate.runDetails.metadata: finishedOn is before startedOn")


def _is_uri(text: str) -> bool:
    parts = urlsplit(text)
    return bool(parts.scheme) and bool(parts.netloc or parts.path) and not any(c.isspace() for c in text)


def _check_descriptors(doc: Mapping[str, Any]) -> None:
    predicate = doc["predicate"]
    groups = (
        ("subject", doc["subject"]),
        ("resolvedDependencies", predicate["buildDefinition"].get("resolvedDependencies", [])),
        ("byproducts", predicate["runDetails"].get("byproducts", [])),
        ("builderDependencies", predicate["runDetails"]["builder"].get("builderDependencies", [])),
    )
    for group, items in groups:
        for i, item in enumerate(items):
            if not (item.get("name") or item.get("uri") or item.get("digest")):
                raise ValueError(f"{group}[{i}] has none of name, uri and digest")
            for algorithm, value in item.get("digest", {}).items():
                _check_digest(f"{group}[{i}] ({item.get('name') or item.get('uri')})", algorithm, value)
    names = [s.get("name", "") for s in doc["subject"]]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"subject {twice[0]!r} appears more than once")


def _check_digest(where: str, algorithm: str, value: str) -> None:
    size = _DIGEST_BYTES.get(algorithm)
    if size is None:
        return  # the DigestSet spec allows other algorithms, without a fixed form
    if not _HEX.fullmatch(value) or len(value) != 2 * size:
        raise ValueError(f"{where}: the {algorithm} digest {value!r} is not {2 * size} lower-case hex digits")


def _check_external(params: Mapping[str, Any]) -> None:
    missing = [k for k in EXTERNAL_PARAMETERS if k not in params]
    unknown = sorted(set(params) - {*EXTERNAL_PARAMETERS, *OPTIONAL_EXTERNAL_PARAMETERS})
    if missing or unknown:
        what = f"lacks {', '.join(missing)}" if missing else f"has unknown parameters {', '.join(unknown)}"
        raise ValueError(
            f"externalParameters of {BUILD_TYPE} {what} (it has exactly {', '.join(EXTERNAL_PARAMETERS)}, "
            f"and {', '.join(OPTIONAL_EXTERNAL_PARAMETERS)} when given)"
        )
    wrong = [k for k in params if not isinstance(params[k], str)]
    if wrong:
        raise ValueError(f"externalParameters.{wrong[0]} is {params[wrong[0]]!r}, not a string")

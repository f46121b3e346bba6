"""Provenance statements: built for real files and a real git commit, checked against the published
in-toto Statement v1 and SLSA Provenance v1 protobuf schemas; what validation refuses."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement

from istiobuild import provenance
from istiobuild.provenance import Dependency, Subject

STARTED = dt.datetime(2024, 5, 1, 10, 0, 0, tzinfo=dt.timezone.utc)
FINISHED = dt.datetime(2024, 5, 1, 12, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 10:30:05Z
EXTERNAL = {
    "release": "1.5.0",
    "arch": "aarch64",
    "toolchain": "clang",
    "pageSize": "4k",
    "hub": "istio",
    "tag": "1.5.0",
}


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A build output with real files, a patch and a real git commit to depend on."""
    root = tmp_path_factory.mktemp("prov")
    out = root / "out"
    files = {"envoy": b"\x7fELF envoy", "linux_arm64/pilot-discovery": b"pilot", "linux_arm64/istioctl": b"ctl"}
    for name, data in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    patch = root / "0001-arm64.patch"
    patch.write_text("--- a/x\n+++ b/x\n")
    repo = root / "istio"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "1.5.0"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    return {"out": out, "files": files, "patch": patch, "commit": commit}


def make(build: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out: Path = build["out"]
    args: dict[str, Any] = {
        "subjects": [
            *(provenance.file_subject(out / name, out) for name in build["files"]),
            provenance.image_subject("127.0.0.1:5000/istio/pilot:1.5.0-arm64", manifest_digest="sha256:" + "1" * 64),
            provenance.image_subject("istio/proxyv2:1.5.0-arm64", image_id="sha256:" + "2" * 64),
            provenance.image_subject(
                "127.0.0.1:5000/istio/pilot:1.5.0", manifest_digest="sha256:" + "3" * 64, index=True
            ),
        ],
        "external": EXTERNAL,
        "internal": {"mode": "native", "jobs": 2},
        "dependencies": [
            provenance.git_dependency("istio", "https://github.com/istio/istio", "refs/tags/1.5.0", build["commit"]),
            provenance.file_dependency("patches/1.5/istio/0001-arm64.patch", build["patch"]),
            provenance.image_dependency("docker.io/library/ubuntu:bionic", "sha256:" + "4" * 64, role="base image"),
            provenance.tool_dependency("go", "1.19.8"),
        ],
        "builder_id": "https://istiobuild.github.io/builders/local/v1",
        "builder_version": {"istiobuild": "0.1.0"},
        "invocation_id": "1.5.0-aarch64-20240501T100000Z",
        "started": STARTED,
        "finished": FINISHED,
        "byproducts": [Dependency(name="logs/1.5.0-aarch64-proxy.log", digest={"sha256": "5" * 64})],
    }
    args.update(changes)
    return provenance.statement(**args)


def test_statement_parses_into_the_published_schemas(build: dict[str, Any]) -> None:
    doc = make(build)
    # the published protobuf schemas, without unknown fields; the library's own Statement check
    pb = json_format.ParseDict(doc, statement_pb2.Statement(), ignore_unknown_fields=False)
    Statement.copy_from_pb(pb).validate()
    assert (pb.type, pb.predicate_type) == ("https://in-toto.io/Statement/v1", "https://slsa.dev/provenance/v1")
    pred = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance(), ignore_unknown_fields=False)
    assert pred.build_definition.build_type == provenance.BUILD_TYPE
    assert dict(pred.build_definition.external_parameters) == EXTERNAL
    assert pred.run_details.builder.id == "https://istiobuild.github.io/builders/local/v1"
    meta = doc["predicate"]["runDetails"]["metadata"]
    assert (meta["startedOn"], meta["finishedOn"]) == ("2024-05-01T10:00:00Z", "2024-05-01T10:30:05Z")
    deps = {d.name or d.uri: d for d in pred.build_definition.resolved_dependencies}
    git = deps["istio"]
    assert git.uri == "git+https://github.com/istio/istio@refs/tags/1.5.0"
    assert dict(git.digest) == {"gitCommit": build["commit"]}
    assert dict(deps["go"].annotations) == {"version": "1.19.8"} and not deps["go"].digest
    assert doc["predicate"]["runDetails"]["byproducts"][0]["name"] == "logs/1.5.0-aarch64-proxy.log"


def test_subjects_are_the_files_hashed_and_the_images_say_which_digest(build: dict[str, Any]) -> None:
    doc = make(build)
    subjects = provenance.subjects_of(doc)
    for name, data in build["files"].items():
        assert subjects[name] == {"sha256": hashlib.sha256(data).hexdigest()}
    names = [s["name"] for s in doc["subject"]]
    assert names == sorted(names)
    kinds = {s["name"]: s.get("annotations", {}).get("digestOf") for s in doc["subject"]}
    assert kinds["127.0.0.1:5000/istio/pilot:1.5.0-arm64"] == "manifest"
    assert kinds["istio/proxyv2:1.5.0-arm64"] == "imageID"
    assert kinds["127.0.0.1:5000/istio/pilot:1.5.0"] == "index"
    assert subjects["istio/proxyv2:1.5.0-arm64"] == {"sha256": "2" * 64}
    with pytest.raises(ValueError, match="needs a manifest digest"):
        provenance.image_subject("istio/pilot:1.5.0", index=True, image_id="sha256:" + "2" * 64)
    with pytest.raises(ValueError, match="not a sha256 digest"):
        provenance.image_subject("istio/pilot:1.5.0", manifest_digest="sha256:ABC")


def test_serialisation_is_deterministic(build: dict[str, Any]) -> None:
    first = make(build)
    again = make(build)
    assert provenance.dumps(first) == provenance.dumps(again)
    text = provenance.dumps(first).decode()
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # the subjects' order given does not matter
    out: Path = build["out"]
    shuffled = [provenance.file_subject(out / n, out) for n in reversed(list(build["files"]))]
    ordered = [provenance.file_subject(out / n, out) for n in build["files"]]
    assert provenance.dumps(make(build, subjects=shuffled)) == provenance.dumps(make(build, subjects=ordered))


def _drop(*paths: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        for path in paths:
            *parents, last = path.split(".")
            node: Any = doc
            for part in parents:
                node = node[int(part)] if part.isdigit() else node[part]
            del node[last]

    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_drop("_type"), "_type is missing"),
        (_drop("subject"), "subject is missing"),
        (_set("subject", []), "subject is missing"),
        (_drop("predicateType"), "predicateType is missing"),
        (_drop("predicate"), "predicate is missing"),
        (_drop("subject.0.digest"), r"At least one digest required \(subject 0\)"),
        (_drop("predicate.buildDefinition"), "buildDefinition is missing"),
        (_drop("predicate.buildDefinition.buildType"), "buildType is missing"),
        (_drop("predicate.buildDefinition.externalParameters"), "externalParameters is missing"),
        (_drop("predicate.runDetails"), "runDetails is missing"),
        (_drop("predicate.runDetails.builder"), "builder is missing"),
        (_drop("predicate.runDetails.builder.id"), "builder.id is missing"),
        (_drop("predicate.runDetails.metadata.invocationId"), "invocationId is missing"),
        (_drop("predicate.runDetails.metadata.startedOn"), "startedOn is missing"),
        (_drop("predicate.runDetails.metadata.finishedOn"), "finishedOn is missing"),
        (_drop("predicate.buildDefinition.externalParameters.hub"), "lacks hub"),
        (_drop("subject.0.digest", "subject.0.name"), "At least one of name, URI, or digest"),
        (_drop("predicate.buildDefinition.resolvedDependencies.3.name"), r"resolvedDependencies\[3\] has none of name"),
    ],
)
def test_a_missing_required_field_fails(
    build: dict[str, Any], edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    doc = copy.deepcopy(make(build))
    edit(doc)
    with pytest.raises(ValueError, match=message):
        provenance.validate(doc)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("extra", 1), "statement has an unknown field 'extra'"),
        (_set("predicate_type", provenance.PREDICATE_TYPE), "unknown field 'predicate_type'"),  # protobuf alias
        (_set("type", "x"), "unknown field 'type'"),
        (_set("subject.0.sha256", "x"), r"statement.subject\[0\] has an unknown field 'sha256'"),
        (_set("predicate.buildDefinition.parameters", {}), "predicate.buildDefinition has an unknown field"),
        (_set("predicate.runDetails.builder.name", "me"), "predicate.runDetails.builder has an unknown field 'name'"),
        (_set("predicate.runDetails.metadata.duration", 3), "unknown field 'duration'"),
        (_set("predicate.buildDefinition.externalParameters.jobs", "8"), "unknown parameters jobs"),
    ],
)
def test_an_unknown_field_fails(build: dict[str, Any], edit: Callable[[dict[str, Any]], None], message: str) -> None:
    doc = copy.deepcopy(make(build))
    edit(doc)
    with pytest.raises(ValueError, match=message):
        provenance.validate(doc)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("_type", "https://in-toto.io/Statement/v0.1"), "_type is 'https://in-toto.io/Statement/v0.1'"),
        (_set("predicateType", "https://slsa.dev/provenance/v0.2"), "predicateType is"),
        (_set("subject", {"name": "x"}), "does not match the schema"),
        (_set("subject.0.name", 7), "does not match the schema.*name"),
        (_set("subject.0.digest", {"sha256": "ABC"}), "sha256 digest 'ABC' is not 64 lower-case hex digits"),
        (_set("subject.0.digest", {"gitCommit": "1" * 64}), "gitCommit digest .* is not 40"),
        (_set("predicate.runDetails.metadata.startedOn", "yesterday"), "startedOn"),
        (_set("predicate.runDetails.metadata.finishedOn", "2024-05-01T09:00:00Z"), "finishedOn is before startedOn"),
        (_set("predicate.buildDefinition.externalParameters", ["1.5.0"]), "externalParameters"),
        (_set("predicate.buildDefinition.externalParameters.arch", 64), "externalParameters.arch is 64"),
        (_set("predicate.buildDefinition.buildType", "istiobuild v1"), "buildType 'istiobuild v1' is not a URI"),
        (_set("predicate.runDetails.builder.id", "my laptop"), "builder.id 'my laptop' is not a URI"),
        (_set("subject.1", {"name": "envoy", "digest": {"sha256": "0" * 64}}), "'envoy' appears more than once"),
        (_set("predicate.buildDefinition.internalParameters", {"x": float("nan")}), "not JSON"),
    ],
)
def test_wrong_values_fail(build: dict[str, Any], edit: Callable[[dict[str, Any]], None], message: str) -> None:
    doc = copy.deepcopy(make(build))
    edit(doc)
    with pytest.raises(ValueError, match=message):
        provenance.validate(doc)


def test_a_statement_with_another_build_type_needs_no_istiobuild_parameters(build: dict[str, Any]) -> None:
    doc = copy.deepcopy(make(build))
    doc["predicate"]["buildDefinition"]["buildType"] = "https://example.com/other/v1"
    doc["predicate"]["buildDefinition"]["externalParameters"] = {"anything": [1, 2]}
    provenance.validate(doc)


def test_building_refuses_bad_input(build: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="has no time zone"):
        make(build, started=dt.datetime(2024, 5, 1, 10, 0, 0))
    with pytest.raises(ValueError, match="externalParameters is not JSON"):
        make(build, external={**EXTERNAL, "hub": object()})
    with pytest.raises(ValueError, match="lacks tag"):
        make(build, external={k: v for k, v in EXTERNAL.items() if k != "tag"})
    with pytest.raises(ValueError, match="is a JSON object"):
        provenance.validate(["not", "a", "statement"])  # type: ignore[arg-type]
    subjects = [Subject(name="envoy", digest={"sha256": "0" * 64}), Subject(name="envoy", digest={"sha256": "1" * 64})]
    with pytest.raises(ValueError, match="appears more than once"):
        make(build, subjects=subjects)


def test_the_statement_inside_an_envelope_is_read_without_a_key(build: dict[str, Any]) -> None:
    doc = make(build)
    envelope = {"payloadType": provenance.PAYLOAD_TYPE, "payload": base64.b64encode(provenance.dumps(doc)).decode()}
    assert provenance.decode_envelope({**envelope, "signatures": []}) == doc
    with pytest.raises(ValueError, match="not a DSSE envelope of an in-toto statement"):
        provenance.decode_envelope({**envelope, "payloadType": "text/plain"})
    with pytest.raises(ValueError, match="payload is not a JSON statement"):
        provenance.decode_envelope({**envelope, "payload": "not base64!"})
    with pytest.raises(ValueError, match="unknown field 'extra'"):
        provenance.decode_envelope({**envelope, "payload": base64.b64encode(b'{"extra": 1}').decode()})

"""`[line.mechanism]`: the per-line build mechanism as validated data (src/istiobuild/mechanism.py).

Pure tests of the parser and the loader, plus the shipped data and what the CLI shows of it. Checked against
the real upstream files in tests/test_upstream_mechanism.py."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO, invoke, one_error
from istiobuild import mechanism, release
from istiobuild.errors import DataError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LINE_1_20 = REPO / "releases" / "1.20.toml"


def base() -> dict[str, Any]:
    """The shipped table of line 1.20, as read from its file."""
    table: dict[str, Any] = tomllib.loads(LINE_1_20.read_text())["line"]["mechanism"]
    return copy.deepcopy(table)


def parse(table: dict[str, Any], version: str = "1.20.3") -> mechanism.Mechanism:
    return mechanism.parse(table, line=version.rsplit(".", 1)[0], version=version)


def test_the_shipped_table_parses_to_the_line_mechanism() -> None:
    m = parse(base())
    assert m.local_envoy == "preplace" and m.images == "docker_builder_yaml" and m.definitions == "tools/docker.yaml"
    assert m.ztunnel == "download_or_build" and m.allocator == "gperftools_forced" and not m.wee8
    assert m.paths(goarch="arm64", proxy_sha="P", ztunnel_sha="Z", envoy_dir="E") == (
        "out/linux_arm64/release/envoy-P",
        "out/linux_arm64/release/envoy",
        "out/linux_arm64/release/ztunnel-Z",
        "out/linux_arm64/ztunnel",
    )
    assert m.to_json()["preplace"][0] == "out/linux_{goarch}/release/envoy-{proxy_sha}"
    json.dumps(m.to_json())  # plain JSON


@pytest.mark.parametrize("key", sorted(mechanism.VOCABULARIES))
def test_each_vocabulary_is_closed(key: str) -> None:
    """Every word of the vocabulary is accepted (with what it implies), anything else is refused, naming the words."""
    for word in mechanism.VOCABULARIES[key]:
        table = {**base(), key: word}
        if key == "images":
            table["definitions"] = "tools/docker.yaml" if word == "docker_builder_yaml" else ""
        if key == "ztunnel" and word == "none":
            table["preplace"] = table["preplace"][:2]
        assert getattr(parse(table), key) == word
    with pytest.raises(ValueError, match=rf"^{key} = 'gperftools': must be one of {mechanism.VOCABULARIES[key][0]}"):
        parse({**base(), key: "gperftools"})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"allocater": "default"}, r"unknown keys \['allocater'\]"),
        ({"since": {"1.20.2": {"llvm": "local", "colour": "red"}}}, r"since '1\.20\.2': unknown keys \['colour'\]"),
        ({"since": {"1.21.0": {"llvm": "local"}}}, r"since '1\.21\.0': not a release of line 1\.20"),
        ({"since": {"latest": {"llvm": "local"}}}, r"since 'latest': not a release of line 1\.20"),
        ({"since": {"1.20.2": "local"}}, r"since '1\.20\.2': must be a table"),
        ({"wee8": "no"}, r"wee8 must be true or false"),
        ({"aarch64_work": "ztunnel"}, r"aarch64_work must be a list of non-empty strings"),
        ({"preplace": ["out/linux_{goarch}/release/envoy", ""]}, r"must be a list of non-empty strings"),
        ({"definitions": ""}, r"exactly when images = 'docker_builder_yaml'"),
        ({"images": "make_docker"}, r"exactly when images = 'docker_builder_yaml'"),
        ({"definitions": "../docker.yaml"}, r"definitions '\.\./docker\.yaml' must be a relative path"),
        ({"envoy_target": "src/envoy:envoy"}, r"not a bazel label"),
        ({"envoy_output": "/work/bazel-bin/envoy"}, r"must be a relative path"),
        ({"envoy_output": "envoy"}, r"must be under bazel-bin/"),
    ],
)
def test_bad_tables_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse({**base(), **change})


def test_missing_keys_are_named() -> None:
    table = base()
    del table["llvm"], table["arch"]
    with pytest.raises(ValueError, match=r"^missing \['arch', 'llvm'\]$"):
        parse(table)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/out/linux_{goarch}/release/envoy", "must be a relative path"),
        ("out/linux_{goarch}/../../etc/passwd", "must be a relative path"),
        ("out//envoy", "must be a relative path"),
        ("./out/envoy", "must be a relative path"),
        ("out/linux_{arch}/release/envoy", r"unknown placeholder\(s\) \['arch'\]"),
        ("out/linux_{}/release/envoy", r"unknown placeholder\(s\) \[''\]"),
        ("out/linux_{goarch!r}/envoy", "must be a relative path"),
        ("out/linux_{goarch/envoy", "unbalanced brace"),
        ("bazel-bin/envoy", "must be under istio's out/ or {envoy_dir}/"),
        ("out/{envoy_dir}/envoy", r"\{envoy_dir\} may only begin a path"),
        ("out/linux_$(GOARCH)/envoy", "must be a relative path"),
    ],
)
def test_bad_paths_are_refused(path: str, message: str) -> None:
    table = base()
    table["preplace"] = [*table["preplace"], path]
    with pytest.raises(ValueError, match=message):
        parse(table)


def test_a_ztunnel_sha_needs_a_line_with_ztunnel() -> None:
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \['ztunnel_sha'\]"):
        parse({**base(), "ztunnel": "none"})


def test_since_applies_from_its_release_on() -> None:
    table = {**base(), "since": {"1.20.4": {"allocator": "default"}, "1.20.2": {"llvm": "toolchains_llvm"}}}
    found = {v: parse(table, v) for v in ("1.20.0", "1.20.2", "1.20.3", "1.20.4", "1.20.10")}
    assert [(m.llvm, m.allocator) for m in found.values()] == [
        ("local", "gperftools_forced"),
        ("toolchains_llvm", "gperftools_forced"),
        ("toolchains_llvm", "gperftools_forced"),
        ("toolchains_llvm", "default"),
        ("toolchains_llvm", "default"),  # version order, not string order
    ]


def test_the_shipped_changes_inside_a_line() -> None:
    """1.7.5 builds the agent binaries for GOARCH_LOCAL; docker-builder maps arches per build from 1.14.2."""
    m = release.matrix()
    assert m["1.7.4"].mechanism and m["1.7.4"].mechanism.arch == "target_arch_build_linux_amd64"
    assert m["1.7.5"].mechanism and m["1.7.5"].mechanism.arch == "target_arch_agent_binaries"
    before, after = m["1.14.1"].mechanism, m["1.14.2"].mechanism
    assert before and after and len(before.aarch64_work) == len(after.aarch64_work) + 1


def test_every_pinned_line_has_a_mechanism() -> None:
    pinned = [r for r in release.matrix().values() if not r.buildable]
    buildable = {"1.7", *(f"1.{n}" for n in range(14, 29))}  # 1.7, 1.8 as 1.6; the 1.14+ mechanism
    assert {r.line for r in pinned} == {f"1.{n}" for n in range(6, 31)} - buildable
    assert [r.version for r in pinned if r.line == "1.6"] == ["1.6.11"]  # its envoy is in istio-private only
    assert [r.version for r in pinned if r.line == "1.8"] == ["1.8.5", "1.8.6"]  # envoy commits in no mirror here
    assert [r.version for r in pinned if r.mechanism is None] == []
    words = {(r.line, r.mechanism.local_envoy, r.mechanism.images) for r in pinned if r.mechanism}
    assert ("1.9", "use_local_proxy_make", "make_docker") in words
    assert ("1.13", "istio_envoy_local", "docker_builder_make") in words
    assert ("1.30", "preplace", "docker_builder_yaml") in words


def write_line(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "1.20.toml"
    path.write_text(text)
    return path


def test_the_loader_names_the_file_and_refuses_a_release_override(tmp_path: Path) -> None:
    text = LINE_1_20.read_text()
    bad = write_line(tmp_path, text.replace('llvm = "local"', 'llvm = "downloaded"', 1))
    where = r"^1\.20\.toml: \[release\.'1\.20\.0'\] \[line\.mechanism\]: "
    with pytest.raises(DataError, match=where + "llvm = 'downloaded'"):
        release.load_file(bad)
    override = write_line(tmp_path, text.replace('go = "1.21"\n', 'go = "1.21"\nmechanism = { llvm = "local" }\n', 1))
    with pytest.raises(DataError, match=r"unknown keys \['mechanism'\]"):
        release.load_file(override)
    without = write_line(tmp_path, text[: text.index("# How upstream")] + text[text.index('[release."') :])
    assert all(r.mechanism is None for r in release.load_file(without).values())


def test_the_cli_shows_the_mechanism() -> None:
    """`invoke plan` refuses a pinned release naming its line's mechanism; `releases --json` carries it."""
    proc = invoke("plan", "--release", "1.29.0", "--arch", "aarch64")
    assert one_error(proc) == "error: release 1.29.0 is pinned: istiobuild cannot build line 1.29 yet"
    hint = proc.stderr.splitlines()[1]
    assert hint.startswith("line 1.29: envoy pre-placed (out/linux_arm64/release/envoy-<proxy_sha>, ")
    assert "images by tools/docker-builder from tools/docker.yaml, ztunnel" in hint
    assert len(proc.stderr.splitlines()) == 2  # the error and a one-line hint
    rows = {r["release"]: r for r in json.loads(invoke("releases", "--json").stdout)}
    assert rows["1.20.3"]["mechanism"]["preplace"][-1] == "out/linux_{goarch}/ztunnel"
    assert rows["1.7.5"]["mechanism"]["arch"] == "target_arch_agent_binaries"
    assert rows["1.5.10"]["mechanism"] is None

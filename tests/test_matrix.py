"""`invoke matrix` against the release matrix, and `invoke cache-key`: what changes the key and what does not."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import invoke, one_error
from istiobuild import matrix, release, resources, toolchain
from istiobuild.arch import Arch
from istiobuild.layout import Layout
from istiobuild.release import Component

KEY = re.compile(r"^istiobuild-bazel-(?P<release>[A-Za-z0-9._-]+)-(?P<arch>aarch64|x86_64)-[0-9a-f]{16}$")


def run_matrix(*args: str) -> list[dict[str, object]]:
    proc = invoke("matrix", *args)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1, "one line, for $GITHUB_OUTPUT"
    rows: list[dict[str, object]] = json.loads(proc.stdout)
    return rows


def cache_key(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    proc = invoke("cache-key", *args, env=env, **({"cwd": cwd} if cwd else {}))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_matrix_is_every_real_release_for_both_arches_on_hosted_runners() -> None:
    rows = run_matrix()
    real = [r for r in release.matrix().values() if not r.example and r.buildable]
    assert [(e["release"], e["arch"]) for e in rows] == [(r.version, a.value) for r in real for a in Arch]
    labels = {"aarch64": "ubuntu-24.04-arm", "x86_64": "ubuntu-24.04"}
    lines = {r.version: r.line for r in real}
    for e in rows:
        assert e["runner"] == labels[str(e["arch"])]
        assert e["toolchain"] == "clang"
        assert e["line"] == lines[str(e["release"])]
        assert e["tag"] == e["release"]
        assert e["tag_suffix"] == "-arm64" if e["arch"] == "aarch64" else e["tag_suffix"] == "-amd64"
        assert e["platform"] == f"linux/{e['goarch']}"
        match = KEY.match(str(e["cache_key"]))
        assert match and match["release"] == e["release"] and match["arch"] == e["arch"]
    assert len({e["cache_key"] for e in rows}) == len(rows)


def test_matrix_filters_by_line_release_and_arch_alias_with_self_hosted_labels() -> None:
    line = run_matrix("--release", "1.5", "--runner", "self-hosted")
    assert {e["release"] for e in line} == {v for v, r in release.matrix().items() if r.line == "1.5"}
    assert {tuple(e["runner"]) for e in line} == {("self-hosted", "linux", "ARM64"), ("self-hosted", "linux", "X64")}
    picked = run_matrix("--release", "1.4.7,example", "--arch", "arm64")
    assert [(e["release"], e["arch"]) for e in picked] == [("1.4.7", "aarch64"), ("example", "aarch64")]


def test_several_toolchains_get_their_own_tags_keys_and_manifests() -> None:
    rows = run_matrix("--release", "example", "--toolchain", "clang,gcc")
    assert [(e["arch"], e["toolchain"], e["tag"]) for e in rows] == [
        ("aarch64", "clang", "example-clang"),
        ("aarch64", "gcc", "example-gcc"),
        ("x86_64", "clang", "example-clang"),
        ("x86_64", "gcc", "example-gcc"),
    ]
    assert len({e["cache_key"] for e in rows}) == 4
    joins = run_matrix("--release", "example", "--toolchain", "clang,gcc", "--manifests")
    assert joins == [
        {"release": "example", "toolchain": "clang", "tag": "example-clang", "arches": "aarch64,x86_64"},
        {"release": "example", "toolchain": "gcc", "tag": "example-gcc", "arches": "aarch64,x86_64"},
    ]
    assert run_matrix("--release", "example", "--arch", "x86_64", "--manifests") == []


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--release", "1.99"], "neither a release nor a release line"),
        (["--release", "1.29"], "release 1.29.0 is pinned: istiobuild cannot build line 1.29 yet"),
        (["--release", "1.9.3"], "release 1.9.3 is pinned: its envoy (istio/envoy@0dc1878bcf52) is not in"),
        (["--runner", "cloud"], "is not a runner kind"),
        (["--arch", "riscv64"], "unknown arch"),
        (["--toolchain", "icc"], "unknown toolchain"),
        (["--release", ""], "--release is empty"),
    ],
)
def test_matrix_refuses_bad_selections_in_one_line(args: list[str], words: str) -> None:
    assert words in one_error(invoke("matrix", *args))


def test_a_line_leaves_out_the_toolchains_it_refuses_and_names_a_compiler_below_its_floor() -> None:
    """1.22 builds with clang only (gcc would be ignored by its rc, so plan refuses it); 1.26 takes clang 18 or
    newer: this machine's clang 14 is not what its runners need, and the entry says so instead of keying it."""
    rows = run_matrix("--release", "1.22.0,1.26.0", "--arch", "x86_64", "--toolchain", "gcc,clang")
    assert [(r["release"], r["toolchain"]) for r in rows] == [("1.22.0", "clang"), ("1.26.0", "clang")]
    assert str(rows[0]["compiler"]).startswith("Debian clang version 14")
    assert str(rows[1]["compiler"]).startswith("unknown where the matrix was made: Debian clang version 14")
    assert str(rows[1]["compiler"]).endswith("is not >= 18")


def test_a_line_selects_its_buildable_releases() -> None:
    """1.9.3 .. 1.9.9 are pinned (their envoys are in no mirror): `--release 1.9` is 1.9.0 .. 1.9.2."""
    proc = invoke("matrix", "--release", "1.9", "--arch", "x86_64")
    assert [r["release"] for r in json.loads(proc.stdout)] == ["1.9.0", "1.9.1", "1.9.2"]
    assert (
        proc.stderr.strip() == "note: pinned, not in the matrix: 1.9.3, 1.9.4, 1.9.5, 1.9.6, 1.9.7, 1.9.8, "
        "1.9.9 (`invoke releases` says why)"
    )


def test_matrix_keys_are_the_keys_cache_key_prints_here() -> None:
    rows = run_matrix("--release", "example")
    for e in rows:
        assert cache_key("--release", "example", "--arch", str(e["arch"])) == e["cache_key"]
        assert e["compiler"].startswith("Debian clang version")  # type: ignore[union-attr]


def test_cache_key_json_names_its_inputs_and_the_cached_directories(tmp_path: Path) -> None:
    proc = invoke("cache-key", "--release", "1.5.0", "--arch", "aarch64", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert KEY.match(data["key"])
    inputs = data["inputs"]
    rel = release.get("1.5.0")
    assert inputs["proxy_commit"] == rel.pins[Component.PROXY].commit
    assert (inputs["envoy_commit"], inputs["envoy_sha256"]) == (
        rel.pins[Component.ENVOY].commit,
        rel.pins[Component.ENVOY].sha256,
    )
    assert rel.pins[Component.ISTIO].commit not in proc.stdout
    assert {c for c, _, _ in inputs["patches"]} == {"proxy", "envoy"}
    assert inputs["bazel"] == rel.bazel_version and inputs["page_size"] == "4k"
    assert inputs["toolchain"]["name"] == "clang" and inputs["compiler"]
    layout = Layout(workdir=tmp_path, cache=tmp_path / "c", release="1.5.0", arch=Arch.AARCH64)
    assert data["cache_dirs"] == [str(p.relative_to(tmp_path / "c")) for p in matrix.cached_dirs(layout)]


def test_cache_key_is_the_same_in_any_workdir_and_cache_dir(tmp_path: Path) -> None:
    keys = set()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        env = {"ISTIOBUILD_WORKDIR": str(tmp_path / name / "w"), "ISTIOBUILD_CACHE_DIR": str(tmp_path / name / "c")}
        keys.add(cache_key("--release", "example", "--arch", "x86_64", env=env, cwd=tmp_path / name))
    keys.add(cache_key("--release", "example", "--arch", "x86_64"))
    assert len(keys) == 1 and KEY.match(keys.pop())


def test_toolchain_page_size_and_bazel_version_change_the_key() -> None:
    base = cache_key("--release", "example", "--arch", "x86_64")
    others = {
        cache_key("--release", "example", "--arch", "x86_64", "--toolchain", "gcc"),
        cache_key("--release", "example", "--arch", "x86_64", "--page-size", "64k"),
        cache_key("--release", "example", "--arch", "x86_64", env={"ISTIOBUILD_BAZEL_VERSION": "9.9.9"}),
        cache_key("--release", "example", "--arch", "aarch64"),
    }
    assert base not in others and len(others) == 4


def test_a_missing_compiler_is_one_line_the_matrix_names_it_a_builder_image_stands_for_it() -> None:
    if shutil.which("clang-9"):
        pytest.skip("clang-9 is installed here")  # never in CI: Debian 12 has no clang-9
    line = one_error(invoke("cache-key", "--release", "example", "--arch", "x86_64", "--toolchain", "clang-9"))
    assert "clang-9 is not installed" in line
    (entry, _) = run_matrix("--release", "example", "--toolchain", "clang-9")  # the matrix names it instead
    assert str(entry["compiler"]).startswith("unknown where the matrix was made: clang-9 is not installed")
    env = {"ISTIOBUILD_IN_CONTAINER": "true", "ISTIOBUILD_BUILDER": "istiobuild/host-builder:amd64"}
    assert KEY.match(cache_key("--release", "example", "--arch", "x86_64", "--toolchain", "clang-9", env=env))


# -- in-process: what the key covers, with shipped data changed in a private copy


@pytest.fixture
def data_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private copy of releases/, patches/, toolchains/ that a test may edit, used instead of the checkout's."""
    root = tmp_path / "data"
    for name in ("releases", "patches", "toolchains"):
        shutil.copytree(resources.data_root() / name, root / name)
    monkeypatch.setattr(resources, "data_root", lambda: root)
    release.matrix.cache_clear()
    toolchain.profiles.cache_clear()
    yield root
    release.matrix.cache_clear()
    toolchain.profiles.cache_clear()


def key_of(
    settings_for, *, rel: release.Release | None = None, arch: Arch = Arch.X86_64, compiler: str = "clang 14"
) -> str:  # type: ignore[no-untyped-def]
    tc = toolchain.get("clang")
    inputs = matrix.key_inputs(
        rel or release.get("example"), arch, tc, settings_for(), page_size="4k", compiler=compiler
    )
    return inputs.key


def test_a_proxy_or_envoy_patch_of_the_arch_changes_the_key_an_istio_patch_does_not(
    data_copy: Path, settings_for
) -> None:  # type: ignore[no-untyped-def]
    def edit(patch: str) -> None:
        path = data_copy / patch
        path.write_text(path.read_text() + "\n")

    before = {a: key_of(settings_for, arch=a) for a in Arch}
    assert before == {a: key_of(settings_for, arch=a) for a in Arch}  # reading the data is deterministic
    edit("patches/istio/example/0001-build-linux-target-arch.patch")
    assert {a: key_of(settings_for, arch=a) for a in Arch} == before
    edit("patches/proxy/example/0001-envoy-bazelrc-pass-gn-ninja.patch")  # every arch
    after = {a: key_of(settings_for, arch=a) for a in Arch}
    assert all(after[a] != before[a] for a in Arch)
    edit("patches/envoy/example/0002-wee8-use-host-gn-ninja.patch")  # series: arch=aarch64
    last = {a: key_of(settings_for, arch=a) for a in Arch}
    assert last[Arch.X86_64] == after[Arch.X86_64] and last[Arch.AARCH64] != after[Arch.AARCH64]


def test_the_istio_pin_does_not_change_the_key_the_proxy_and_envoy_pins_do(settings_for) -> None:  # type: ignore[no-untyped-def]
    rel = release.get("example")
    base = key_of(settings_for, rel=rel)

    def repinned(component: Component, **changes: str) -> release.Release:
        pins = {**rel.pins, component: dataclasses.replace(rel.pins[component], **changes)}
        return dataclasses.replace(rel, pins=pins)

    assert key_of(settings_for, rel=repinned(Component.ISTIO, commit="1" * 40, tag="9.9.9")) == base
    assert key_of(settings_for, rel=repinned(Component.PROXY, commit="1" * 40)) != base
    assert key_of(settings_for, rel=repinned(Component.ENVOY, sha256="2" * 64)) != base
    assert key_of(settings_for, rel=repinned(Component.ENVOY, commit="3" * 40)) != base
    assert key_of(settings_for, compiler="clang 15") != base

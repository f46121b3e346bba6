from __future__ import annotations

import csv
from pathlib import Path

import pytest

from istiobuild import release
from istiobuild.arch import Arch
from istiobuild.errors import DataError, UsageError
from istiobuild.release import Component

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "tags-1.4-1.5.csv"
GA = [f"1.4.{i}" for i in range(11)] + [f"1.5.{i}" for i in range(11)]
GA_16 = [f"1.6.{i}" for i in range(15) if i != 11]  # 1.6.11's envoy is pinned in istio-private only: pins only
GA_17 = [f"1.7.{i}" for i in range(9)]  # USE_LOCAL_PROXY, wee8 via gn/ninja, make docker, the 1.7 patch series
GA_18 = [f"1.8.{i}" for i in range(5)]  # as 1.7; 1.8.5 and 1.8.6 pin envoys in no mirror here: pinned, saying why
# 1.9 .. 1.13 as 1.8 (from 1.9 gcr.io/istio-release bases, from 1.10 go:embed charts, 1.12-1.13 prerun_v8_build,
# 1.13 ISTIO_ENVOY_LOCAL and DOCKER_V2_BUILDER=false); releases whose envoy is in no mirror are pinned, saying why
UNPROVEN = {"1.9.3", "1.9.4", "1.9.5", "1.9.6", "1.9.7", "1.9.8", "1.9.9", "1.10.4", "1.11.1", "1.11.7", "1.12.4",
            "1.12.8", "1.13.1", "1.13.5"}  # fmt: skip
GA_9_13 = [f"1.{n}.{i}" for n, count in ((9, 10), (10, 7), (11, 9), (12, 10), (13, 10)) for i in range(count)]
GA_9_13 = [v for v in GA_9_13 if v not in UNPROVEN]
# the 1.14+ mechanism, no patch series: every GA tag of 1.14-1.28
GA_MODERN = [v for v, r in release.matrix().items() if r.line in {f"1.{n}" for n in range(14, 29)}]


def test_matrix_has_every_ga_release_in_order() -> None:
    names = [v for v, r in release.matrix().items() if not r.example and r.buildable]
    assert names == GA + GA_16 + GA_17 + GA_18 + GA_9_13 + GA_MODERN
    assert len(GA_MODERN) == 123 and GA_MODERN[-1] == "1.28.10" and len(names) == 205
    assert all(release.get(v).pinned_release for v in UNPROVEN)
    assert not release.get("1.6.11").buildable


@pytest.mark.upstream
@pytest.mark.skipif(not REF.is_file(), reason="shared/reference not beside the checkout")
def test_matrix_matches_the_reference_table() -> None:
    rows = {r["tag"]: r for r in csv.DictReader(REF.open())}
    for version in GA:
        rel, row = release.get(version), rows[version]
        assert rel.pins[Component.PROXY].commit == row["proxy_commit"]
        assert rel.pins[Component.PROXY].tag == version
        assert rel.pins[Component.ISTIO].commit == row["istio_commit"]
        assert rel.pins[Component.ENVOY].commit == row["envoy_sha"]
        assert rel.pins[Component.ENVOY].sha256 == row["envoy_sha256"]
        assert rel.pins[Component.ENVOY].repo == row["envoy_repo"]
        assert rel.bazel_version == row["proxy_bazelversion"]
        assert rel.go == row["istio_go_directive"]
        assert "wee8-" + rel.wee8 == row["wee8_version"]


def test_line_facts() -> None:
    r150, r147 = release.get("1.5.0"), release.get("1.4.7")
    assert r147.gopath and not r150.gopath
    assert r150.envoy_output == "bazel-bin/src/envoy/envoy"
    assert r150.series[Component.ENVOY] == ("wee8-1.5",)
    assert r147.series[Component.ENVOY] == ("wee8-1.4",)
    assert "private-operator-1.4.7" in r147.series[Component.ISTIO]
    assert "private-operator-1.4.7" not in release.get("1.4.6").series[Component.ISTIO]
    assert "docker.kubectl" not in r150.docker_targets_for(Arch.AARCH64)
    assert "docker.kubectl" in r150.docker_targets_for(Arch.X86_64)


def test_private_envoy_resolves_to_public() -> None:
    rel = release.get("1.5.7")
    pin = rel.pins[Component.ENVOY]
    assert pin.repo == "istio-private/envoy"
    assert pin.public_repo == "istio/envoy"
    assert rel.urls[Component.ENVOY] == "https://github.com/istio/envoy"
    assert rel.note


@pytest.mark.parametrize("bad", ["1.99.9", "nope"])
def test_unknown_release_lists_known(bad: str) -> None:
    with pytest.raises(UsageError, match="unknown release") as err:
        release.get(bad)
    assert "1.5.0" in err.value.hint and "1.4.10" in err.value.hint


@pytest.mark.parametrize("bad", ["1.5.0; rm -rf /", "$(id)", "1.5.0 && x", "../1.5.0", ""])
def test_release_with_metacharacters(bad: str) -> None:
    with pytest.raises(UsageError, match="not a release name"):
        release.get(bad)


LINE = """schema = 1
[line]
name = "t"
bazel_version = "1"
go = "1"
wee8 = ""
envoy_target = "//:envoy"
envoy_output = "bazel-bin/envoy"
gopath = false
docker_targets = ["docker.a"]
skip_docker_targets = {}
[line.repos]
proxy = "https://x/istio/proxy"
envoy = "https://x/{envoy_repo}"
istio = "https://x/istio/istio"
[line.patches]
[release."9.0.0"]
proxy = { tag = "9.0.0", commit = "%s" }
istio = { tag = "9.0.0", commit = "%s" }
source_date_epoch = 1700000000
envoy = { repo = "envoyproxy/envoy", commit = "%s", sha256 = "%s" }
"""
SHA = "a" * 40


def test_later_lines_need_no_code(tmp_path: Path) -> None:
    """A line shaped like a later one: //:envoy, no wee8, an envoyproxy envoy."""
    (tmp_path / "9.0.toml").write_text(LINE % (SHA, SHA, SHA, "b" * 64))
    rel = release.matrix(tmp_path)["9.0.0"]
    assert rel.wee8 == "" and rel.envoy_target == "//:envoy"
    assert rel.urls[Component.ENVOY] == "https://x/envoyproxy/envoy"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace('"b' * 1, '"b', 1).replace("b" * 64, "short"), "sha256"),
        (lambda t: t.replace(SHA, "abc", 1), "40-hex"),
        (lambda t: t.replace("[line.patches]", '[line.patches]\nenvoy = ["nope"]'), "does not exist"),
        (lambda t: t.replace("gopath = false", 'gopath = false\ncolour = "red"'), "unknown keys"),
        (lambda t: t.replace("schema = 1", "schema = 2"), "schema"),
        (lambda t: t.replace("source_date_epoch = 1700000000", 'source_date_epoch = "yesterday"'), "committer time"),
        (lambda t: t.replace("source_date_epoch = 1700000000\n", ""), "missing 'source_date_epoch'"),
    ],
)
def test_invalid_data_is_rejected_on_load(tmp_path: Path, edit, message: str) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "9.0.toml").write_text(edit(LINE % (SHA, SHA, SHA, "b" * 64)))
    with pytest.raises(DataError, match=message):
        release.matrix(tmp_path)


def test_a_release_whose_envoy_nobody_can_fetch_is_refused_with_why(tmp_path: Path) -> None:
    """1.6.11: the proxy pins istio-private/envoy and no public repository has the commit; 1.6.10 builds."""
    from helpers import invoke, one_error

    rel = release.get("1.6.11")
    assert rel.envoy_unfetchable and not rel.buildable and release.get("1.6.10").buildable
    base = ("plan", "--arch", "aarch64", "--host", "aarch64", "--workdir", str(tmp_path))
    error = one_error(invoke(*base, "--release", "1.6.11"))
    assert error == (
        "error: release 1.6.11 cannot be built: its envoy (istio-private/envoy@923607b3f7f8) is in a private "
        "repository with no public copy"
    )
    assert invoke(*base, "--release", "1.6.10").returncode == 0

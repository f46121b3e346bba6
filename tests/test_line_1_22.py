"""Line 1.22, buildable with the 1.18+ mechanism (releases/1.22.toml): what its plan runs, and what it refuses.

No envoy of a real release can be built here (no network for bazel's dependencies): these tests read the plans;
tests/test_upstream.py and tests/test_upstream_definitions.py (mirrors) check the data against the real trees, and
example-next (tests/test_family_next.py) runs the same code end to end.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import invoke, one_error, static_aarch64_binary
from istiobuild import release

PROXY = "b2dd15dc498b84431c063042e7821e179d5a3c41"  # istio.deps PROXY_REPO_SHA at 1.22.0


@pytest.fixture(scope="module")
def ztunnel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return static_aarch64_binary(tmp_path_factory.mktemp("zt"))


def plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return invoke(
        "plan", "--release", "1.22.0", "--arch", "aarch64", "--host", "aarch64", "--workdir", str(tmp_path), *args
    )


def test_every_1_22_release_is_buildable_with_the_1_18_mechanism() -> None:
    rels = [r for r in release.matrix().values() if r.line == "1.22"]
    assert [r.version for r in rels] == [f"1.22.{n}" for n in range(9)]
    for rel in rels:
        assert rel.buildable and rel.mechanism is not None
        assert (rel.mechanism.local_envoy, rel.mechanism.images, rel.mechanism.ztunnel) == (
            "preplace", "docker_builder_yaml", "download_or_build"
        )  # fmt: skip
        assert all(not names for names in rel.series.values())  # upstream builds arm64: no patch series
        assert rel.toolchains == ("clang",) and rel.toolchains_min == "14" and rel.cross == ()


def test_the_plan_pre_places_builds_from_the_definitions_and_stamps_istio_pkg_version(
    tmp_path: Path, ztunnel: tuple[Path, str]
) -> None:
    proc = plan(tmp_path, "--ztunnel", str(ztunnel[0]), "--ztunnel-sha256", ztunnel[1], "--json")
    assert proc.returncode == 0, proc.stderr
    stages = {s["name"]: json.dumps(s) for s in json.loads(proc.stdout)["stages"]}
    assert f"out/linux_arm64/release/envoy-{PROXY}" in stages["istio"]
    assert "istio.io/istio/pkg/version.buildVersion=1.22.0" in stages["istio"]
    assert "USE_LOCAL_PROXY" not in stages["istio"] and "ISTIO_ENVOY_BASE_URL" not in stages["istio"]
    assert "tools/docker.yaml" in stages["images"] and "docker.install-cni" in stages["images"]
    assert "//:envoy" in stages["proxy"] and "version >= 14" in stages["toolchain"]
    text = plan(tmp_path, "--ztunnel", str(ztunnel[0]), "--ztunnel-sha256", ztunnel[1]).stdout
    assert "istio in " in text and "no patches" in text


def test_what_1_22_refuses(tmp_path: Path) -> None:
    line = one_error(plan(tmp_path, "--toolchain", "gcc"))
    assert "does not build with toolchain gcc: it takes only clang (14 or newer); its proxy .bazelrc builds" in line
    line = one_error(invoke("plan", "--release", "1.22.0", "--arch", "aarch64", "--workdir", str(tmp_path)))
    assert "cross-building 1.22.0 for aarch64 on x86_64 is not supported" in line
    assert "--define=tcmalloc=gperftools" in plan(tmp_path, "--allocator", "gperftools", "--json").stdout


def test_toolchain_tables_are_checked_and_name_real_profiles(tmp_path: Path) -> None:
    from istiobuild.errors import DataError
    from istiobuild.toolchain import profiles

    for rel in release.matrix().values():
        assert set(rel.toolchains) <= set(profiles())
    text = (Path(__file__).resolve().parent.parent / "releases" / "1.22.toml").read_text()
    for bad in (
        '{ only = ["clang"] }',
        '{ only = [], why = "x" }',
        '{ only = ["clang"], why = "x", min_version = "v14" }',
    ):
        path = tmp_path / "1.22.toml"
        path.write_text(
            text.replace(
                text[text.index("toolchains = {") : text.index("\n", text.index("toolchains = {"))],
                f"toolchains = {bad}",
            )
        )
        with pytest.raises(DataError, match="toolchains"):
            release.load_file(path)

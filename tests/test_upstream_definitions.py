"""The 1.14+ image mechanism against the real istio trees: what the images stage does with tools/docker.yaml
(imagedefs.py) at the first and last GA tag of every line whose images come from it.

Needs ISTIOBUILD_UPSTREAM_MIRRORS (an istio mirror); skipped otherwise (CI has no network).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from istiobuild import baseimages, fromlines, imagedefs, release
from istiobuild.mechanism import source_of
from istiobuild.preplace import ZTUNNEL_DEPS
from istiobuild.release import Component, Release
from istiobuild.resources import data_dir

MIRRORS = os.environ.get("ISTIOBUILD_UPSTREAM_MIRRORS", "")

pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not MIRRORS or not Path(MIRRORS).is_dir(), reason="ISTIOBUILD_UPSTREAM_MIRRORS not set"),
]


def ends() -> list[Release]:
    """The first and last release of every line whose images come from tools/docker.yaml."""
    by_line: dict[str, list[Release]] = {}
    for rel in release.matrix().values():
        if rel.mechanism is not None and rel.mechanism.definitions and not rel.example:
            by_line.setdefault(rel.line, []).append(rel)
    return [
        r
        for rels in by_line.values()
        for r in sorted({rels[0].version: rels[0], rels[-1].version: rels[-1]}.values(), key=lambda x: x.version)
    ]


def show(commit: str, path: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(Path(MIRRORS) / "istio"), "show", f"{commit}:{path}", "--"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout


@pytest.mark.parametrize("rel", ends(), ids=lambda r: r.version)
def test_definitions_load_and_the_envoy_they_take_is_pre_placed(rel: Release, tmp_path: Path) -> None:
    commit = rel.pins[Component.ISTIO].commit
    assert rel.mechanism is not None
    path = tmp_path / "docker.yaml"
    path.write_text(show(commit, rel.mechanism.definitions))
    istio = Path("/src/istio")
    defs = {d.name: d for d in imagedefs.load(path, imagedefs.variables(istio, "arm64"))}
    for name in ("proxyv2", "pilot"):
        assert name in defs and not defs[name].base
    # every Dockerfile docker.yaml names exists at the tag
    for d in defs.values():
        show(commit, d.dockerfile)
    # proxyv2 takes envoy from a file the line pre-places (no download needed)
    placed = {
        str(istio / t.format(goarch="arm64", proxy_sha=rel.pins[Component.PROXY].commit))
        for t in rel.mechanism.preplace
        if source_of(t) == "envoy"
    }
    envoys = [f for f in defs["proxyv2"].files if f.rsplit("/", 1)[-1] == "envoy"]
    assert envoys and set(envoys) <= placed, (envoys, placed)
    # ztunnel's image takes the file the line pre-places
    if "ztunnel" in defs:
        assert rel.mechanism.ztunnel != "none"
        assert f"{istio}/out/linux_arm64/ztunnel" in defs["ztunnel"].files
        deps = json.loads(show(commit, "istio.deps"))
        assert any(e["name"] == ZTUNNEL_DEPS for e in deps)


@pytest.mark.parametrize("rel", ends(), ids=lambda r: r.version)
def test_the_base_images_resolve_from_the_makefile_as_docker_builder_does(rel: Release) -> None:
    commit = rel.pins[Component.ISTIO].commit
    defaults = imagedefs.make_defaults(show(commit, "Makefile.core.mk"))
    registry = defaults.get("ISTIO_BASE_REGISTRY", "gcr.io/istio-release")  # 1.14-1.16: in the Dockerfiles
    base = f"{registry}/base:{defaults['BASE_VERSION']}"
    dockerfile = show(commit, "pilot/docker/Dockerfile.proxyv2")
    args = {"BASE_DISTRIBUTION": "debug", **defaults}
    named = fromlines.named_images(dockerfile, args)
    assert named[0] == base and len(named) == 2  # debug and distroless; FROM ${BASE_DISTRIBUTION:-debug} is a stage
    rewritten = baseimages.rewrite(dockerfile, {base: "local/base:arm64"}, args)
    assert re.search(r"^FROM local/base:arm64 (as|AS) debug$", rewritten, re.MULTILINE)


def buildable_lines() -> list[str]:
    """Every real line istiobuild builds images for (releases/<line>.toml with docker targets)."""
    from istiobuild import syncimages

    return sorted({r.line for r in release.matrix().values() if syncimages.wanted(r)}, key=lambda v: v.split("."))


@pytest.mark.parametrize("line", buildable_lines())
def test_sync_derives_the_shipped_external_images_byte_for_byte(line: str, tmp_path: Path) -> None:
    """Every `external_images` line of a buildable line is what `invoke sync-releases` writes from the real tree:
    with them removed, the sync gives back the shipped file unchanged."""
    from istiobuild import sync

    shipped = (data_dir("releases") / f"{line}.toml").read_text()
    stripped = "".join(x for x in shipped.splitlines(keepends=True) if not x.startswith("external_images = "))
    (tmp_path / f"{line}.toml").write_text(stripped)
    assert sync.command(MIRRORS, check=False, line=line, directory=tmp_path)
    assert (tmp_path / f"{line}.toml").read_text() == shipped


def test_sync_refuses_external_images_the_real_tree_does_not_name(tmp_path: Path) -> None:
    from istiobuild import sync
    from istiobuild.errors import DataError

    shipped = (data_dir("releases") / "1.22.toml").read_text()
    real = '"gcr.io/istio-release/distroless:master-2024-04-19T19-01-19"'
    forged = shipped.replace(real, '"evil.example/distroless:1"')
    assert forged != shipped
    (tmp_path / "1.22.toml").write_text(forged)
    with pytest.raises(DataError, match="release 1.22.0: 1.22.toml has external_images"):
        sync.command(MIRRORS, check=True, line="1.22", directory=tmp_path)
    assert (tmp_path / "1.22.toml").read_text() == forged


def test_sync_refuses_an_insert_that_would_land_inside_a_multiline_string(tmp_path: Path) -> None:
    """The line is added at the end of a release's table; a table ending in a multi-line string whose last line
    looks like a comment would take it into the string: refused, nothing written."""
    from istiobuild import sync
    from istiobuild.errors import DataError

    shipped = (data_dir("releases") / "1.22.toml").read_text()
    text = "".join(x for x in shipped.splitlines(keepends=True) if not x.startswith("external_images = "))
    text = text.replace(
        'go = "1.22.0"\n\n[release."1.22.1"]', 'go = "1.22.0"\nnote = """a\n# b"""\n\n[release."1.22.1"]', 1
    )
    (tmp_path / "1.22.toml").write_text(text)
    with pytest.raises(DataError, match="adding external_images to release 1.22.0 would change its table"):
        sync.command(MIRRORS, check=False, line="1.22", directory=tmp_path)
    assert (tmp_path / "1.22.toml").read_text() == text

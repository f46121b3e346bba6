"""Every shipped patch series against the real upstream files of every release that claims it.

Needs ISTIOBUILD_UPSTREAM_MIRRORS naming a directory with proxy, envoy and istio git repositories
(fetched copies of istio/proxy, istio/envoy, istio/istio); skipped otherwise (CI has no network).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from istiobuild import release, upstream

MIRRORS = os.environ.get("ISTIOBUILD_UPSTREAM_MIRRORS", "")
REAL = [v for v, r in release.matrix().items() if not r.example and r.buildable]  # with patch series

pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not MIRRORS or not Path(MIRRORS).is_dir(), reason="ISTIOBUILD_UPSTREAM_MIRRORS not set"),
]


@pytest.mark.parametrize("version", REAL)
def test_series_apply_to_real_upstream(version: str) -> None:
    outcomes = upstream.check_release(release.get(version), Path(MIRRORS))
    failed = [f"{o.arch.value} {o.component.value}: {o.detail}" for o in outcomes if not o.ok]
    assert not failed, failed
    assert len(outcomes) == 9  # aarch64 with 4k and 64k pages, x86_64; three components each


@pytest.mark.parametrize("version", REAL)
def test_external_images_are_what_the_real_dockerfiles_name(version: str) -> None:
    """`external_images` equals the FROM lines of the Dockerfiles the base targets (docker.base, from 1.7
    docker.distroless) and every docker target build (tools/istio-docker.mk), at the pin, after the patch series
    of each target arch. Up to 1.13 no FROM line names an istio image that istio_bases leaves out: the classic
    builder would pull `<hub>/distroless:<tag>` for a stage the default variant does not even use."""
    from istiobuild import fromlines, patches
    from istiobuild.arch import Arch
    from istiobuild.release import Component

    rel = release.get(version)
    repo = upstream.mirror_repo(Path(MIRRORS), Component.ISTIO)
    expected = {image.name: image.targets for image in rel.external_images}
    for arch, page in ((Arch.AARCH64, "4k"), (Arch.AARCH64, "64k"), (Arch.X86_64, "4k")):
        series = patches.from_shipped(patches.select(rel, Component.ISTIO, arch, page))
        definitions = rel.mechanism.definitions if rel.mechanism else ""  # 1.14+: tools/docker.yaml
        targets = (*rel.base_targets, *rel.docker_targets)
        named = fromlines.scan(repo, rel.pins[Component.ISTIO].commit, series, targets, definitions, rel.istio_bases)
        assert named == expected, (arch.value, page)
        istio_own = ("docker.io/istio/", "istio/", "gcr.io/istio-release/", rel.base_hub + "/")
        unresolved = [n for n in named if n.startswith(istio_own) and n.endswith(":latest")]  # ${BASE_VERSION}
        assert definitions or not unresolved, named


@pytest.mark.parametrize("version", REAL)
def test_source_date_epoch_is_the_istio_commit_time(version: str) -> None:
    """SOURCE_DATE_EPOCH (every timestamp a build controls) is the pinned istio commit's committer time."""
    import subprocess

    from istiobuild.release import Component

    rel = release.get(version)
    repo = upstream.mirror_repo(Path(MIRRORS), Component.ISTIO)
    commit = rel.pins[Component.ISTIO].commit
    found = subprocess.run(
        ["git", "-C", str(repo), "show", "-s", "--format=%ct", commit, "--"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == str(rel.source_date_epoch)


def test_sync_check_finds_the_committed_files_complete(capsys: pytest.CaptureFixture[str]) -> None:
    """`invoke sync-releases --check` against the mirrors: every GA tag is pinned, nothing would change."""
    from istiobuild import sync

    assert sync.command(MIRRORS, check=True)
    out, err = capsys.readouterr()
    assert out == "", out
    print(err.strip().splitlines()[-1])


def test_every_pin_is_what_the_mirrors_say() -> None:
    """Every release 1.4.0 .. newest (buildable or pinned): its pins, source_date_epoch, bazel and go re-derived."""
    from istiobuild import sync, upstreamfacts

    mirrors = upstreamfacts.open_mirrors(MIRRORS)
    known = {v: r for v, r in release.matrix().items() if not r.example}
    tags = upstreamfacts.ga_tags(mirrors.repos[release.Component.ISTIO])
    assert list(known) == list(tags)  # every GA tag 1.4.0 .. newest, in order, and nothing else
    wrong = {}
    for facts in upstreamfacts.read_facts(mirrors, list(known)):
        assert all(not m.required for m in facts.missing), (facts.version, facts.missing)
        wrong[facts.version] = sync.differences(known[facts.version], facts)
    confirmed = sum(not w for w in wrong.values())
    print(f"{confirmed} of {len(known)} releases confirmed against the mirrors")
    assert confirmed == len(known), {v: w for v, w in wrong.items() if w}


PINNED_WITH_SERIES = [
    v for v, r in release.matrix().items() if not r.example and not r.buildable and any(r.series.values())
]


@pytest.mark.parametrize("version", PINNED_WITH_SERIES)
def test_series_of_pinned_lines_apply_where_the_mirrors_hold_the_pins(version: str) -> None:
    """1.9-1.13 (and 1.8.5/1.8.6) carry their series while the line waits for the images stage: every series
    applies at every pin the mirrors hold; a pin no mirror holds (most of these envoys are envoyproxy/envoy's) is
    counted, not claimed."""
    outcomes = upstream.check_release(release.get(version), Path(MIRRORS))
    absent = [o for o in outcomes if not o.ok and "is not in" in o.detail]
    failed = [f"{o.arch.value} {o.component.value}: {o.detail}" for o in outcomes if not o.ok and o not in absent]
    assert not failed, failed
    assert all(o.component.value == "envoy" for o in absent)
    print(f"{version}: {len(outcomes) - len(absent)} of {len(outcomes)} checked, {len(absent)} pins in no mirror")

"""Pinned checkouts with real git against the miniature upstream repositories."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest

from istiobuild import release, sources
from istiobuild.errors import SourceError
from istiobuild.release import Component

EXAMPLE = "example"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def checkout_all(settings, rel=None, force=False, notes=None):  # type: ignore[no-untyped-def]
    rel = rel or release.get(EXAMPLE)
    seen = notes if notes is not None else []
    return [sources.checkout(settings, s, force=force, note=seen.append) for s in sources.sources(rel, settings)]


def test_pinned_siblings(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mirror=str(example_upstream))
    results = checkout_all(settings)
    rel = release.get(EXAMPLE)
    root = settings.workdir / EXAMPLE
    assert [r.path for r in results] == [root / "proxy", root / "envoy", root / "istio"]
    for r in results:
        assert r.action == "created"
        assert git(r.path, "rev-parse", "HEAD") == rel.pins[r.component].commit
        # the pin is not the branch tip: fetching by SHA really happened
        assert git(example_upstream / r.component.value, "rev-parse", "HEAD") != r.commit
        assert git(r.path, "status", "--porcelain") == ""
        assert git(r.path, "remote", "get-url", "origin") == str(example_upstream / r.component.value)


def test_second_checkout_costs_almost_nothing(settings_for, upstream_copy: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cache = tmp_path / "cache"
    first = settings_for(mirror=str(upstream_copy), cache_dir=str(cache), workdir=str(tmp_path / "a"))
    checkout_all(first)
    shutil.rmtree(upstream_copy)  # upstream gone: the cache must be enough
    notes: list[str] = []
    second = settings_for(mirror=str(upstream_copy), cache_dir=str(cache), workdir=str(tmp_path / "b"))
    results = checkout_all(second, notes=notes)
    assert all("already in the cache" in n for n in notes if "fetching" in n or "cache" in n)
    assert not any("fetching" in n for n in notes)
    for r in results:
        # objects are borrowed from the cache, not copied
        packs = list((r.path / ".git" / "objects" / "pack").glob("*.pack"))
        assert packs == []
        assert (r.path / ".git" / "objects" / "info" / "alternates").read_text().strip().startswith(str(cache))
    # and a rerun in place does nothing
    again = checkout_all(second)
    assert {r.action for r in again} == {"unchanged"}


def test_moved_tag_is_an_error(settings_for, upstream_copy: Path) -> None:  # type: ignore[no-untyped-def]
    proxy = upstream_copy / "proxy"
    git(proxy, "-c", "user.name=t", "-c", "user.email=t@t", "tag", "-f", "-a", "-m", "moved", "0.1.0", "HEAD")
    settings = settings_for(mirror=str(upstream_copy))
    with pytest.raises(
        SourceError, match=r"tag 0\.1\.0 in .*proxy points to [0-9a-f]{12}, but the release pins"
    ) as err:
        checkout_all(settings)
    assert "moved upstream" in err.value.hint


def test_dirty_tree_is_never_touched_without_force(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mirror=str(example_upstream))
    checkout_all(settings)
    istio = settings.workdir / EXAMPLE / "istio"
    makefile = istio / "Makefile"
    makefile.write_text(makefile.read_text() + "# my edit\n")
    with pytest.raises(SourceError, match="has local changes or untracked files .*Makefile") as err:
        checkout_all(settings)
    assert "--force" in err.value.hint
    assert makefile.read_text().endswith("# my edit\n")


def test_untracked_files_and_force_saves_them(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mirror=str(example_upstream))
    checkout_all(settings)
    envoy = settings.workdir / EXAMPLE / "envoy"
    (envoy / "notes.txt").write_text("mine\n")
    with pytest.raises(SourceError, match="notes.txt"):
        checkout_all(settings)
    assert (envoy / "notes.txt").read_text() == "mine\n"
    notes: list[str] = []
    results = checkout_all(settings, force=True, notes=notes)
    stash = next(r.stash for r in results if r.component is Component.ENVOY)
    assert stash.startswith("istiobuild: saved before checkout")
    assert stash in git(envoy, "stash", "list")
    assert any("git stash" in n for n in notes)
    # nothing is lost: the file comes back from the stash
    git(envoy, "stash", "pop")
    assert (envoy / "notes.txt").read_text() == "mine\n"


def test_url_override_beats_mirror(settings_for, example_upstream: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    other = tmp_path / "elsewhere" / "envoy.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(example_upstream / "envoy"), str(other)], check=True)
    settings = settings_for(mirror=str(example_upstream), repos={"envoy": str(other)})
    rel = release.get(EXAMPLE)
    assert sources.resolve_url(rel, Component.ENVOY, settings) == (str(other), "repos.envoy")
    assert sources.resolve_url(rel, Component.PROXY, settings) == (str(example_upstream / "proxy"), "mirror")
    results = checkout_all(settings)
    envoy = next(r for r in results if r.component is Component.ENVOY)
    assert git(envoy.path, "remote", "get-url", "origin") == str(other)


def test_mirror_url_forms(settings_for) -> None:  # type: ignore[no-untyped-def]
    rel = release.get("1.5.0")
    settings = settings_for(mirror="https://git.example.org/istio/")
    assert sources.resolve_url(rel, Component.ENVOY, settings) == ("https://git.example.org/istio/envoy", "mirror")
    assert sources.resolve_url(rel, Component.PROXY, settings_for()) == ("https://github.com/istio/proxy", "release")


def test_unreachable_mirror(settings_for, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mirror=str(tmp_path / "no-such-mirror"))
    with pytest.raises(SourceError, match="cannot reach .*no-such-mirror/proxy") as err:
        checkout_all(settings)
    assert "mirror" in err.value.hint
    assert not (settings.workdir / EXAMPLE / "proxy").exists()


def test_pinned_sha_missing_from_remote(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    rel = release.get(EXAMPLE)
    pins = dict(rel.pins)
    pins[Component.ENVOY] = dataclasses.replace(pins[Component.ENVOY], commit="0123456789" * 4)
    broken = dataclasses.replace(rel, pins=pins)
    settings = settings_for(mirror=str(example_upstream))
    with pytest.raises(SourceError, match="pinned commit 0123456789.* is not in .*envoy"):
        checkout_all(settings, rel=broken)


def test_caller_git_variables_do_not_leak(settings_for, example_upstream: Path, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    monkeypatch.setenv("GIT_DIR", str(bogus))
    monkeypatch.setenv("GIT_WORK_TREE", str(bogus))
    monkeypatch.setenv("GIT_INDEX_FILE", str(bogus / "index"))
    settings = settings_for(mirror=str(example_upstream))
    results = checkout_all(settings)
    assert all(r.action == "created" for r in results)
    assert list(bogus.iterdir()) == []


def test_existing_directory_that_is_not_a_checkout(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mirror=str(example_upstream))
    proxy = settings.workdir / EXAMPLE / "proxy"
    proxy.mkdir(parents=True)
    (proxy / "precious.txt").write_text("keep")
    with pytest.raises(SourceError, match="exists and is not a git checkout"):
        checkout_all(settings)
    assert (proxy / "precious.txt").read_text() == "keep"


def test_switching_commits_reverts_our_patches_first(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    from istiobuild import patches
    from istiobuild.arch import Arch

    settings = settings_for(mirror=str(example_upstream))
    rel = release.get(EXAMPLE)
    checkout_all(settings)
    envoy = settings.workdir / EXAMPLE / "envoy"
    patches.apply(envoy, patches.from_shipped(patches.select(rel, Component.ENVOY, Arch.AARCH64)))
    assert git(envoy, "status", "--porcelain")
    tip = git(example_upstream / "envoy", "rev-parse", "HEAD")
    pins = dict(rel.pins)
    pins[Component.ENVOY] = dataclasses.replace(pins[Component.ENVOY], commit=tip)
    results = checkout_all(settings, rel=dataclasses.replace(rel, pins=pins))
    assert next(r for r in results if r.component is Component.ENVOY).action == "switched"
    assert git(envoy, "rev-parse", "HEAD") == tip
    assert git(envoy, "status", "--porcelain") == ""

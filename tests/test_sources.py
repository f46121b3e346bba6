"""Pinned checkouts with real git against the miniature upstream repositories."""

from __future__ import annotations

import dataclasses
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from istiobuild import git as gitmod
from istiobuild import patches, release, run, sources
from istiobuild.arch import Arch
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
    (ref,) = next(r.saved for r in results if r.component is Component.ENVOY)
    assert ref.startswith("refs/istiobuild/saved/")
    assert any(ref in n and f"git -C {envoy} diff {ref}^ {ref}" in n for n in notes)
    assert not (envoy / "notes.txt").exists() and git(envoy, "status", "--porcelain") == ""
    # nothing is lost: the file comes back from the saved ref
    subprocess.run(f"git -C {envoy} diff --binary {ref}^ {ref} | git -C {envoy} apply", shell=True, check=True)
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


# ---------------------------------------------------------------------------------------------
# --force keeps everything, and only what the user made


def commit_on_head(repo: Path, name: str, text: str, subject: str) -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "-c", "user.name=u", "-c", "user.email=u@u", "commit", "-q", "-m", subject)
    return git(repo, "rev-parse", "HEAD")


def test_a_commit_on_the_detached_head_is_refused_then_kept(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mirror=str(example_upstream))
    checkout_all(settings)
    proxy = settings.workdir / EXAMPLE / "proxy"
    mine = commit_on_head(proxy, "MINE", "work\n", "my precious work")
    with pytest.raises(SourceError) as err:
        checkout_all(settings)
    assert err.value.message == f"{proxy}: HEAD is at {mine[:12]} my precious work, a commit istiobuild did not make"
    assert git(proxy, "rev-parse", "HEAD") == mine
    notes: list[str] = []
    results = checkout_all(settings, force=True, notes=notes)
    result = next(r for r in results if r.component is Component.PROXY)
    (ref,) = result.saved
    assert result.action == "switched" and git(proxy, "rev-parse", "HEAD") == result.commit
    assert git(proxy, "rev-parse", ref) == mine
    assert any(f"git -C {proxy} checkout {ref}" in n for n in notes)
    assert {r.action for r in checkout_all(settings)} == {"unchanged"}


def test_force_saves_only_the_users_changes_not_our_patches(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(mirror=str(example_upstream))
    rel = release.get(EXAMPLE)
    checkout_all(settings)
    envoy = settings.workdir / EXAMPLE / "envoy"
    wanted = patches.from_shipped(patches.select(rel, Component.ENVOY, Arch.AARCH64))
    state, _ = patches.apply(envoy, wanted)
    patched = envoy / "bazel" / "external" / "wee8.genrule_cmd"
    ours = patched.read_text()
    patched.write_text(ours + "# my edit of a patched file\n")
    (envoy / "README.md").write_text("my readme\n")
    (envoy / "untracked").mkdir()
    (envoy / "untracked" / "notes.txt").write_text("mine\n")
    (envoy / ".git" / "info" / "exclude").write_text("ignored.out\n")
    (envoy / "ignored.out").write_text("build output\n")
    results = checkout_all(settings, force=True)
    (ref,) = next(r.saved for r in results if r.component is Component.ENVOY)
    # the tree is back at the pinned commit: no patch, no edit, no untracked file; ignored files stay
    assert git(envoy, "status", "--porcelain") == "" and patches.read_state(envoy) is None
    assert not (envoy / "untracked").exists() and (envoy / "ignored.out").read_text() == "build output\n"
    # the saved commit holds exactly the user's changes on top of our patched tree
    assert git(envoy, "rev-parse", f"{ref}^^{{tree}}") == state.tree
    assert git(envoy, "rev-parse", f"{ref}^^") == git(envoy, "rev-parse", "HEAD")
    diff = git(envoy, "diff", f"{ref}^", ref)
    assert "+# my edit of a patched file" in diff and "+my readme" in diff and "+mine" in diff
    assert git(envoy, "diff", "--name-only", f"{ref}^", ref).splitlines() == [
        "README.md", "bazel/external/wee8.genrule_cmd", "untracked/notes.txt"
    ]  # fmt: skip
    assert "ignored.out" not in diff
    # and it restores them on top of our patches
    patches.apply(envoy, wanted)
    subprocess.run(f"git -C {envoy} diff --binary {ref}^ {ref} | git -C {envoy} apply", shell=True, check=True)
    assert patched.read_text() == ours + "# my edit of a patched file\n"
    assert (envoy / "untracked" / "notes.txt").read_text() == "mine\n"


# ---------------------------------------------------------------------------------------------
# URLs: credentials never stored or shown, hostile URLs inert


def record_argv(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    seen: list[tuple[str, ...]] = []

    def recording(argv, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(tuple(argv))
        for item in argv:  # while git runs, the credential file is private
            if item.startswith("credential.helper=store --file="):
                store = Path(item.split("=", 2)[2].strip("'"))
                assert stat.S_IMODE(store.stat().st_mode) == 0o600
                assert stat.S_IMODE(store.parent.stat().st_mode) == 0o700
        return run.run(argv, **kwargs)

    monkeypatch.setattr(gitmod, "run", recording)
    return seen


def test_credentials_in_the_url_are_never_stored(settings_for, example_upstream: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen = record_argv(monkeypatch)
    url = f"file://alice:s3cret@{example_upstream / 'envoy'}"
    settings = settings_for(mirror=str(example_upstream), repos={"envoy": url})
    rel = release.get(EXAMPLE)
    src = next(s for s in sources.sources(rel, settings) if s.component is Component.ENVOY)
    notes: list[str] = []
    result = sources.checkout(settings, src, force=False, note=notes.append)
    assert result.action == "created"
    assert git(result.path, "remote", "get-url", "origin") == f"file://{example_upstream / 'envoy'}"
    assert seen and not any("s3cret" in item or "alice" in item for argv in seen for item in argv)
    assert any("credential.helper=store --file=" in item for argv in seen for item in argv)
    assert not any("s3cret" in n for n in notes)
    for root in (settings.workdir, settings.cache):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert b"s3cret" not in path.read_bytes(), path
    assert not (settings.cache / "secrets" / "git-credentials").exists()
    # a checkout an older istiobuild made with the credentials in its remote is cleaned up
    git(result.path, "remote", "set-url", "origin", url)
    assert sources.checkout(settings, src, force=False, note=notes.append).action == "unchanged"
    assert "s3cret" not in (result.path / ".git" / "config").read_text()


def test_credentials_are_redacted_from_errors(settings_for, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    seen = record_argv(monkeypatch)
    settings = settings_for(repos={"envoy": "https://alice:s3cret@127.0.0.1:9/istio/envoy"})
    rel = release.get("1.5.0")
    src = next(s for s in sources.sources(rel, settings) if s.component is Component.ENVOY)
    with pytest.raises(SourceError) as err:
        sources.fetch(settings, src, lambda _: None)
    rendered = err.value.render()
    assert "https://***@127.0.0.1:9/istio/envoy" in rendered and "s3cret" not in rendered
    assert not any("s3cret" in item for argv in seen for item in argv)
    assert not (settings.cache / "secrets" / "git-credentials").exists()


@pytest.mark.parametrize("evil", ["--upload-pack=touch {pwned}", "ext::sh -c touch% {pwned}"])
def test_hostile_urls_run_nothing(settings_for, tmp_path: Path, monkeypatch, evil: str) -> None:  # type: ignore[no-untyped-def]
    seen = record_argv(monkeypatch)
    pwned = tmp_path / "pwned"
    settings = settings_for()
    rel = release.get(EXAMPLE)
    src = next(s for s in sources.sources(rel, settings) if s.component is Component.PROXY)
    src = dataclasses.replace(src, url=evil.format(pwned=pwned))
    with pytest.raises(SourceError) as err:
        sources.checkout(settings, src, force=False, note=lambda _: None)
    assert "\n" not in err.value.message
    assert not pwned.exists()
    for argv in seen:
        assert "protocol.allow=never" in argv
        if src.url in argv:
            assert argv.index("--") < argv.index(src.url)


def test_a_remote_that_answers_but_cannot_serve(settings_for, upstream_copy: Path) -> None:  # type: ignore[no-untyped-def]
    envoy = upstream_copy / "envoy"
    listing = git(envoy, "cat-file", "--batch-all-objects", "--batch-check=%(objecttype) %(objectname)")
    for line in listing.splitlines():
        kind, sha = line.split()
        if kind == "blob":
            os.unlink(envoy / ".git" / "objects" / sha[:2] / sha[2:])
    settings = settings_for(mirror=str(upstream_copy))
    with pytest.raises(SourceError) as err:
        checkout_all(settings)
    pin = release.get(EXAMPLE).pins[Component.ENVOY].commit
    assert err.value.message.startswith(f"{envoy} has no commit {pin[:12]} / cannot serve its objects: ")
    assert "cannot reach" not in err.value.message

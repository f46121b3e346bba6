"""Pinned checkouts of proxy, envoy and istio as siblings, through a local object cache."""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Callable
from pathlib import Path

from istiobuild.config import Settings
from istiobuild.errors import SourceError
from istiobuild.git import changed_paths, git, has_commit, head, out
from istiobuild.patches import pristine_or_ours, revert_recorded
from istiobuild.release import Component, Pin, Release

EXAMPLE_SCHEME = "example:"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Source:
    """Where one component comes from and where it is checked out."""

    component: Component
    url: str
    via: str  # what decided the URL: "release", "mirror", "repos.<component>"
    pin: Pin
    path: Path


def resolve_url(release: Release, component: Component, settings: Settings) -> tuple[str, str]:
    """The URL a component is fetched from: repos.<component> > mirror > the release's own."""
    override = settings.repos.get(component.value)
    if override:
        return override, f"repos.{component.value}"
    if settings.mirror:
        return _mirror_entry(settings.mirror, component.value), "mirror"
    url = release.urls[component]
    if url.startswith(EXAMPLE_SCHEME):
        return str(example_upstream(settings) / url[len(EXAMPLE_SCHEME) :]), "example"
    return url, "release"


def _mirror_entry(mirror: str, name: str) -> str:
    if "://" in mirror or re.match(r"^[\w.-]+@[\w.-]+:", mirror):
        return f"{mirror.rstrip('/')}/{name}"
    base = Path(mirror).expanduser()
    for candidate in (base / name, base / f"{name}.git"):
        if candidate.exists():
            return str(candidate.resolve())
    return str((base / name).resolve())


def example_upstream(settings: Settings) -> Path:
    """Where the miniature example repositories are generated."""
    return settings.workdir / "example-upstream"


def release_dir(settings: Settings, release: Release) -> Path:
    return settings.workdir / release.version


def sources(release: Release, settings: Settings) -> tuple[Source, ...]:
    root = release_dir(settings, release)
    result = []
    for component in Component:
        url, via = resolve_url(release, component, settings)
        result.append(
            Source(component=component, url=url, via=via, pin=release.pins[component], path=root / component.value)
        )
    return tuple(result)


def cache_repo(settings: Settings, component: Component) -> Path:
    return settings.cache / "git" / f"{component.value}.git"


# ---------------------------------------------------------------------------------------------
# Fetching into the cache


def _remote_error(url: str, result_tail: tuple[str, ...]) -> SourceError:
    reason = next((ln for ln in result_tail if ln.startswith(("fatal:", "error:"))), "no answer")
    return SourceError(
        f"cannot reach {url}: {reason.removeprefix('fatal: ')}",
        hint="check the URL, the `mirror` / `repos` settings (ISTIOBUILD_MIRROR) and your network",
    )


def verify_tag(url: str, tag: str, commit: str) -> None:
    """The tag on the remote must still point at the pinned commit."""
    result = git(None, "ls-remote", url, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}", check=False)
    if result.returncode != 0:
        raise _remote_error(url, result.tail)
    refs: dict[str, str] = {}
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        refs[ref] = sha
    peeled = refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")
    if peeled is None:
        raise SourceError(
            f"tag {tag} does not exist in {url}",
            hint="the mirror may be incomplete or the release data wrong; check `invoke releases`",
        )
    if peeled != commit:
        raise SourceError(
            f"tag {tag} in {url} points to {peeled[:12]}, but the release pins {commit[:12]}",
            hint="the tag moved upstream: istiobuild builds only the pinned commit. If the new commit "
            "is intended, update the release data in releases/ after reviewing it",
        )


def fetch(settings: Settings, source: Source, note: Callable[[str], None]) -> Path:
    """Make sure the cache holds the pinned commit; fetch it (shallow, then full) if not."""
    cache = cache_repo(settings, source.component)
    if not (cache / "HEAD").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        git(cache, "init", "--quiet", "--bare")
    sha = source.pin.commit
    pin_ref = f"refs/istiobuild/pins/{sha}"
    if has_commit(cache, sha):
        note(f"{source.component}: {sha[:12]} already in the cache")
        return cache
    if source.pin.tag:
        verify_tag(source.url, source.pin.tag, sha)
    note(f"{source.component}: fetching {sha[:12]} from {source.url}")
    shallow = git(cache, "fetch", "--quiet", "--no-tags", "--depth=1", source.url, f"+{sha}:{pin_ref}", check=False)
    if shallow.returncode != 0 or not has_commit(cache, sha):
        probe = git(None, "ls-remote", source.url, "HEAD", check=False)
        if probe.returncode != 0:
            raise _remote_error(source.url, probe.tail)
        note(f"{source.component}: the remote refused a fetch by SHA; fetching all branches and tags")
        full = git(
            cache,
            "fetch",
            "--quiet",
            "--no-tags",
            source.url,
            "+refs/heads/*:refs/istiobuild/heads/*",
            "+refs/tags/*:refs/istiobuild/tags/*",
            check=False,
        )
        if full.returncode != 0:
            raise _remote_error(source.url, full.tail)
        if not has_commit(cache, sha):
            raise SourceError(
                f"pinned commit {sha} ({source.component}) is not in {source.url}",
                hint="the mirror may be stale or the pin wrong; update the mirror or fix releases/",
            )
        git(cache, "update-ref", pin_ref, sha)
    return cache


# ---------------------------------------------------------------------------------------------
# Checking out


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckoutResult:
    component: Component
    path: Path
    commit: str
    action: str  # "created", "switched", "unchanged"
    stash: str = ""  # message of the stash holding the user's changes (with --force)


def _link_cache(repo: Path, cache: Path) -> None:
    """Borrow the cache's objects (no copy) and its shallow boundary."""
    gitdir = Path(out(repo, "rev-parse", "--absolute-git-dir"))
    alternates = gitdir / "objects" / "info" / "alternates"
    objects = str((cache / "objects").resolve())
    existing = alternates.read_text().split() if alternates.is_file() else []
    if objects not in existing:
        alternates.parent.mkdir(parents=True, exist_ok=True)
        alternates.write_text("\n".join([*existing, objects]) + "\n")
    shallow_src = cache / "shallow"
    if shallow_src.is_file():
        mine = gitdir / "shallow"
        lines = set(mine.read_text().split()) if mine.is_file() else set()
        lines |= set(shallow_src.read_text().split())
        mine.write_text("".join(f"{x}\n" for x in sorted(lines)))


def checkout(settings: Settings, source: Source, *, force: bool, note: Callable[[str], None]) -> CheckoutResult:
    """Put `source.path` at the pinned commit. Never discards anything the user wrote."""
    dest = source.path
    sha = source.pin.commit
    if dest.exists() and not (dest / ".git").exists():
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        else:
            raise SourceError(
                f"{dest} exists and is not a git checkout",
                hint="move it away or choose another workdir (--workdir / ISTIOBUILD_WORKDIR); "
                "istiobuild never deletes files it did not create",
            )
    cache = fetch(settings, source, note)
    if not dest.exists():
        dest.mkdir(parents=True)
        git(dest, "init", "--quiet")
        git(dest, "remote", "add", "origin", source.url)
        _link_cache(dest, cache)
        git(dest, "update-ref", "refs/istiobuild/pinned", sha)
        git(dest, "checkout", "--quiet", "--detach", sha)
        return CheckoutResult(component=source.component, path=dest, commit=sha, action="created")

    _link_cache(dest, cache)
    clean, state = pristine_or_ours(dest)
    current = head(dest) if git(dest, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0 else ""
    stash = ""
    if not clean:
        paths = ", ".join(changed_paths(dest))
        if not force:
            raise SourceError(
                f"{dest} has local changes or untracked files ({paths})",
                hint="commit or stash them, or rerun with --force: istiobuild then saves them "
                "with `git stash` (nothing is deleted) before checking out",
            )
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        stash = f"istiobuild: saved before checkout of {sha[:12]} at {stamp}"
        git(dest, "stash", "push", "--include-untracked", "--quiet", "-m", stash)
        note(f"{source.component}: your changes are saved as a git stash: {stash!r} (git stash list)")
        state = None
    if current == sha:
        return CheckoutResult(component=source.component, path=dest, commit=sha, action="unchanged", stash=stash)
    if state is not None and state.patches:
        # Our own patches on the old commit: revert them before switching.
        revert_recorded(dest, state)
    git(dest, "update-ref", "refs/istiobuild/pinned", sha)
    git(dest, "checkout", "--quiet", "--detach", sha)
    return CheckoutResult(component=source.component, path=dest, commit=sha, action="switched", stash=stash)

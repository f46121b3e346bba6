"""Pinned checkouts of proxy, envoy and istio as siblings, through a local object cache."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import re
from collections.abc import Callable
from pathlib import Path

from istiobuild import patches
from istiobuild.cache import fetch_lock
from istiobuild.config import Settings
from istiobuild.errors import PatchError, SourceError
from istiobuild.fsutil import write_atomic
from istiobuild.git import (
    IDENTITY,
    Remote,
    changed_paths,
    git,
    has_commit,
    out,
    remote,
    split_url,
    worktree_tree,
)
from istiobuild.release import Component, Pin, Release
from istiobuild.run import Result
from istiobuild.secrets import redact_url

EXAMPLE_SCHEME = "example:"
SAVED_REFS = "refs/istiobuild/saved"
_SHA = re.compile(r"[0-9a-f]{40}")


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


def _secrets_dir(settings: Settings) -> Path:
    """The workdir's own (Layout.secrets): the cache is shared, and its credential file must not be."""
    return settings.workdir / "cache" / "secrets"


def _git_line(tail: tuple[str, ...]) -> str:
    line = next((ln for ln in tail if ln.startswith(("fatal:", "error:"))), "")
    return line.removeprefix("fatal: ").removeprefix("error: ")


def _remote_error(url: str, result_tail: tuple[str, ...], *, reachable: bool = False, sha: str = "") -> SourceError:
    """The remote did not answer (reachable=False), or answered but could not serve `sha`."""
    shown, reason = redact_url(url), _git_line(result_tail)
    if reachable:
        return SourceError(
            f"{shown} has no commit {sha[:12]} / cannot serve its objects: {reason or 'no reason given'}",
            hint="the remote answers (ls-remote works) but the fetch failed: the mirror may be incomplete "
            "or damaged; repair or update it, or point `repos.<component>` elsewhere",
        )
    return SourceError(
        f"cannot reach {shown}: {reason or 'no answer'}",
        hint="check the URL, the `mirror` / `repos` settings (ISTIOBUILD_MIRROR) and your network",
    )


def _ls_remote(rem: Remote, *refs: str) -> Result:
    return git(None, "ls-remote", "--", rem.url, *refs, config=rem.config, secrets=rem.secrets, check=False)


def verify_tag(url: str, tag: str, commit: str, rem: Remote | None = None) -> None:
    """The tag on the remote must still point at the pinned commit."""
    result = _ls_remote(rem or Remote(url=url), f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}")
    if result.returncode != 0:
        raise _remote_error(url, result.tail)
    refs: dict[str, str] = {}
    for line in result.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        refs[ref] = sha
    peeled = refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")
    shown = redact_url(url)
    if peeled is None:
        raise SourceError(
            f"tag {tag} does not exist in {shown}",
            hint="the mirror may be incomplete or the release data wrong; check `invoke releases`",
        )
    if peeled != commit:
        raise SourceError(
            f"tag {tag} in {shown} points to {peeled[:12]}, but the release pins {commit[:12]}",
            hint="the tag moved upstream: istiobuild builds only the pinned commit. If the new commit "
            "is intended, update the release data in releases/ after reviewing it",
        )


def _git_fetch(cache: Path, rem: Remote, *refspecs: str, depth: bool = False) -> Result:
    options = ["--quiet", "--no-tags", *(["--depth=1"] if depth else [])]
    return git(cache, "fetch", *options, "--", rem.url, *refspecs, config=rem.config, secrets=rem.secrets, check=False)


def _fetch_pin(cache: Path, rem: Remote, source: Source, note: Callable[[str], None]) -> None:
    sha = source.pin.commit
    pin_ref = f"refs/istiobuild/pins/{sha}"
    shallow = _git_fetch(cache, rem, f"+{sha}:{pin_ref}", depth=True)
    if shallow.returncode == 0 and has_commit(cache, sha):
        return
    probe = _ls_remote(rem, "HEAD")
    if probe.returncode != 0:
        raise _remote_error(source.url, probe.tail)
    note(f"{source.component}: the remote refused a fetch by SHA; fetching all branches and tags")
    full = _git_fetch(cache, rem, "+refs/heads/*:refs/istiobuild/heads/*", "+refs/tags/*:refs/istiobuild/tags/*")
    if full.returncode != 0:
        raise _remote_error(source.url, full.tail, reachable=True, sha=sha)
    if not has_commit(cache, sha):
        raise SourceError(
            f"pinned commit {sha} ({source.component}) is not in {redact_url(source.url)}",
            hint="the mirror may be stale or the pin wrong; update the mirror or fix releases/",
        )
    git(cache, "update-ref", pin_ref, sha)


def _require_sha(source: Source) -> None:
    if not _SHA.fullmatch(source.pin.commit):
        raise SourceError(f"{source.component}: pinned commit {source.pin.commit!r} is not a full 40-hex SHA")


def fetch(settings: Settings, source: Source, note: Callable[[str], None]) -> Path:
    """Make sure the cache holds the pinned commit; fetch it (shallow, then full) if not.

    Credentials in the URL reach git only through a private credential-store file, for the
    duration of the fetch; the URL git sees, stores and prints has none.
    """
    _require_sha(source)
    cache = cache_repo(settings, source.component)
    with fetch_lock(cache, lambda text: note(f"{source.component}: {text}")):  # the cache is shared
        return _fetch_locked(settings, source, cache, note)


def _fetch_locked(settings: Settings, source: Source, cache: Path, note: Callable[[str], None]) -> Path:
    if not (cache / "HEAD").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        git(cache, "init", "--quiet", "--bare")
    sha = source.pin.commit
    if has_commit(cache, sha):
        note(f"{source.component}: {sha[:12]} already in the cache")
        return cache
    with remote(source.url, _secrets_dir(settings)) as rem:
        if source.pin.tag:
            verify_tag(source.url, source.pin.tag, sha, rem)
        note(f"{source.component}: fetching {sha[:12]} from {redact_url(source.url)}")
        _fetch_pin(cache, rem, source, note)
    return cache


# ---------------------------------------------------------------------------------------------
# Checking out


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckoutResult:
    component: Component
    path: Path
    commit: str
    action: str  # "created", "switched", "unchanged"
    saved: tuple[str, ...] = ()  # refs/istiobuild/saved/... holding what --force moved out of the way


def _link_cache(repo: Path, cache: Path) -> None:
    """Borrow the cache's objects (no copy) and its shallow boundary."""
    gitdir = Path(out(repo, "rev-parse", "--absolute-git-dir"))
    alternates = gitdir / "objects" / "info" / "alternates"
    objects = str((cache / "objects").resolve())
    existing = alternates.read_text().splitlines() if alternates.is_file() else []
    if objects not in existing:
        alternates.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(alternates, "\n".join([*existing, objects]) + "\n")
    shallow_src = cache / "shallow"
    if shallow_src.is_file():
        mine = gitdir / "shallow"
        lines = set(mine.read_text().split()) if mine.is_file() else set()
        merged = lines | set(shallow_src.read_text().split())
        if merged != lines:
            write_atomic(mine, "".join(f"{x}\n" for x in sorted(merged)))


def _ensure_origin(repo: Path, url: str) -> None:
    """`origin` exists and its URL carries no credentials (older checkouts may have stored them)."""
    current = git(repo, "remote", "get-url", "origin", check=False)
    if current.returncode != 0:
        git(repo, "remote", "add", "--", "origin", url)
    elif split_url(current.stdout.strip()).public != current.stdout.strip():
        git(repo, "remote", "set-url", "--", "origin", url)


def _head_or_empty(repo: Path) -> str:
    return out(repo, "rev-parse", "-q", "--verify", "HEAD^{commit}", check=False)


def _foreign_head(repo: Path, sha: str, current: str) -> bool:
    """HEAD is a commit istiobuild did not put there (neither the pin nor the previous pin)."""
    if not current or current == sha:
        return False
    return current != out(repo, "rev-parse", "-q", "--verify", "refs/istiobuild/pinned^{commit}", check=False)


def _free_ref(repo: Path) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        ref = f"{SAVED_REFS}/{stamp}" + (f"-{n}" if n > 1 else "")
        if git(repo, "rev-parse", "-q", "--verify", ref, check=False).returncode != 0:
            return ref
    raise SourceError(f"{repo}: too many refs named {SAVED_REFS}/{stamp}")


def _store(repo: Path, ref: str, commit: str) -> str:
    git(repo, "update-ref", "--no-deref", ref, commit, "0" * 40)  # never overwrites an existing ref
    return ref


def _save_head(repo: Path, current: str, component: Component, note: Callable[[str], None]) -> str:
    subject = out(repo, "log", "-1", "--format=%s", current)
    ref = _store(repo, _free_ref(repo), current)
    note(
        f"{component}: HEAD was at {current[:12]} {subject}, a commit istiobuild did not make; kept as {ref} "
        f"(get it back: git -C {repo} checkout {ref})"
    )
    return ref


def _our_base(repo: Path, current: str) -> tuple[str, str]:
    """The commit the user's changes are measured against: HEAD plus our recorded patches when the
    kept copies reproduce them, else HEAD. Returns (commit, description)."""
    state = patches.read_state(repo)
    if state is None or not state.patches or state.commit != current or patches.read_journal(repo) is not None:
        return current, "HEAD"
    tree = patches.materialize(repo, state)
    if tree is None:
        return current, "HEAD (istiobuild's recorded patches could not be reproduced)"
    names = "".join(f"\n  {name}" for name, _ in state.patches)
    message = f"istiobuild: {current[:12]} + istiobuild's patches\n{names}\n"
    return out(repo, "commit-tree", tree, "-p", current, "-F", "-", stdin=message, env=IDENTITY), "HEAD + our patches"


def _save_worktree(repo: Path, current: str, component: Component, note: Callable[[str], None]) -> str:
    """A commit holding exactly the user's changes (tracked + untracked, not ignored) on top of
    the tree istiobuild made, at refs/istiobuild/saved/<UTC time>."""
    parent, base = _our_base(repo, current)
    tree = worktree_tree(repo, keep_objects=True)
    ref = _free_ref(repo)
    show = f"git -C {repo} diff {ref}^ {ref}"
    restore = f"git -C {repo} diff --binary {ref}^ {ref} | git -C {repo} apply"
    message = (
        f"istiobuild: your changes in {repo}, saved by checkout --force\n\n"
        f"The parent is {base}; this commit adds exactly your changes (tracked and untracked\n"
        f"files, not ignored ones).\n  show them:    {show}\n  restore them: {restore}\n"
    )
    commit = out(repo, "commit-tree", tree, "-p", parent, "-F", "-", stdin=message, env=IDENTITY)
    _store(repo, ref, commit)
    note(f"{component}: your changes are saved as {ref}; `{show}` shows exactly them, `{restore}` restores them")
    return ref


def _refuse(repo: Path, current: str, foreign: bool, clean: bool, journal: PatchError | None) -> None:
    if foreign:
        subject = out(repo, "log", "-1", "--format=%s", current)
        raise SourceError(
            f"{repo}: HEAD is at {current[:12]} {subject}, a commit istiobuild did not make",
            hint="rerun with --force: istiobuild then keeps it under refs/istiobuild/saved/ before checking out",
        )
    if journal is not None:
        raise journal
    if not clean:
        raise SourceError(
            f"{repo} has local changes or untracked files ({', '.join(changed_paths(repo))})",
            hint="commit them, or rerun with --force: istiobuild then saves them under refs/istiobuild/saved/ "
            "(nothing is deleted) before checking out",
        )


def _make_ours(
    repo: Path, source: Source, *, force: bool, note: Callable[[str], None]
) -> tuple[tuple[str, ...], patches.Applied | None]:
    """Refuse (without force) or save (with force) whatever istiobuild did not make: a foreign
    HEAD, edits, untracked files. Returns (saved refs, our recorded state if the tree carries it)."""
    current = _head_or_empty(repo)
    if not current:  # an interrupted creation: nothing was checked out yet
        return (), None
    foreign = _foreign_head(repo, source.pin.commit, current)
    journal: PatchError | None = None
    try:
        patches.recover(repo)
    except PatchError as exc:
        journal = exc
    clean, state = patches.pristine_or_ours(repo)
    if not force:
        _refuse(repo, current, foreign, clean, journal)
        return (), state
    saved = []
    if not clean or journal is not None:
        saved.append(_save_worktree(repo, current, source.component, note))
        git(repo, "reset", "--quiet", "--hard", "HEAD")
        git(repo, "clean", "-fd", "--quiet")  # never -x: ignored files (build outputs) stay
        patches.forget(repo)
        state = None
    if foreign:
        saved.append(_save_head(repo, current, source.component, note))
        patches.forget(repo)
        state = None
    return tuple(saved), state


def _create(dest: Path, source: Source, cache: Path) -> None:
    dest.mkdir(parents=True)
    git(dest, "init", "--quiet")
    _ensure_origin(dest, split_url(source.url).public)
    _link_cache(dest, cache)
    git(dest, "update-ref", "refs/istiobuild/pinned", source.pin.commit)
    git(dest, "checkout", "--quiet", "--detach", source.pin.commit)


def _check_destination(dest: Path) -> None:
    if dest.exists() and not (dest / ".git").exists():
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        else:
            raise SourceError(
                f"{dest} exists and is not a git checkout",
                hint="move it away or choose another workdir (--workdir / ISTIOBUILD_WORKDIR); "
                "istiobuild never deletes files it did not create",
            )


def checkout(settings: Settings, source: Source, *, force: bool, note: Callable[[str], None]) -> CheckoutResult:
    """Put `source.path` at the pinned commit. Never discards anything the user wrote: with
    `force`, a foreign HEAD and the user's changes are kept under refs/istiobuild/saved/."""
    dest, sha = source.path, source.pin.commit
    _check_destination(dest)
    cache = fetch(settings, source, note)
    if not dest.exists():
        _create(dest, source, cache)
        return CheckoutResult(component=source.component, path=dest, commit=sha, action="created")
    _link_cache(dest, cache)
    _ensure_origin(dest, split_url(source.url).public)
    saved, state = _make_ours(dest, source, force=force, note=note)
    done = functools.partial(CheckoutResult, component=source.component, path=dest, commit=sha, saved=saved)
    if _head_or_empty(dest) == sha:
        return done(action="unchanged")
    if state is not None and state.patches:
        patches.revert_recorded(dest, state)  # our own patches on the old commit
    git(dest, "update-ref", "refs/istiobuild/pinned", sha)
    git(dest, "checkout", "--quiet", "--detach", sha)
    return done(action="switched")

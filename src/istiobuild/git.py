"""git through the one subprocess entry point, with a clean environment and no prompts.

Every invocation allows only the file, http(s), ssh and git transports (never ext:: or fd::),
and credentials in a URL are handed to git through a private credential-store file, never argv.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from istiobuild.fsutil import ensure_private_dir, write_atomic
from istiobuild.run import Result, clean_environ, run

# Never ask for credentials (a private repo must fail, not hang); never read the caller's GIT_*;
# never write the index opportunistically (`git status` must not touch a checkout).
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
PROTOCOLS = (
    "protocol.allow=never",
    "protocol.file.allow=always",
    "protocol.https.allow=always",
    "protocol.http.allow=always",
    "protocol.ssh.allow=always",
    "protocol.git.allow=always",
)
# Who commits when istiobuild makes a commit (saving the user's changes): never the caller's config.
IDENTITY = {
    "GIT_AUTHOR_NAME": "istiobuild",
    "GIT_AUTHOR_EMAIL": "istiobuild@localhost",
    "GIT_COMMITTER_NAME": "istiobuild",
    "GIT_COMMITTER_EMAIL": "istiobuild@localhost",
}


def git(
    repo: Path | None,
    *args: str,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    what: str = "",
    stdin: str | None = None,
    config: Sequence[str] = (),
    secrets: Iterable[str] = (),
) -> Result:
    """Run `git [-c PROTOCOLS] [-c config...] [-C repo] args`."""
    options = [item for setting in (*PROTOCOLS, *config) for item in ("-c", setting)]
    argv = ["git", *options, *(["-C", str(repo)] if repo is not None else []), *args]
    return run(
        argv,
        env={**_GIT_ENV, **(env or {})},
        base_env=clean_environ(os.environ),
        capture=True,
        check=check,
        log=log,
        what=what or f"git {args[0]}",
        stdin=stdin,
        secrets=secrets,
    )


def out(repo: Path | None, *args: str, **kwargs: object) -> str:
    return git(repo, *args, **kwargs).stdout.strip()  # type: ignore[arg-type]


def has_commit(repo: Path, sha: str) -> bool:
    if not sha or sha.startswith("-"):
        return False
    return git(repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0


def git_path(repo: Path, name: str) -> Path:
    """The absolute path of `name` inside the repository's git directory (objects, index, ...)."""
    return Path(out(repo, "rev-parse", "--path-format=absolute", "--git-path", name))


def _alternate_entry(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ':"\\'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


@contextlib.contextmanager
def scratch_index(
    repo: Path, *, seed: bool = False, keep_objects: bool = False, reads_objects: bool = True
) -> Iterator[dict[str, str]]:
    """An environment for git with a throwaway index outside the repository.

    `seed` starts from a copy of the real index (its stat cache makes `add -A` fast). Unless
    `keep_objects`, new objects go to a throwaway directory too; the repository's own objects
    (and through its alternates, the cache's) stay readable. The repository is not written.
    """
    with tempfile.TemporaryDirectory(prefix="istiobuild-index-") as tmp:
        index = Path(tmp) / "index"
        env = {"GIT_INDEX_FILE": str(index)}
        real = git_path(repo, "index")
        if seed and real.is_file():
            shutil.copy2(real, index)  # keeps the mtime: racily clean entries are still re-hashed
        if not keep_objects:
            # New objects go to a throwaway directory. The repository's objects are an alternate only
            # when the caller reads them (`reads_objects`): git "freshens" (touches) an object it
            # would write when it already exists in an alternate, and hashing a working tree needs none.
            objects = Path(tmp) / "objects"
            objects.mkdir()
            env["GIT_OBJECT_DIRECTORY"] = str(objects)
            if reads_objects:
                env["GIT_ALTERNATE_OBJECT_DIRECTORIES"] = _alternate_entry(git_path(repo, "objects"))
        yield env


def worktree_tree(repo: Path, *, keep_objects: bool = False) -> str:
    """The tree id of the working tree as it is (tracked + untracked, minus ignored files).

    Read-only for the repository (index and objects are private) unless `keep_objects`, which
    stores the tree's objects in the repository so that a commit can be made of it.
    """
    with scratch_index(repo, seed=True, keep_objects=keep_objects, reads_objects=False) as env:
        git(repo, "add", "-A", env=env)
        return out(repo, "write-tree", *(() if keep_objects else ("--missing-ok",)), env=env)


def worktree_changes(repo: Path, commit: str) -> tuple[str, list[str]]:
    """(worktree tree id, paths where the working tree differs from `commit`); read-only."""
    with scratch_index(repo, seed=True, reads_objects=False) as env:
        git(repo, "add", "-A", env=env)
        tree = out(repo, "write-tree", "--missing-ok", env=env)
        readable = {**env, "GIT_ALTERNATE_OBJECT_DIRECTORIES": _alternate_entry(git_path(repo, "objects"))}
        names = git(repo, "diff-tree", "-r", "-z", "--no-renames", "--name-only", commit, tree, env=readable).stdout
        return tree, [name for name in names.split("\0") if name]


def restore_paths(repo: Path, commit: str, paths: Sequence[str]) -> None:
    """Put `paths` back as they are in `commit`: checked out if it has them, removed if not."""
    if not paths:
        return
    literal = {"GIT_LITERAL_PATHSPECS": "1"}
    listed = git(repo, "ls-tree", "-r", "-z", "--name-only", commit, "--", *paths, env=literal).stdout
    present = [name for name in listed.split("\0") if name]
    if present:
        git(repo, "checkout", "--quiet", commit, "--pathspec-from-file=-", "--pathspec-file-nul",
            stdin="\0".join(present), env=literal)  # fmt: skip
    root = repo.resolve()
    for name in sorted(set(paths) - set(present)):
        path = root / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        parent = path.parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


def head(repo: Path) -> str:
    return out(repo, "rev-parse", "HEAD")


def changed_paths(repo: Path, limit: int = 5) -> list[str]:
    lines = git(repo, "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    return [line[3:] for line in lines[:limit]] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


# ---------------------------------------------------------------------------------------------
# URLs and credentials


@dataclasses.dataclass(frozen=True)
class RemoteURL:
    """A URL split into what may be stored and shown, and what may not."""

    public: str  # without the password (and, except for ssh, without the user name)
    credential: str  # "scheme://user:password@host" for a credential-store file, or ""
    secret: str  # the password (to mask in output), or ""


def split_url(url: str) -> RemoteURL:
    parts = urllib.parse.urlsplit(url)
    if "://" not in url or "@" not in parts.netloc:
        return RemoteURL(public=url, credential="", secret="")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    keep_user = "ssh" in parts.scheme and user
    netloc = f"{user}@{hostport}" if keep_user else hostport
    public = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    if keep_user or not userinfo:
        return RemoteURL(public=public, credential="", secret=password)
    return RemoteURL(public=public, credential=f"{parts.scheme}://{userinfo}@{hostport}", secret=password)


@dataclasses.dataclass(frozen=True)
class Remote:
    """How to talk to one URL: the URL git sees, its -c settings, the strings to mask."""

    url: str
    config: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()


@contextlib.contextmanager
def remote(url: str, secrets_dir: Path) -> Iterator[Remote]:
    """The URL without credentials; its credentials, if any, in `secrets_dir`/git-credentials
    (0600, in a 0700 directory) for the duration, handed to git with credential.helper=store."""
    parsed = split_url(url)
    masks = tuple(s for s in (parsed.secret, urllib.parse.unquote(parsed.secret)) if s)
    if not parsed.credential:
        yield Remote(url=parsed.public, secrets=masks)
        return
    store = ensure_private_dir(secrets_dir) / "git-credentials"
    write_atomic(store, parsed.credential + "\n", mode=0o600)
    try:
        helper = f"credential.helper=store --file={shlex.quote(str(store))}"
        yield Remote(url=parsed.public, config=("credential.helper=", helper), secrets=masks)
    finally:
        store.unlink(missing_ok=True)

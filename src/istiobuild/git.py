"""git through the one subprocess entry point, with a clean environment and no prompts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from istiobuild.run import Result, clean_environ, run

# Never ask for credentials (a private repo must fail, not hang); never read the caller's GIT_*.
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


def git(
    repo: Path | None,
    *args: str,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    what: str = "",
    stdin: str | None = None,
) -> Result:
    argv = ["git", *(["-C", str(repo)] if repo is not None else []), *args]
    return run(
        argv,
        env={**_GIT_ENV, **(env or {})},
        base_env=clean_environ(os.environ),
        capture=True,
        check=check,
        log=log,
        what=what or f"git {args[0]}",
        stdin=stdin,
    )


def out(repo: Path | None, *args: str, **kwargs: object) -> str:
    return git(repo, *args, **kwargs).stdout.strip()  # type: ignore[arg-type]


def has_commit(repo: Path, sha: str) -> bool:
    return git(repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0


def worktree_tree(repo: Path) -> str:
    """The tree id of the working tree as it is (tracked + untracked, minus ignored files).

    Uses a private index so the user's index is never touched.
    """
    gitdir = Path(out(repo, "rev-parse", "--absolute-git-dir"))
    private = gitdir / "istiobuild" / "index"
    private.parent.mkdir(parents=True, exist_ok=True)
    real = gitdir / "index"
    if real.is_file():
        private.write_bytes(real.read_bytes())
    else:
        private.unlink(missing_ok=True)
    env = {"GIT_INDEX_FILE": str(private)}
    git(repo, "add", "-A", env=env)
    return out(repo, "write-tree", env=env)


def head(repo: Path) -> str:
    return out(repo, "rev-parse", "HEAD")


def changed_paths(repo: Path, limit: int = 5) -> list[str]:
    lines = git(repo, "status", "--porcelain", "--untracked-files=all").stdout.splitlines()
    return [line[3:] for line in lines[:limit]] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])

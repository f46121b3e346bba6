"""Patch series: which patches a component takes, and applying them atomically and idempotently."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from istiobuild.arch import Arch
from istiobuild.errors import DataError, PatchError
from istiobuild.git import git, head, out, worktree_tree
from istiobuild.release import Component, Release
from istiobuild.resources import data_dir, relative

CONDITION_KEYS = {"arch": {a.value for a in Arch}, "page_size": {"4k", "64k"}}
STATE_FILE = "istiobuild/patches.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Patch:
    """One patch file of a series and the conditions under which it applies."""

    component: Component
    series: str
    path: Path
    conditions: Mapping[str, str]

    @property
    def name(self) -> str:
        """The patch as a path relative to the repository root: patches/envoy/wee8-1.5/0001-..."""
        return relative(self.path)

    def applies(self, facts: Mapping[str, str]) -> bool:
        return all(facts.get(key) == value for key, value in self.conditions.items())

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def load_series(component: Component, name: str, root: Path | None = None) -> tuple[Patch, ...]:
    """Parse patches/<component>/<name>/series."""
    directory = (root or data_dir("patches")) / component.value / name
    series = directory / "series"
    if not series.is_file():
        raise DataError(f"patch series {component}/{name} has no series file", hint=f"create {series}")
    patches = []
    for number, raw in enumerate(series.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        filename, *conds = line.split()
        conditions = {}
        for cond in conds:
            key, sep, value = cond.partition("=")
            if not sep or key not in CONDITION_KEYS or value not in CONDITION_KEYS[key]:
                raise DataError(
                    f"{relative(series)}:{number}: bad condition {cond!r}",
                    hint="conditions are arch=aarch64|x86_64 or page_size=4k|64k",
                )
            conditions[key] = value
        path = directory / filename
        if not path.is_file():
            raise DataError(f"{relative(series)}:{number}: {filename} does not exist")
        patches.append(Patch(component=component, series=name, path=path, conditions=conditions))
    return tuple(patches)


def facts_for(arch: Arch, page_size: str = "4k") -> dict[str, str]:
    return {"arch": arch.value, "page_size": page_size}


def select(release: Release, component: Component, arch: Arch, page_size: str = "4k") -> tuple[Patch, ...]:
    """The patches `component` of `release` takes for `arch`, in the order they apply."""
    facts = facts_for(arch, page_size)
    return tuple(
        patch for name in release.series[component] for patch in load_series(component, name) if patch.applies(facts)
    )


# ---------------------------------------------------------------------------------------------
# Applying


@dataclasses.dataclass(frozen=True, kw_only=True)
class Applied:
    """What a checkout carries: its commit, the patches on top (name, sha256), the resulting tree."""

    commit: str
    patches: tuple[tuple[str, str], ...]
    tree: str

    def to_json(self) -> dict[str, object]:
        return {
            "commit": self.commit,
            "patches": [{"name": n, "sha256": s} for n, s in self.patches],
            "tree": self.tree,
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchSource:
    """A patch to apply: its display name and its file (shipped, or generated from config)."""

    name: str
    path: Path

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _state_path(repo: Path) -> Path:
    return Path(out(repo, "rev-parse", "--absolute-git-dir")) / STATE_FILE


def read_state(repo: Path) -> Applied | None:
    path = _state_path(repo)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Applied(
            commit=data["commit"],
            patches=tuple((p["name"], p["sha256"]) for p in data["patches"]),
            tree=data["tree"],
        )
    except (ValueError, KeyError, TypeError):
        return None


def _write_state(repo: Path, state: Applied | None) -> None:
    path = _state_path(repo)
    if state is None or not state.patches:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
    tmp.replace(path)


def pristine_or_ours(repo: Path) -> tuple[bool, Applied | None]:
    """Is the working tree exactly HEAD, or exactly HEAD plus the patches we recorded?

    Returns (unchanged by anyone but us, the recorded state if it still holds).
    """
    tree = worktree_tree(repo)
    commit = head(repo)
    state = read_state(repo)
    if state is not None and state.commit == commit and state.tree == tree:
        return True, state
    return tree == out(repo, "rev-parse", "HEAD^{tree}"), None


def _describe_conflict(patch: PatchSource, stderr: str) -> str:
    """Name the file and the hunk git could not apply."""
    failed = re.search(r"patch failed: (.+):(\d+)", stderr)
    missing = re.search(r"error: (.+?): (does not exist in index|No such file or directory)", stderr)
    exists = re.search(r"error: (.+?): already exists", stderr)
    if failed:
        path, line = failed.group(1), int(failed.group(2))
        hunk = _find_hunk(patch.path, path, line)
        return f"{patch.name}: hunk {hunk or f'at line {line}'} does not apply to {path}"
    if missing:
        return f"{patch.name}: {missing.group(1)} does not exist in the checkout"
    if exists:
        return f"{patch.name}: {exists.group(1)} already exists in the checkout"
    first = next((ln for ln in stderr.splitlines() if ln.startswith("error:")), stderr.strip())
    return f"{patch.name}: {first}"


def _find_hunk(patch_file: Path, target: str, line: int) -> str:
    current = None
    for text in patch_file.read_text(errors="replace").splitlines():
        if text.startswith("diff --git "):
            current = text.split(" b/", 1)[-1]
        elif text.startswith("@@") and current == target:
            match = re.match(r"@@ -(\d+)", text)
            if match and int(match.group(1)) == line:
                end = text.find(" @@", 2)
                return text[: end + 3] if end > 0 else text
    return ""


def check(repo: Path, commit: str, patches: Sequence[PatchSource]) -> None:
    """Apply every patch, in order, to a throwaway index built from `commit`; touch nothing else.

    Works on bare repositories and on mirrors that lack some large blobs (only the blobs of
    patched files are read).
    """
    with tempfile.TemporaryDirectory(prefix="istiobuild-check-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", commit, env=env)
        for patch in patches:
            result = git(repo, "apply", "--cached", "--whitespace=nowarn", str(patch.path), env=env, check=False)
            if result.returncode != 0:
                raise PatchError(
                    _describe_conflict(patch, "\n".join(result.tail)),
                    hint="no patch was applied; the checkout is unchanged. The patch no longer "
                    "matches this upstream commit: refresh it (docs/formats.md)",
                )


def _applied_dir(repo: Path) -> Path:
    return _state_path(repo).parent / "applied"


def revert_recorded(repo: Path, state: Applied) -> None:
    """Reverse the recorded patches (from the copies kept in .git/istiobuild/applied)."""
    copies = _applied_dir(repo)
    paths = [str(copies / f"{i:04d}.patch") for i in reversed(range(len(state.patches)))]
    if paths:
        git(repo, "apply", "-R", "--whitespace=nowarn", *paths, what="git apply -R")
    _write_state(repo, None)


def apply(repo: Path, patches: Sequence[PatchSource]) -> tuple[Applied, bool]:
    """Bring `repo` to HEAD + `patches`, atomically. Returns (new state, whether anything changed).

    - Already exactly these patches: nothing happens (idempotent).
    - Other patches of ours applied (another arch, an updated series): reverted first.
    - Changes that are not ours: refuse, touch nothing.
    """
    clean, state = pristine_or_ours(repo)
    commit = head(repo)
    wanted = tuple((p.name, p.sha256()) for p in patches)
    if not clean:
        raise PatchError(
            f"{repo} has local changes that istiobuild did not make",
            hint="commit or stash them first (istiobuild never patches over your edits), "
            "or run checkout with --force to save them in a git stash",
        )
    if state is not None and state.patches == wanted:
        return state, False

    # Check the whole new series against the pristine commit before touching anything.
    check(repo, commit, patches)
    if state is not None and state.patches:
        revert_recorded(repo, state)
    if patches:
        git(repo, "apply", "--whitespace=nowarn", *[str(p.path) for p in patches], what="git apply")
        copies = _applied_dir(repo)
        copies.mkdir(parents=True, exist_ok=True)
        for old in copies.glob("*.patch"):
            old.unlink()
        for i, patch in enumerate(patches):
            (copies / f"{i:04d}.patch").write_bytes(patch.path.read_bytes())
    new = Applied(commit=commit, patches=wanted, tree=worktree_tree(repo))
    _write_state(repo, new)
    return new, True


def from_shipped(patches: Sequence[Patch]) -> list[PatchSource]:
    return [PatchSource(name=p.name, path=p.path) for p in patches]

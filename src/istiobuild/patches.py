"""Patch series: which patches a component takes, and applying them atomically and idempotently.

Applying is crash-safe: an intent journal (.git/istiobuild/journal.json) written before the tree
changes names the commit, the wanted patches and the trees before and after; the next run
finishes, discards or undoes an interrupted application from it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from istiobuild.arch import Arch
from istiobuild.errors import DataError, PatchError
from istiobuild.fsutil import read_json_object, write_atomic, write_json
from istiobuild.git import git, head, out, restore_paths, scratch_index, worktree_changes
from istiobuild.release import Component, Release
from istiobuild.resources import data_dir, relative

CONDITION_KEYS = {"arch": {a.value for a in Arch}, "page_size": {"4k", "64k"}}
STATE_FILE = "istiobuild/patches.json"
JOURNAL_FILE = "istiobuild/journal.json"
_DIRTY_HINT = (
    "commit them first (istiobuild never patches over your edits), or run checkout with --force: "
    "it saves them under refs/istiobuild/saved/ (nothing is lost) and restores the pinned commit"
)


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
# Recorded state and the intent journal


@dataclasses.dataclass(frozen=True, kw_only=True)
class Applied:
    """What a checkout carries: its commit, the patches on top (name, sha256), the resulting tree."""

    commit: str
    patches: tuple[tuple[str, str], ...]
    tree: str

    def to_json(self) -> dict[str, object]:
        return {"commit": self.commit, "patches": _patches_json(self.patches), "tree": self.tree}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Journal:
    """The intent written before the working tree changes."""

    commit: str
    patches: tuple[tuple[str, str], ...]
    tree_before: str
    tree_after: str
    paths: tuple[str, ...]  # every path the old and the new patches touch

    def to_json(self) -> dict[str, object]:
        return {**dataclasses.asdict(self), "patches": _patches_json(self.patches)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PatchSource:
    """A patch to apply: its display name and its file (shipped, or generated from config)."""

    name: str
    path: Path

    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def _patches_json(patches: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": n, "sha256": s} for n, s in patches]


def _dir(repo: Path) -> Path:
    return Path(out(repo, "rev-parse", "--absolute-git-dir")) / "istiobuild"


def _state_path(repo: Path) -> Path:
    return _dir(repo) / Path(STATE_FILE).name


def _journal_path(repo: Path) -> Path:
    return _dir(repo) / Path(JOURNAL_FILE).name


def _patch_list(raw: object) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(raw, list):
        return None
    result = []
    for item in raw:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("name", "sha256")):
            return None
        result.append((item["name"], item["sha256"]))
    return tuple(result)


def _strings(data: Mapping[str, Any], *keys: str) -> bool:
    return all(isinstance(data.get(k), str) for k in keys)


def read_state(repo: Path) -> Applied | None:
    """The recorded state; a missing file, or one of the wrong shape, counts as none."""
    data = read_json_object(_state_path(repo))
    if data is None or not _strings(data, "commit", "tree"):
        return None
    patches = _patch_list(data.get("patches"))
    return None if patches is None else Applied(commit=data["commit"], patches=patches, tree=data["tree"])


def read_journal(repo: Path) -> Journal | None:
    data = read_json_object(_journal_path(repo))
    if data is None or not _strings(data, "commit", "tree_before", "tree_after"):
        return None
    patches = _patch_list(data.get("patches"))
    paths = data.get("paths")
    if patches is None or not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        return None
    trees = {key: data[key] for key in ("commit", "tree_before", "tree_after")}
    return Journal(**trees, patches=patches, paths=tuple(paths))


def _write_state(repo: Path, state: Applied | None) -> None:
    path = _state_path(repo)
    if state is None or not state.patches:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, state.to_json())


def forget(repo: Path) -> None:
    """Drop everything recorded about our patches (the tree no longer carries them)."""
    base = _dir(repo)
    for name in ("applied", "pending"):
        shutil.rmtree(base / name, ignore_errors=True)
    _state_path(repo).unlink(missing_ok=True)
    _journal_path(repo).unlink(missing_ok=True)


def _valid_state(repo: Path, commit: str, tree: str) -> Applied | None:
    state = read_state(repo)
    return state if state is not None and state.commit == commit and state.tree == tree else None


def _verdict(journal: Journal, commit: str, tree: str, changed: Sequence[str]) -> tuple[str, list[str]]:
    """What an interrupted application left: "after", "before", "restore" (only paths the
    journal's patches touch differ from the commit) or "refuse" (with the offending paths)."""
    if commit != journal.commit:
        return "refuse", [f"HEAD (now {commit[:12]}, was {journal.commit[:12]})"]
    if tree == journal.tree_after:
        return "after", []
    if tree == journal.tree_before:
        return "before", []
    touched = set(journal.paths)
    stray = [path for path in changed if path not in touched]
    return ("refuse", stray) if stray else ("restore", list(changed))


def pristine_or_ours(repo: Path) -> tuple[bool, Applied | None]:
    """Is the working tree exactly HEAD, or exactly HEAD plus the patches we recorded? Read-only.
    Returns (unchanged by anyone but us, the recorded state if it still holds); what an interrupted
    apply() left, and the next apply() repairs, counts as ours."""
    commit = head(repo)
    tree, changed = worktree_changes(repo, commit)
    journal = read_journal(repo)
    if journal is not None:
        verdict, _ = _verdict(journal, commit, tree, changed)
        if verdict == "refuse":
            return False, None
        if verdict != "before":
            return True, None
    state = _valid_state(repo, commit, tree)
    return (state is not None or not changed), state


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


def plan(repo: Path, commit: str, patches: Sequence[PatchSource]) -> tuple[str, list[str]]:
    """Apply `patches` in order to a throwaway index built from `commit`: returns the resulting
    tree id and the paths it changes. Writes nothing into the repository (not even objects)."""
    with scratch_index(repo) as env:
        git(repo, "read-tree", commit, env=env)
        for patch in patches:
            cmd = ("apply", "--cached", "--whitespace=nowarn", "--", str(patch.path))
            result = git(repo, *cmd, env=env, check=False)
            if result.returncode != 0:
                raise PatchError(
                    _describe_conflict(patch, "\n".join(result.tail)),
                    hint="no patch was applied; the checkout is unchanged. The patch no longer "
                    "matches this upstream commit: refresh it (docs/formats.md)",
                )
        tree = out(repo, "write-tree", "--missing-ok", env=env)
        names = git(repo, "diff-tree", "-r", "-z", "--no-renames", "--name-only", commit, tree, env=env).stdout
    return tree, [name for name in names.split("\0") if name]


def check(repo: Path, commit: str, patches: Sequence[PatchSource]) -> None:
    """Apply every patch, in order, to a throwaway index built from `commit`; touch nothing else
    (works on bare repositories, and on mirrors lacking blobs the patches do not touch)."""
    plan(repo, commit, patches)


# ---------------------------------------------------------------------------------------------
# Changing the working tree


def revert_recorded(repo: Path, state: Applied) -> None:
    """Undo the recorded patches: every path that differs from the commit goes back to it (only
    when the tree is exactly the recorded one, so that every difference is ours)."""
    tree, changed = worktree_changes(repo, state.commit)
    if tree != state.tree or head(repo) != state.commit:
        raise PatchError(f"{repo} has local changes that istiobuild did not make", hint=_DIRTY_HINT)
    pristine = out(repo, "rev-parse", f"{state.commit}^{{tree}}")
    journal = Journal(commit=state.commit, patches=(), tree_before=tree, tree_after=pristine, paths=tuple(changed))
    _stage_copies(repo, [])
    write_json(_journal_path(repo), journal.to_json())  # a crash mid-way is repaired by recover()
    restore_paths(repo, state.commit, changed)
    _finish(repo, journal, pristine)


def _stage_copies(repo: Path, patches: Sequence[PatchSource]) -> None:
    """Copies of the patches about to be applied, in .git/istiobuild/pending/ (become `applied`)."""
    pending = _dir(repo) / "pending"
    shutil.rmtree(pending, ignore_errors=True)
    pending.mkdir(parents=True)
    for i, patch in enumerate(patches):
        write_atomic(pending / f"{i:04d}.patch", patch.path.read_bytes())


def _finish(repo: Path, journal: Journal, tree: str) -> Applied:
    """Record what the tree now carries; idempotent, so an interrupted finish can be redone."""
    base = _dir(repo)
    pending, applied = base / "pending", base / "applied"
    if pending.is_dir():
        shutil.rmtree(applied, ignore_errors=True)
        pending.rename(applied)
    state = Applied(commit=journal.commit, patches=journal.patches, tree=tree)
    _write_state(repo, state)
    _journal_path(repo).unlink(missing_ok=True)
    return state


def recover(repo: Path) -> bool:
    """Repair what an interrupted apply() left, from its journal; returns whether there was one.
    Tree as planned: record it. As before: drop the journal. Only paths its patches touch differ
    from the commit: restore them from it. Anything else: refuse, naming the paths."""
    journal = read_journal(repo)
    if journal is None:
        return False
    commit = head(repo)
    tree, changed = worktree_changes(repo, journal.commit)
    verdict, paths = _verdict(journal, commit, tree, changed)
    if verdict == "after":
        _finish(repo, journal, tree)
    elif verdict == "before":
        shutil.rmtree(_dir(repo) / "pending", ignore_errors=True)
        _journal_path(repo).unlink(missing_ok=True)
    elif verdict == "restore":
        restore_paths(repo, journal.commit, paths)
        forget(repo)
    else:
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        raise PatchError(f"{repo}: an interrupted patch stage left changes istiobuild did not make: {shown}",
                         hint=_DIRTY_HINT)  # fmt: skip
    return True


def materialize(repo: Path, state: Applied) -> str | None:
    """Store the recorded tree (HEAD + the kept copies of our patches) as objects in the repository;
    returns its id, or None when the copies do not reproduce it."""
    copies = sorted((_dir(repo) / "applied").glob("*.patch"))
    if len(copies) != len(state.patches):
        return None
    with scratch_index(repo, keep_objects=True) as env:
        git(repo, "read-tree", state.commit, env=env)
        for copy in copies:
            if git(repo, "apply", "--cached", "--whitespace=nowarn", "--", str(copy), env=env, check=False).returncode:
                return None
        tree = out(repo, "write-tree", "--missing-ok", env=env)
    return tree if tree == state.tree else None


def apply(repo: Path, patches: Sequence[PatchSource]) -> tuple[Applied, bool]:
    """Bring `repo` to HEAD + `patches`, atomically. Returns (new state, whether anything changed).

    - Already exactly these patches: nothing happens (idempotent).
    - Other patches of ours applied (another arch, an updated series): reverted first.
    - Changes that are not ours: refuse, touch nothing.
    - Interrupted before (killed mid-way): repaired from the journal first.
    """
    recover(repo)
    commit = head(repo)
    tree, changed = worktree_changes(repo, commit)
    state = _valid_state(repo, commit, tree)
    if state is None and changed:
        raise PatchError(f"{repo} has local changes that istiobuild did not make", hint=_DIRTY_HINT)
    wanted = tuple((p.name, p.sha256()) for p in patches)
    if state is not None and state.patches == wanted:
        return state, False
    if state is None and not wanted:
        return Applied(commit=commit, patches=(), tree=tree), False
    after, touched = plan(repo, commit, patches)  # the whole new series, before touching anything
    journal = Journal(
        commit=commit, patches=wanted, tree_before=tree, tree_after=after, paths=tuple(sorted({*changed, *touched}))
    )
    _stage_copies(repo, patches)
    write_json(_journal_path(repo), journal.to_json())
    restore_paths(repo, commit, changed)  # our old patches, if any
    if patches:
        git(repo, "apply", "--whitespace=nowarn", "--", *[str(p.path) for p in patches], what="git apply")
    return _finish(repo, journal, worktree_changes(repo, commit)[0]), True


def from_shipped(patches: Sequence[Patch]) -> list[PatchSource]:
    return [PatchSource(name=p.name, path=p.path) for p in patches]

"""The shared cache: who may use it, what each part holds and weighs, and trimming it (`invoke cache`).

The cache (`cache_dir`, ISTIOBUILD_CACHE_DIR; by default platformdirs' user cache directory,
$XDG_CACHE_HOME/istiobuild or ~/.cache/istiobuild) is shared by every workdir; what belongs to one
workdir stays in `<workdir>/cache` (Layout.workdir_cache). A build holds a shared flock on the root's
lock file while it runs (`shared`), `prune` an exclusive one taken without waiting; a fetch into a
shared git repository holds that repository's lock (`fetch_lock`). Nothing here follows a symlink:
directories are opened with O_NOFOLLOW from the root, and only what was found that way is removed.
docs/cache.md has what is shared, why that is safe (with sources) and how bazel 4 marks use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import json
import math
import os
import pwd
import re
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

from istiobuild.errors import IstiobuildError, UsageError
from istiobuild.validate import check_safe_path

LOCK_NAME = ".istiobuild-cache.lock"
DEFAULT_MAX_SIZE = "20G"
DEFAULT_OLDER_THAN = "30d"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LOCK = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FIX = "set cache_dir (ISTIOBUILD_CACHE_DIR) or XDG_CACHE_HOME to a directory of yours"
_LINK = "remove the link, or set cache_dir (ISTIOBUILD_CACHE_DIR) or XDG_CACHE_HOME to the real directory"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Part:
    """A directory of the cache and what `prune` may remove from it: entries (`kind` at `depth`, None =
    any depth) older than --older-than, and with `lru` the least recently used down to --max-size."""

    name: str
    path: str  # relative to the cache root
    what: str
    kind: Literal["file", "dir", ""] = ""  # "" = never pruned
    depth: int | None = None
    lru: bool = False


PARTS = (
    Part(name="git", path="git", what="git objects (checkouts borrow them: never pruned)"),
    Part(name="bazel-disk", path="bazel-disk", what="bazel disk cache", kind="file", lru=True),
    Part(name="bazel-repo", path="bazel-repo", what="bazel repository cache", kind="dir", depth=3),
    Part(name="go-build", path="go/build", what="Go build cache", kind="file", depth=2),
    Part(name="go-mod", path="go/mod", what="Go module cache (read-only: `go clean -modcache`)"),
    Part(name="downloads", path="downloads", what="downloads", kind="file", depth=1),
    Part(name="bazelisk", path="bazelisk", what="bazelisk's bazel binaries"),
    Part(name="toolchain", path="toolchain", what="toolchain links"),
)
_BY_NAME = {p.name: p for p in PARTS}


def part_dir(root: Path, name: str) -> Path:
    """Where a part lives under the cache root (Layout derives its shared paths from this)."""
    return root / _BY_NAME[name].path


# ---------------------------------------------------------------------------------------------
# The root and its locks


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def check_root(root: Path, *, create: bool) -> bool:
    """The cache root is usable: a path make and a shell survive, absolute, not a symlink, a directory
    owned by this user (created 0700 when missing and `create`). Returns whether it exists."""
    check_safe_path(str(root), "the cache directory")
    if not root.is_absolute():
        raise UsageError(f"the cache directory {root} is not an absolute path", hint=_FIX)
    if root.is_symlink():
        raise UsageError(f"the cache directory {root} is a symlink; istiobuild does not follow it", hint=_LINK)
    if create:
        root.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            root.mkdir(mode=0o700)
    with _dir(root) as fd:
        if fd is None and (root.exists() or root.is_symlink()):
            raise UsageError(f"the cache directory {root} is not a directory", hint=_LINK)
        if fd is None:
            return False
        owner = os.fstat(fd).st_uid
    if owner != os.getuid():
        raise UsageError(
            f"the cache directory {root} belongs to {_user(owner)}, not to you ({_user(os.getuid())})",
            hint=f"a cache is never shared between users; {_FIX}",
        )
    return True


def _open_lock(path: Path) -> int:
    try:
        fd = os.open(path, _LOCK, 0o644)
    except OSError as exc:
        raise UsageError(
            f"cannot open the lock file {path} ({exc.strerror}); istiobuild does not follow a symlink there",
            hint=f"remove {path} if it is a symlink, and make its directory writable",
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path} is not a regular file", hint=f"remove {path} and run again")
    return fd


def holders(path: Path) -> list[int]:
    """The pids holding a flock on `path` (/proc/locks, by inode; waiters, `->`, are not holders)."""
    try:
        ino, text = str(path.stat().st_ino), Path("/proc/locks").read_text()
    except OSError:
        return []
    rows = [line.split() for line in text.splitlines()]
    return sorted({int(f[4]) for f in rows if len(f) >= 6 and f[1] == "FLOCK" and f[5].rsplit(":", 1)[-1] == ino})


@contextlib.contextmanager
def _locked(path: Path, mode: int, busy: Callable[[str], None]) -> Iterator[None]:
    """flock `mode` on `path`; when others hold it, `busy` gets their pids (and may raise), then wait."""
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            busy(", ".join(str(p) for p in holders(path)) or "unknown")
            fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def shared(root: Path) -> Iterator[None]:
    """Held by a build while it runs: any number of builds at once, never during a prune (which takes
    seconds: a build waits for it)."""
    check_root(root, create=True)
    with _locked(root / LOCK_NAME, fcntl.LOCK_SH, lambda pids: None):
        yield


def _in_use(root: Path, pids: str) -> None:
    raise IstiobuildError(
        f"the cache {root} is in use by pid {pids} (a build); nothing was pruned",
        hint="prune again when no build is running",
    )


@contextlib.contextmanager
def fetch_lock(repo: Path, note: Callable[[str], None]) -> Iterator[None]:
    """One fetch at a time into the shared git repository `repo` (other builds wait for it)."""
    repo.parent.mkdir(parents=True, exist_ok=True)
    with _locked(
        repo.parent / f".{repo.name}.lock",
        fcntl.LOCK_EX,
        lambda pids: note(f"waiting for pid {pids}, which is fetching into {repo}"),
    ):
        yield


# ---------------------------------------------------------------------------------------------
# Walking without following symlinks


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """Something prune may remove: `rel` (path components under the part), its disk usage, last use."""

    rel: tuple[str, ...]
    size: int
    used: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class Usage:
    part: str
    path: Path
    what: str
    bytes: int  # disk usage, as du counts it (each inode once)
    files: int


@contextlib.contextmanager
def _dir(base: Path | int | None, rel: Sequence[str] = ()) -> Iterator[int | None]:
    """The directory `rel` under `base` (a path, or an open directory), every component opened with
    O_NOFOLLOW; None when it is missing, a symlink or not a directory."""
    fds: list[int] = []
    try:
        if base is not None:
            fds.append(os.dup(base) if isinstance(base, int) else os.open(base, _DIR))
            for name in rel:
                fds.append(os.open(name, _DIR, dir_fd=fds[-1]))
        ok = bool(fds)
    except OSError:
        ok = False
    try:
        yield fds[-1] if ok else None
    finally:
        for fd in fds:
            os.close(fd)


def _scan(fd: int) -> list[tuple[str, os.stat_result]]:
    with os.scandir(fd) as found:
        return sorted((e.name, e.stat(follow_symlinks=False)) for e in found)


def _du(fd: int, seen: set[tuple[int, int]]) -> tuple[int, int, float]:
    """(disk usage, regular files, newest use) of the open directory, itself included, as du counts."""
    total, files, newest = os.fstat(fd).st_blocks * 512, 0, 0.0
    for name, st in _scan(fd):
        if stat.S_ISDIR(st.st_mode):
            with _dir(fd, [name]) as sub:
                size, count, used = _du(sub, seen) if sub is not None else (0, 0, 0.0)
            total, files, newest = total + size, files + count, max(newest, used)
        elif (st.st_dev, st.st_ino) not in seen:
            if st.st_nlink > 1:  # a hard link is counted once
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if stat.S_ISREG(st.st_mode):
                files, newest = files + 1, max(newest, st.st_atime, st.st_mtime)
    return total, files, newest


def _entries(fd: int, part: Part, rel: tuple[str, ...] = ()) -> Iterator[Entry]:
    """The part's prunable entries under the open directory `fd` (at `rel`); last use = max(atime, mtime)."""
    for name, st in _scan(fd):
        here = (*rel, name)
        if stat.S_ISREG(st.st_mode) and part.kind == "file" and part.depth in (None, len(here)):
            yield Entry(rel=here, size=st.st_blocks * 512, used=max(st.st_atime, st.st_mtime))
            continue
        whole = part.kind == "dir" and len(here) == part.depth
        if not stat.S_ISDIR(st.st_mode) or not (whole or part.depth is None or len(here) < part.depth):
            continue
        with _dir(fd, [name]) as sub:
            if sub is not None and whole:
                size, _, used = _du(sub, set())
                yield Entry(rel=here, size=size, used=used or st.st_mtime)
            elif sub is not None:
                yield from _entries(sub, part, here)


def _remove_tree(parent: int, name: str) -> None:
    with _dir(parent, [name]) as fd:
        if fd is None:
            raise NotADirectoryError(name)
        for entry, st in _scan(fd):
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(fd, entry)
            else:
                os.unlink(entry, dir_fd=fd)
    os.rmdir(name, dir_fd=parent)


def _remove(part_fd: int, entry: Entry, kind: str) -> bool:
    with _dir(part_fd, entry.rel[:-1]) as parent:
        try:
            if parent is not None and kind == "dir":
                _remove_tree(parent, entry.rel[-1])
            elif parent is not None:
                os.unlink(entry.rel[-1], dir_fd=parent)  # unlink never follows the name itself
        except OSError:
            return False
        return parent is not None


# ---------------------------------------------------------------------------------------------
# Sizes and pruning


def _parts(root: Path) -> Iterator[tuple[Part, int | None]]:
    """Each part with its directory opened from the root, component by component, never through a symlink."""
    with _dir(root) as top:
        for part in PARTS:
            with _dir(top, part.path.split("/")) as fd:
                yield part, fd


def usage(root: Path) -> tuple[list[Usage], Usage]:
    """Each part's disk usage and file count, and the whole root's (du's numbers: `du -s -B1 DIR`)."""
    rows = []
    for part, fd in _parts(root):
        size, files, _ = _du(fd, set()) if fd is not None else (0, 0, 0.0)
        rows.append(Usage(part=part.name, path=part_dir(root, part.name), what=part.what, bytes=size, files=files))
    with _dir(root) as top:
        size, files, _ = _du(top, set()) if top is not None else (0, 0, 0.0)
    return rows, Usage(part="total", path=root, what="the whole cache", bytes=size, files=files)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pruned:
    part: str
    entries: int
    bytes: int


def _choose(entries: list[Entry], *, cutoff: float, max_size: int | None) -> list[Entry]:
    """Those last used before `cutoff`, then (with `max_size`) the least recently used of the rest until
    what is left fits."""
    entries.sort(key=lambda e: (e.used, e.rel))
    chosen = [e for e in entries if e.used < cutoff]
    rest = entries[len(chosen) :]
    left = sum(e.size for e in rest)
    for entry in rest:
        if max_size is None or left <= max_size:
            break
        chosen.append(entry)
        left -= entry.size
    return chosen


def prune(root: Path, *, max_size: int, older_than: float, now: float | None = None) -> list[Pruned]:
    """Remove entries unused for `older_than` seconds, and the bazel disk cache's least recently used
    files down to `max_size` bytes. Refuses while a build holds the cache."""
    if not check_root(root, create=False):
        return []
    cutoff = (time.time() if now is None else now) - older_than
    done = []
    with _locked(root / LOCK_NAME, fcntl.LOCK_EX, functools.partial(_in_use, root)):
        for part, fd in _parts(root):
            if fd is None or not part.kind:
                continue
            chosen = _choose(list(_entries(fd, part)), cutoff=cutoff, max_size=max_size if part.lru else None)
            removed = [e for e in chosen if _remove(fd, e, part.kind)]
            done.append(Pruned(part=part.name, entries=len(removed), bytes=sum(e.size for e in removed)))
    return done


def parse_size(text: str, what: str = "--max-size") -> int:
    """20G, 512M, 1.5T, 1000 (bytes); K/M/G/T are powers of 1024 (KiB, MiB ...)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text.strip(), re.IGNORECASE)
    if not match:
        raise UsageError(f"{what} {text!r} is not a size", hint="give a size such as 20G, 512M or 1.5T")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def parse_age(text: str, what: str = "--older-than") -> float:
    """30d, 12h, 2w, 90m, 45s."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not match:
        raise UsageError(f"{what} {text!r} is not an age", hint="give an age such as 30d, 12h or 2w")
    return float(match.group(1)) * _SECONDS[match.group(2)]


# ---------------------------------------------------------------------------------------------
# `invoke cache`


def human(size: int) -> str:
    """Bytes for people: 512 B, 1.5 KiB ... 2.0 TiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    exp = min(int(math.log(size, 1024)), len(units) - 1) if size > 0 else 0
    return f"{size} B" if exp == 0 else f"{size / 1024**exp:.1f} {units[exp]}"


def _table(rows: list[Usage], total: Usage, *, tty: bool) -> None:
    if not tty:
        for row in [*rows, total]:
            print(f"{row.part:<11} {human(row.bytes):>10} {row.files:>8} files  {row.path}  {row.what}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("part", "size", "files", "path", "what", title=f"cache {total.path}")
    for row in rows:
        table.add_row(row.part, human(row.bytes), str(row.files), str(row.path), row.what)
    table.add_row("total", human(total.bytes), str(total.files), str(total.path), "", style="bold")
    Console(highlight=False).print(table)


def command(root: Path, *, size: bool, do_prune: bool, max_size: str, older_than: str, as_json: bool) -> None:
    """`invoke cache`: prune (with --prune), then show each part's size (always without --prune)."""
    limit, age = parse_size(max_size or DEFAULT_MAX_SIZE), parse_age(older_than or DEFAULT_OLDER_THAN)
    pruned = prune(root, max_size=limit, older_than=age) if do_prune else []
    check_root(root, create=False)
    rows, total = usage(root)
    if as_json:
        data = {
            "root": str(root),
            "parts": [{**dataclasses.asdict(r), "path": str(r.path)} for r in rows],
            "total": {"bytes": total.bytes, "files": total.files},
            "pruned": [dataclasses.asdict(p) for p in pruned],
        }
        print(json.dumps(data, indent=2))
        return
    for p in pruned:
        print(f"pruned {p.part}: {p.entries} entries, {human(p.bytes)}")
    if size or not do_prune:
        from istiobuild.console import is_tty

        _table(rows, total, tty=is_tty(sys.stdout))

"""Files written so that a crash or a planted symlink can never leave them half-written or redirected.

Every write goes to a fresh temp file in the destination's directory (O_CREAT|O_EXCL|O_NOFOLLOW),
is fsynced, renamed over the destination (a symlink there is replaced, never followed) and the
directory is fsynced. One lock per workdir keeps two istiobuild runs apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from istiobuild.errors import UsageError

LOCK_NAME = ".istiobuild.lock"
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_with(path: Path, mode: int, fill: Callable[[IO[bytes]], object]) -> None:
    """Create a temp file next to `path`, let `fill` write it, fsync, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, _CREATE, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # exactly `mode`, whatever the umask
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Replace `path` with `data` atomically; readers see the old file or the new one, never a mix."""
    payload = data.encode() if isinstance(data, str) else data
    _replace_with(path, mode, lambda fh: fh.write(payload))


def write_json(path: Path, obj: object, mode: int = 0o644) -> None:
    """`obj` as JSON (indent 2, trailing newline), written atomically."""
    write_atomic(path, json.dumps(obj, indent=2) + "\n", mode)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`; None when missing, unreadable, garbage or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def copy_atomic(src: Path, dest: Path, mode: int = 0o644) -> None:
    """Copy `src` (streamed, any size) to `dest` atomically; a symlink at `dest` is replaced."""
    with Path(src).open("rb") as source:
        _replace_with(dest, mode, lambda fh: shutil.copyfileobj(source, fh, 1 << 20))


def ensure_private_dir(path: Path) -> Path:
    """A directory only its owner can enter (0700), created if missing; a symlink is refused."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_symlink() or not path.is_dir():
        raise UsageError(f"{path} must be a directory, not a symlink or a file")
    path.chmod(0o700)
    return path


# ---------------------------------------------------------------------------------------------
# One run per workdir


@dataclasses.dataclass(frozen=True)
class WorkdirLock:
    """A held workdir lock. Pass `fd` to children (Popen(pass_fds=(lock.fd,))) to make them hold
    the lock too, for as long as they live."""

    fd: int
    path: Path


def _usable_workdir(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(
            f"workdir {workdir} is not a directory", hint="choose another --workdir (ISTIOBUILD_WORKDIR)"
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot create workdir {workdir}: {exc.strerror}", hint="choose another --workdir (ISTIOBUILD_WORKDIR)"
        ) from None
    if not workdir.is_dir():
        raise UsageError(f"workdir {workdir} is not a directory", hint="choose another --workdir (ISTIOBUILD_WORKDIR)")


def _open_lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UsageError(
                f"{path} is a symlink; istiobuild does not follow it", hint=f"remove {path} and run again"
            ) from None
        raise UsageError(
            f"cannot write the lock file {path}: {exc.strerror}",
            hint="the workdir must be a writable directory; choose another --workdir (ISTIOBUILD_WORKDIR)",
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UsageError(f"{path} is not a regular file", hint=f"remove {path} and run again")
    return fd


@contextlib.contextmanager
def workdir_lock(workdir: Path, *, inheritable: bool = False) -> Iterator[WorkdirLock]:
    """Only one istiobuild per workdir at a time. Yields the held lock (its `fd` may be passed to
    children; with `inheritable` it is also inherited across a plain fork/exec)."""
    _usable_workdir(workdir)
    path = workdir / LOCK_NAME
    fd = _open_lock(path)
    held = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UsageError(
                f"another istiobuild is already running in {workdir} (pid {holder})",
                hint="wait for it to finish, or use a different --workdir",
            ) from None
        held = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        os.set_inheritable(fd, inheritable)
        yield WorkdirLock(fd=fd, path=path)
    finally:
        if held and not inheritable:  # children may still hold it: leave their pid
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        os.close(fd)  # children given the fd keep holding the lock until they exit

"""Atomic writes that never follow a planted symlink, and the one-run-per-workdir lock."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from istiobuild import fsutil
from istiobuild.errors import UsageError
from istiobuild.fsutil import copy_atomic, read_json_object, workdir_lock, write_atomic, write_json


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_write_atomic_writes_bytes_and_text_with_the_mode(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a", b"\x00bytes", mode=0o600)
    write_atomic(tmp_path / "b", "text\n")
    assert (tmp_path / "a").read_bytes() == b"\x00bytes" and mode_of(tmp_path / "a") == 0o600
    assert (tmp_path / "b").read_text() == "text\n" and mode_of(tmp_path / "b") == 0o644
    write_atomic(tmp_path / "b", "again\n", mode=0o755)  # replaced, not appended; mode as asked
    assert (tmp_path / "b").read_text() == "again\n" and mode_of(tmp_path / "b") == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temp file left


def test_a_symlink_at_the_destination_is_replaced_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    for i, write in enumerate(
        (
            lambda p: write_atomic(p, "new\n"),
            lambda p: write_json(p, {"k": 1}),
            lambda p: copy_atomic(tmp_path / "src", p, 0o755),
        )
    ):
        (tmp_path / "src").write_text("copied\n")
        link = tmp_path / f"link{i}"
        link.symlink_to(victim)
        write(link)
        assert not link.is_symlink() and link.is_file()
        assert victim.read_text() == "precious\n"


def test_write_json_format(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"b": [1, 2], "a": "z"})
    text = (tmp_path / "x.json").read_text()
    assert text == json.dumps({"b": [1, 2], "a": "z"}, indent=2) + "\n"


def test_copy_atomic_streams_and_sets_the_mode(tmp_path: Path) -> None:
    src = tmp_path / "envoy-built"
    src.write_bytes(os.urandom(3 << 20))
    dest = tmp_path / "artifacts" / "envoy"
    dest.parent.mkdir()
    copy_atomic(src, dest, 0o755)
    assert dest.read_bytes() == src.read_bytes() and mode_of(dest) == 0o755
    assert [p.name for p in dest.parent.iterdir()] == ["envoy"]


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    target.write_text("old\n")

    def boom(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(fsutil.os, "fsync", boom)
    with pytest.raises(OSError, match="I/O error"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_read_json_object_treats_garbage_as_absent(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    assert read_json_object(path) is None
    for garbage in (b"\xff\xfe", b"{not json", b"[1, 2]", b'"a string"', b"null"):
        path.write_bytes(garbage)
        assert read_json_object(path) is None
    path.write_text('{"a": 1}')
    assert read_json_object(path) == {"a": 1}
    assert read_json_object(tmp_path) is None  # a directory


def test_one_run_per_workdir_and_the_holder_pid(tmp_path: Path) -> None:
    with workdir_lock(tmp_path) as lock:
        assert (tmp_path / ".istiobuild.lock").read_text() == str(os.getpid())
        assert not os.get_inheritable(lock.fd)
        held = rf"another istiobuild is already running in .* \(pid {os.getpid()}\)"
        with pytest.raises(UsageError, match=held), workdir_lock(tmp_path):
            pass
    with workdir_lock(tmp_path):  # released
        pass


def test_children_given_the_fd_hold_the_lock(tmp_path: Path) -> None:
    with workdir_lock(tmp_path, inheritable=True) as lock:
        assert os.get_inheritable(lock.fd)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(lock.fd,))
    try:
        with pytest.raises(UsageError, match="already running"), workdir_lock(tmp_path):
            pass
    finally:
        child.kill()
        child.wait()
    with workdir_lock(tmp_path):  # the child is gone: free again
        pass


def test_a_symlinked_lock_file_is_refused_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".istiobuild.lock").symlink_to(victim)
    with pytest.raises(UsageError) as err, workdir_lock(work):
        pass
    assert "is a symlink" in err.value.message and "\n" not in err.value.message
    assert victim.read_text() == "precious\n"


def test_a_workdir_that_is_a_file_or_read_only_is_one_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    afile = tmp_path / "afile"
    afile.write_text("")
    for bad in (afile, afile / "below"):
        with pytest.raises(UsageError, match="is not a directory|cannot create workdir"), workdir_lock(bad):
            pass
    real_open = os.open

    def read_only(path: object, flags: int, *args: int) -> int:
        if str(path).endswith(".istiobuild.lock"):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(fsutil.os, "open", read_only)
    readonly = "cannot write the lock file .*Read-only file system"
    with pytest.raises(UsageError, match=readonly), workdir_lock(tmp_path / "ro"):
        pass


def test_stamps_reexports_the_lock() -> None:
    from istiobuild import stamps

    assert stamps.workdir_lock is workdir_lock

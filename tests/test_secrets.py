"""Secrets: stream-safe masking, children's environments, 0600 files, URLs, and the test cache server."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from cacheserver import CacheServer, cache_server, remote_cache
from istiobuild import secrets
from istiobuild.run import run
from istiobuild.secrets import (
    Redactor,
    child_environ,
    redact_url,
    remove_secret_file,
    split_credentials,
    write_secret_file,
)

__all__ = ["remote_cache"]  # the fixture, used below

SECRET = "Bearer s3cr3t-t0ken"


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    secrets.forget_secrets()
    yield
    secrets.forget_secrets()


def _stream(redactor: Redactor, pieces: list[bytes]) -> bytes:
    return b"".join(redactor.feed(p) for p in pieces) + redactor.flush()


# ---------------------------------------------------------------------------------------------
# Redactor


def test_a_secret_split_at_every_position_is_masked() -> None:
    data = b"before " + SECRET.encode() + b" after"
    for cut in range(len(data) + 1):
        out = _stream(Redactor([SECRET]), [data[:cut], data[cut:]])
        assert out == b"before *** after", cut


def test_a_secret_fed_one_byte_at_a_time_is_masked() -> None:
    data = (b"x" * 7 + SECRET.encode()) * 5 + b"tail"
    out = _stream(Redactor([SECRET]), [bytes([b]) for b in data])
    assert out == b"xxxxxxx***" * 5 + b"tail"


def test_several_overlapping_and_adjacent_secrets() -> None:
    redactor = Redactor(["abcd", "cdef", "zz"])
    data = b"1abcdef2 abcdabcd 3zzz4"
    for cut in range(len(data) + 1):
        out = _stream(redactor, [data[:cut], data[cut:]])
        assert out == b"1***2 *** 3***4", cut  # every byte of every occurrence masked, runs collapsed
    assert redactor.text("x cdef abcd y") == "x *** *** y"


def test_holds_back_no_more_than_it_must() -> None:
    redactor = Redactor([SECRET])
    out = redactor.feed(b"a" * 100)
    assert out == b"a" * (100 - (len(SECRET) - 1))
    assert redactor.flush() == b"a" * (len(SECRET) - 1)
    assert Redactor([]).feed(b"abc") == b"abc" and not Redactor(["", ""])


def test_a_partial_secret_is_not_masked() -> None:
    assert _stream(Redactor([SECRET]), [SECRET[:-1].encode()]) == SECRET[:-1].encode()


def test_unicode_secrets_and_text() -> None:
    redactor = Redactor(["pässwörd"])
    data = "user pässwörd end".encode()
    for cut in range(len(data) + 1):
        assert _stream(redactor, [data[:cut], data[cut:]]) == b"user *** end"
    assert redactor.text("pässwörd") == "***"


# ---------------------------------------------------------------------------------------------
# children's environment


def test_child_environ_policy() -> None:
    secrets.register_secret("hunter2-registered")
    environ = {
        "PATH": "/usr/bin",
        "ISTIOBUILD_REMOTE_HEADER": "x: y",
        "ISTIOBUILD_REMOTE_CACHE": "https://u:p@cache",
        "GIT_DIR": "/x",
        "HOLDS_REGISTERED": "prefix-hunter2-registered",
        "HOLDS_PASSED": "passed-secret-here",
        "KEEP": "yes",
    }
    assert child_environ(environ, ["passed-secret"]) == {"PATH": "/usr/bin", "KEEP": "yes"}


def test_a_short_secret_hides_only_an_exact_value() -> None:
    environ = {"HOME": "/root", "PATH": "/root/bin:/usr/bin", "CACHE_USER": "root", "PW": "pw-12"}
    assert child_environ(environ, ["root", "pw-12"]) == {"HOME": "/root", "PATH": "/root/bin:/usr/bin"}


def test_run_children_never_see_istiobuild_variables_or_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTIOBUILD_REMOTE_HEADER", "X-Token=abc")
    monkeypatch.setenv("ISTIOBUILD_REMOTE_CACHE", "https://user:pw@cache.example")
    monkeypatch.setenv("GIT_DIR", "/nonexistent")
    monkeypatch.setenv("SOME_TOKEN", "zz-registered-secret-zz")
    monkeypatch.setenv("OTHER_TOKEN", "yy-passed-secret-yy")
    monkeypatch.setenv("KEEP_ME", "yes")
    secrets.register_secret("registered-secret")
    out = run(["env"], capture=True, secrets=["passed-secret"], env={"EXPLICIT": "1"}).stdout
    names = {line.split("=", 1)[0] for line in out.splitlines()}
    assert {"KEEP_ME", "EXPLICIT", "PATH"} <= names
    assert not names & {"ISTIOBUILD_REMOTE_HEADER", "ISTIOBUILD_REMOTE_CACHE", "GIT_DIR", "SOME_TOKEN", "OTHER_TOKEN"}
    assert "user:pw" not in out and "X-Token" not in out


def test_registered_secrets_are_masked_in_every_run(tmp_path: Path) -> None:
    secrets.register_secret("reg1stered-secret")
    log = tmp_path / "r.log"
    run([sys.executable, "-c", "import sys; print(sys.argv[1])", "reg1stered-secret"], log=log)
    assert "reg1stered" not in log.read_text()
    assert log.read_text().count("***") == 2  # the command line and the output


# ---------------------------------------------------------------------------------------------
# secret files


def test_write_secret_file_modes_and_content(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "rc"
    assert write_secret_file(path, "build --remote_header=x\n") == path
    assert path.read_text() == "build --remote_header=x\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    write_secret_file(path, "second\n")
    assert path.read_text() == "second\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["rc"]  # no temp file left behind
    remove_secret_file(path)
    remove_secret_file(path)  # gone already: fine
    assert not path.exists()


def test_write_secret_file_under_a_restrictive_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        path = write_secret_file(tmp_path / "d" / "rc", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "x"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_write_secret_file_replaces_a_symlink_without_following_it(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_text("untouched")
    target.chmod(0o644)
    path = tmp_path / "rc"
    path.symlink_to(target)
    write_secret_file(path, "secret")
    assert not path.is_symlink() and path.read_text() == "secret"
    assert target.read_text() == "untouched" and stat.S_IMODE(target.stat().st_mode) == 0o644
    path.unlink()
    path.symlink_to(target)
    remove_secret_file(path)
    assert not path.is_symlink() and target.read_text() == "untouched"


def test_existing_parent_directory_mode_is_left_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    write_secret_file(tmp_path / "rc", "x")
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755


# ---------------------------------------------------------------------------------------------
# URLs


@pytest.mark.parametrize(
    ("url", "bare", "userinfo", "shown"),
    [
        (
            "https://u:p@cache.example:8080/a?b#c",
            "https://cache.example:8080/a?b#c",
            "u:p",
            "https://***@cache.example:8080/a?b#c",
        ),
        ("grpcs://token@host", "grpcs://host", "token", "grpcs://***@host"),
        ("https://u:p%40x@host/x@y", "https://host/x@y", "u:p%40x", "https://***@host/x@y"),
        ("https://host/path@notuser", "https://host/path@notuser", "", "https://host/path@notuser"),
        ("https://host?q=a@b", "https://host?q=a@b", "", "https://host?q=a@b"),
        ("/local/dir", "/local/dir", "", "/local/dir"),
        ("", "", "", ""),
    ],
)
def test_url_credentials(url: str, bare: str, userinfo: str, shown: str) -> None:
    assert split_credentials(url) == (bare, userinfo)
    assert redact_url(url) == shown


# ---------------------------------------------------------------------------------------------
# the test cache server (tests/cacheserver.py)


@pytest.mark.slow
def test_cache_server_requires_the_header(remote_cache: CacheServer) -> None:
    url, name, value, access_log, root = remote_cache
    headers = {name: value}
    blob = os.urandom(3 << 20)  # bigger than nginx's default body limit
    put = requests.put(f"{url}/cas/abc123", data=blob, headers=headers, timeout=10)
    assert put.status_code in (200, 201, 204)
    assert (root / "cas" / "abc123").read_bytes() == blob
    got = requests.get(f"{url}/cas/abc123", headers=headers, timeout=10)
    assert got.status_code == 200 and got.content == blob
    assert requests.get(f"{url}/ac/missing", headers=headers, timeout=10).status_code == 404
    assert requests.get(f"{url}/cas/abc123", timeout=10).status_code == 401
    assert requests.put(f"{url}/cas/other", data=b"x", timeout=10).status_code == 401
    assert requests.get(f"{url}/cas/abc123", headers={name: value + "x"}, timeout=10).status_code == 401
    assert not (root / "cas" / "other").exists()
    log = access_log.read_text()
    assert '"PUT /cas/abc123' in log and " 401 " in log and value not in log


@pytest.mark.slow
def test_cache_server_with_basic_auth(tmp_path: Path) -> None:
    with cache_server(tmp_path, basic_auth=("builder", "pa55word")) as cache:
        bare, userinfo = split_credentials(cache.url)
        assert userinfo == "builder:pa55word"
        headers = {cache.header_name: cache.header_value}
        auth = ("builder", "pa55word")
        assert requests.put(f"{bare}/ac/k", data=b"v", headers=headers, auth=auth, timeout=10).status_code in (201, 204)
        assert requests.get(f"{bare}/ac/k", headers=headers, auth=auth, timeout=10).content == b"v"
        assert requests.get(f"{bare}/ac/k", headers=headers, timeout=10).status_code == 401
        assert requests.get(f"{bare}/ac/k", auth=auth, timeout=10).status_code == 401
        assert requests.get(cache.url + "/ac/k", headers=headers, timeout=10).status_code == 200  # URL credentials
        pidfile = tmp_path / "nginx.pid"
        pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]

"""Secrets: masking them in streamed output, keeping them out of children's environments, 0600 files, URLs.

A secret is a string that must never reach a log, the screen, a child's environment or argv: a bazel
--remote_header, the credentials in a cache or mirror URL. Values registered with `register_secret`
are masked by every `run()` and dropped from every child's environment, on top of the ones a caller
passes explicitly.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import AnyStr

MASK = "***"
# Variables never passed to a child: istiobuild's own settings (they may hold a remote header or a
# cache URL with credentials) and git's (they would redirect git).
_DROPPED_PREFIXES = ("ISTIOBUILD_", "GIT_")

_SUBSTRING_MIN = 8  # shorter secrets hide only a variable that is exactly the secret

_lock = threading.Lock()
_registered: set[str] = set()


def register_secret(*values: str) -> None:
    """Mask these values in every run() from now on and keep them out of every child's environment."""
    with _lock:
        _registered.update(v for v in values if v)


def registered_secrets() -> tuple[str, ...]:
    with _lock:
        return tuple(sorted(_registered))


def forget_secrets() -> None:
    """Drop every registered secret (for tests, and between independent builds in one process)."""
    with _lock:
        _registered.clear()


def _spans(haystack: AnyStr, needles: Iterable[AnyStr]) -> list[tuple[int, int]]:
    """The merged [start, end) ranges of haystack covered by any occurrence of any needle (overlaps too)."""
    found: list[tuple[int, int]] = []
    for needle in needles:
        start = haystack.find(needle)
        while start >= 0:
            found.append((start, start + len(needle)))
            start = haystack.find(needle, start + 1)
    found.sort()
    merged: list[tuple[int, int]] = []
    for start, end in found:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


class Redactor:
    """Masks secrets in a byte stream fed in arbitrary pieces, and in whole strings.

    `feed` holds back the last max(len(secret)) - 1 bytes (and remembers as many already-emitted
    bytes as context), so a secret split across any number of pieces is still masked. Every byte
    covered by an occurrence of any secret is masked; a run of masked bytes becomes one "***", even
    when the run continues into the next piece.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        texts = sorted({s for s in secrets if s}, key=len, reverse=True)
        self.secrets: tuple[str, ...] = tuple(texts)
        self._needles = tuple(s.encode() for s in texts)
        self._hold = max((len(n) for n in self._needles), default=1) - 1
        self._context = b""  # the last emitted bytes, raw: an occurrence may start in them
        self._pending = b""  # bytes not emitted yet, raw: at most self._hold of them
        self._in_mask = False  # the last emitted byte was masked

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def feed(self, data: bytes) -> bytes:
        """The redacted bytes that are final now; up to max(len(secret)) - 1 bytes stay pending."""
        if not self._needles:
            return data
        return self._emit(self._context + self._pending + data, final=False)

    def flush(self) -> bytes:
        """The rest of the stream, redacted; the redactor is then ready for a new stream."""
        if not self._needles:
            return b""
        out = self._emit(self._context + self._pending, final=True)
        self._context, self._pending, self._in_mask = b"", b"", False
        return out

    def text(self, text: str) -> str:
        """A whole string with every secret masked."""
        if not self.secrets:
            return text
        out: list[str] = []
        pos = 0
        for start, end in _spans(text, self.secrets):
            out += [text[pos:start], MASK]
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def _emit(self, buf: bytes, *, final: bool) -> bytes:
        base = len(self._context)
        cut = len(buf) if final else len(buf) - self._hold
        if cut <= base:
            self._pending = buf[base:]
            return b""
        out: list[bytes] = []
        pos = base
        for found_start, found_end in _spans(buf, self._needles):
            if found_end <= base or found_start >= cut:
                continue
            start, end = max(found_start, base), min(found_end, cut)
            if start > pos:
                out.append(buf[pos:start])
                self._in_mask = False
            if not (self._in_mask and start == base):
                out.append(MASK.encode())
            self._in_mask = True
            pos = end
        if pos < cut:
            out.append(buf[pos:cut])
            self._in_mask = False
        self._context = buf[max(0, cut - self._hold) : cut]
        self._pending = buf[cut:]
        return b"".join(out)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """text with the given and the registered secrets masked."""
    return Redactor((*secrets, *registered_secrets())).text(text)


def child_environ(environ: Mapping[str, str], secrets: Iterable[str] = ()) -> dict[str, str]:
    """The environment a child may see: no ISTIOBUILD_* or GIT_* variable, nor any whose value holds a secret.

    The secrets are the registered ones plus `secrets`. A secret shorter than 8 characters (a user
    name that is part of URL credentials, say "root") drops only a variable whose whole value it is:
    as a substring it would drop HOME=/root and PATH=/root/bin too.
    """
    hidden = tuple(s for s in (*registered_secrets(), *secrets) if s)
    return {
        name: value
        for name, value in environ.items()
        if not name.startswith(_DROPPED_PREFIXES) and not any(_holds(value, s) for s in hidden)
    }


def _holds(value: str, secret: str) -> bool:
    return secret in value if len(secret) >= _SUBSTRING_MIN else value == secret


def write_secret_file(path: Path, text: str) -> Path:
    """Write text to path, mode 0600, atomically; never through a symlink at path (it is replaced).

    The parent directory is created 0700 when missing. Returns path.
    """
    parent = path.parent
    if not parent.is_dir():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        parent.chmod(0o700)
    tmp = parent / f".{path.name}.{os.getpid()}.{os.urandom(6).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            data = text.encode()
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.rename(path)  # replaces a symlink at path itself, never its target
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(parent)
    return path


def remove_secret_file(path: Path) -> None:
    """Remove a file written by write_secret_file (a symlink there is removed, not followed)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def split_credentials(url: str) -> tuple[str, str]:
    """(url without its userinfo, the userinfo or ""): "https://u:p@host/x" -> ("https://host/x", "u:p")."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url, ""
    head, rest = url[: scheme_end + 3], url[scheme_end + 3 :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc = rest[:end]
    if "@" not in netloc:
        return url, ""
    userinfo, host = netloc.rsplit("@", 1)
    return head + host + rest[end:], userinfo


def redact_url(url: str) -> str:
    """The URL with its credentials masked: "https://u:p@host/x" -> "https://***@host/x"."""
    bare, userinfo = split_credentials(url)
    if not userinfo:
        return url
    scheme_end = bare.find("://") + 3
    return f"{bare[:scheme_end]}{MASK}@{bare[scheme_end:]}"

"""The grammar of every user value, checked before the first stage runs.

User values end up in make variables (which make hands to `sh`), bazel flags, git's argv and
docker references. `validate` checks each setting against its grammar; a bad value is one
ConfigError line naming the setting, the value (secrets never shown), why, and what to do.
The `check_*` helpers return the (normalised) value and are meant for reuse (`verify --image`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from istiobuild.arch import Arch
from istiobuild.errors import ConfigError

if TYPE_CHECKING:
    from istiobuild.config import Settings

ENV_PREFIX = "ISTIOBUILD_"
ENV_SOURCE = "environment (ISTIOBUILD_*)"  # Layer.source of the ISTIOBUILD_* environment
CLI_SOURCE = "command line"  # Layer.source of the command-line flags
PAGE_SIZES = ("auto", "4k", "64k")
REPOSITORY_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
CACHE_SCHEMES = frozenset({"http", "https", "grpc", "grpcs"})
MAX_REFERENCE = 255  # docker: a whole reference <hub>/<name>:<tag>
MAX_TAG = 120  # docker allows 128; images are tagged <tag>-arm64 / <tag>-amd64
ARCH_SUFFIX = "-arm64"  # the longer of the per-arch tag suffixes
IMAGE_NAME_ROOM = 40  # room left for an image name after the hub (istio's longest is ~25)
MAX_JOBS = 1024
HEAP_MIB = (512, 256 * 1024)  # jvm_heap bounds, 512m .. 256g
_VALUE_SHOWN = 80  # longer values are cut in messages

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")  # docker's [-]*, without the backtracking
_DNS_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*", re.I)
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_SAFE_PATH_CHAR = re.compile(r"[A-Za-z0-9_./+@%:,=-]")
_PROGRAM_CHAR = re.compile(r"[A-Za-z0-9_./+-]")
_JVM_HEAP = re.compile(r"([1-9][0-9]*)([mMgG])")
# The brief's x.y.z[-suffix], plus "4" and "4.2": .bazelversion files (and the release data) say "4".
_BAZEL_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+){0,2}(?:-[A-Za-z0-9.]+)?")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_TRANSPORT = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.S)
_USERINFO_CHAR = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:-]")
_SHELL_SAFE_URL_CHAR = re.compile(r"[A-Za-z0-9._~%/+=,:@-]")
_VISIBLE_CHAR = re.compile(r"[!-~]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CHAR_NAMES = {" ": "a space", "\n": "a newline", "\t": "a tab", "\r": "a carriage return", "\x00": "a NUL byte"}


# ---------------------------------------------------------------------------------------------
# Messages


def redact(text: str) -> str:
    """`text` without credentials: https://user:token@host/x -> https://***@host/x.

    Errs on the side of hiding: with a scheme, everything up to the last '@' goes; without one
    (user:password@host), too, but an scp-like git@host:path keeps its user.
    """
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    at = rest.rfind("@")
    if at < 0 or (not sep and ":" not in rest[:at]):
        return text
    return f"{scheme}{sep}***@{rest[at + 1 :]}"


def setting_name(key: str, source: str | None = None, sub: str = "") -> str:
    """How a user spells a setting where it was set: --hub, ISTIOBUILD_HUB, hub in istiobuild.toml."""
    dotted = f"{key}.{sub}" if sub else key
    if source == ENV_SOURCE:
        return ENV_PREFIX + dotted.replace(".", "_").upper()
    if source == CLI_SOURCE:
        return "--" + dotted.replace("_", "-")
    return f"{dotted} in {source}" if source else dotted


def _show(value: str, *, secret: bool = False) -> str:
    if secret:
        return "(value hidden)"
    shown = redact(value)
    return repr(shown if len(shown) <= _VALUE_SHOWN else shown[: _VALUE_SHOWN - 3] + "...")


def _fail(what: str, value: str, why: str, fix: str, *, secret: bool = False) -> ConfigError:
    """One line: what, the value, why it is wrong, what to do."""
    return ConfigError(f"{what} {_show(value, secret=secret)} {why}; {fix}")


def _describe(char: str) -> str:
    if char in _CHAR_NAMES:
        return _CHAR_NAMES[char]
    if _CONTROL.fullmatch(char):
        return f"a control character ({char!r})"
    return f"{char!r}"


def _bad_char(text: str, allowed: re.Pattern[str]) -> str | None:
    """What the first character outside `allowed` is ("a space", "';'"), None if there is none."""
    for char in text:
        if not allowed.fullmatch(char):
            # a character of the hidden part (credentials) is not named
            return _describe(char) if char in redact(text) else "a character not allowed in its credentials"
    return None


# ---------------------------------------------------------------------------------------------
# Docker references


def _split_host(hostport: str) -> tuple[str, str, str]:
    """(host, ":" or "", port) of host[:port], where host may be [IPv6]."""
    if hostport.startswith("[") and "]" in hostport:
        end = hostport.index("]") + 1
        host, rest = hostport[:end], hostport[end:]
        return (host, rest[:1], rest[1:]) if rest.startswith(":") or not rest else (hostport, "", "")
    return hostport.partition(":")


def _host_problem(hostport: str, *, allow_empty: bool = False) -> str | None:
    host, colon, port = _split_host(hostport)
    if not host:
        return None if allow_empty and not colon else "has no host name"
    if _IPV4.fullmatch(host) and any(int(octet) > 255 for octet in host.split(".")):
        return f"has an invalid IPv4 address {host!r}"
    if not (_DNS_NAME.fullmatch(host) or _IPV6.fullmatch(host)):
        return f"has an invalid host name {host!r}"
    if colon and not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        return f"has an invalid port {port!r}"
    return None


def _component_problem(part: str) -> str:
    bad = _bad_char(part, re.compile(r"[a-z0-9._-]"))
    if part and bad == "':'":
        return "has a tag (':...'): give it separately"
    if bad:
        return f"contains {bad}"
    if not part:
        return "has an empty path component ('//')"
    return f"has an invalid path component {part!r} (it must start and end with a letter or digit)"


def _name_problem(name: str) -> str | None:
    """Why `name` is not a docker repository name ([domain/]path), or None."""
    shape = (
        (not name, "is empty"),
        (name != name.lower(), "has upper case letters (docker repository names are lower case)"),
        (name.endswith("/"), "ends with '/'"),
        ("@" in name, "has a digest ('@...'), which a repository name cannot have"),
    )
    problem = next((why for wrong, why in shape if wrong), None)
    parts = name.split("/")
    if not problem and len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        problem = _host_problem(parts.pop(0))
    return problem or next((_component_problem(p) for p in parts if not _PATH_COMPONENT.fullmatch(p)), None)


def _reference_problem(text: str) -> str | None:
    """Why `text` is not a docker reference name[:tag][@sha256:<hex>], or None."""
    name, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return "has an invalid digest (it must be @sha256: and 64 lower-case hex digits)"
    head, slash, last = name.rpartition("/")
    last, colon, tag = last.partition(":")
    if colon and not _TAG.fullmatch(tag):
        bad = _bad_char(tag, re.compile(r"[A-Za-z0-9_.-]"))
        return f"has an invalid tag {tag!r}" + (f" (it contains {bad})" if bad else "")
    problem = _name_problem(head + slash + last)
    if problem:
        return problem
    if len(name) > MAX_REFERENCE:
        return f"is longer than {MAX_REFERENCE} characters"
    return None


def is_docker_reference(text: str) -> bool:
    """Whether `text` is a docker reference name[:tag][@sha256:<64 hex>] (name lower case)."""
    return _reference_problem(text) is None


def check_image_reference(text: str, what: str) -> str:
    problem = _reference_problem(text)
    if problem:
        raise _fail(
            what,
            text,
            f"is not a docker image reference: it {problem}",
            "write it as NAME[:TAG][@sha256:HEX], e.g. docker.io/library/debian:bookworm-slim",
        )
    return text


def check_hub(text: str, what: str = "hub", *, tag: str = "") -> str:
    """A repository prefix the images are named under: <hub>/<name>:<tag>-<arch> (`tag` "" = any)."""
    last = text.rsplit("/", 1)[-1]
    if "@" in text:
        raise _fail(
            what, text, "is not a docker repository prefix: it has a digest ('@...')", "name the repository only"
        )
    if ":" in last and ("/" in text or not last.partition(":")[2].isdigit()):
        raise _fail(what, text, "is not a docker repository prefix: it has a tag (':...')", "give the tag with --tag")
    problem = "ends with '/'" if text.endswith("/") else _name_problem(f"{text}/x")
    if problem:
        raise _fail(
            what,
            text,
            f"is not a docker repository prefix: it {problem}",
            "give lower-case letters, digits, '.', '_', '-' and '/', e.g. docker.io/istio or 127.0.0.1:5000/istio",
        )
    longest = f"{text}/{'x' * IMAGE_NAME_ROOM}:{tag or 'x' * 16}{ARCH_SUFFIX}"
    if len(longest) > MAX_REFERENCE:
        why = f"is too long: image references <hub>/<name>:<tag>{ARCH_SUFFIX} would pass {MAX_REFERENCE} characters"
        raise _fail(what, text, why, "use a shorter hub or tag")
    return text


def check_tag(text: str, what: str = "tag") -> str:
    """A docker tag, short enough for the -<arch> suffix."""
    if len(text) > MAX_TAG:
        why = f"is {len(text)} characters: images are tagged <tag>{ARCH_SUFFIX}, so at most {MAX_TAG}"
        raise _fail(what, text, why, "use a shorter tag")
    if not _TAG.fullmatch(text):
        bad = _bad_char(text, re.compile(r"[A-Za-z0-9_.-]"))
        why = f"contains {bad}" if bad else "must start with a letter, digit or '_'"
        raise _fail(what, text, f"is not a docker tag: it {why}", "use letters, digits, '_', '.' and '-', e.g. 1.5.0")
    return text


# ---------------------------------------------------------------------------------------------
# URLs and repositories


def _url_problem(text: str, schemes: Collection[str], path_chars: re.Pattern[str]) -> str | None:
    match = _SCHEME.fullmatch(text)
    if match is None:
        return "has no scheme (SCHEME://...)"
    scheme, rest = match.groups()
    if scheme not in schemes:
        hint = " (write it in lower case)" if scheme.lower() in schemes else ""
        return f"has scheme {scheme!r}{hint}; allowed: {', '.join(sorted(schemes))}"
    authority, _, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    encode = "has credentials with a character that must be percent-encoded ('/' is %2F, '@' is %40)"
    if at and (not userinfo or _bad_char(userinfo, _USERINFO_CHAR)):
        return encode
    problem = _host_problem(hostport, allow_empty=scheme == "file")
    if problem:
        return encode if "@" in path else problem  # user:pa/ss@host: say nothing of the password
    bad = _bad_char(path, path_chars)
    return f"contains {bad} in its path" if bad else None


def _common_problem(text: str) -> str | None:
    """What no value handed to git, bazel or a shell may have: a leading '-', whitespace, control characters."""
    if text.startswith("-"):
        return "starts with '-' (a program would read it as an option)"
    bad = _bad_char(text, _VISIBLE_CHAR)
    return f"contains {bad}" if bad else None


def check_url(text: str, what: str, schemes: Collection[str] = CACHE_SCHEMES, *, shell_safe: bool = True) -> str:
    """A URL with one of `schemes`; credentials allowed (never shown); `shell_safe`: a path a shell leaves alone."""
    path_chars = _SHELL_SAFE_URL_CHAR if shell_safe else _VISIBLE_CHAR
    leading = "starts with '-' (a program would read it as an option)" if text.startswith("-") else None
    problem = leading or _url_problem(text, schemes, path_chars) or _common_problem(text)
    if problem:
        raise _fail(
            what,
            text,
            f"is not a usable URL: it {problem}",
            f"give {'|'.join(sorted(schemes))}://[USER:TOKEN@]HOST[:PORT][/PATH]",
        )
    return text


def _repository_problem(text: str) -> str | None:
    if _TRANSPORT.match(text):
        return f"uses git's remote-helper form {text.split('::', 1)[0] + '::'!r}, which can run commands"
    problem = _common_problem(text)
    if problem:
        return problem
    if "://" in text:
        return _url_problem(text, REPOSITORY_SCHEMES, _VISIBLE_CHAR)
    colon, slash = text.find(":"), text.find("/")
    if colon > 0 and (slash < 0 or colon < slash):  # git reads [user@]host:path as ssh
        user, at, host = text[:colon].rpartition("@")
        if at and (not user or _bad_char(user, re.compile(r"[A-Za-z0-9._~%+-]"))):
            return "has an invalid user before '@'"
        return _host_problem(host) or (None if text[colon + 1 :] else "has no path after ':'")
    return None


def check_repository(text: str, what: str) -> str:
    """A git repository: https/http/ssh/git/file URL, [user@]host:path, or a local path."""
    problem = _repository_problem(text)
    if problem:
        raise _fail(
            what,
            text,
            f"is not a repository URL or path: it {problem}",
            "give an https://, ssh://, git:// or file:// URL, user@host:path, or a directory",
        )
    return text


# ---------------------------------------------------------------------------------------------
# Paths


def check_path_text(text: str, what: str) -> str:
    """A path a program can be handed: no leading '-', no control characters (NUL, newline)."""
    if text.startswith("-"):
        raise _fail(
            what,
            text,
            "starts with '-' (a program would read it as an option)",
            "write ./" + text + " or an absolute path",
        )
    bad = _bad_char(text, re.compile(r"[^\x00-\x1f\x7f]"))
    if bad:
        raise _fail(what, text, f"contains {bad}", "choose a path without control characters")
    return text


def check_safe_path(text: str, what: str) -> str:
    """A path that survives make and a shell: letters, digits and _ . / + @ % : , = - only."""
    check_path_text(text, what)
    bad = _bad_char(text, _SAFE_PATH_CHAR)
    if bad:
        raise _fail(
            what,
            text,
            f"contains {bad}: upstream Makefiles pass it through a shell",
            "choose a path of letters, digits and _ . / + @ % : , = - only",
        )
    return text


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and not probe.is_symlink() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable_dir(path: Path, what: str) -> Path:
    """`path` is a writable directory, or can be created as one."""
    try:
        probe = _nearest_existing(path)
        if probe == path and not path.is_dir():
            kind = "is a file" if path.is_file() else "is not a directory"
            raise _fail(what, str(path), kind, "remove it, or choose a directory")
        if probe != path and not probe.is_dir():
            raise _fail(what, str(path), f"cannot be created: {probe} is not a directory", "choose another directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            where = "is read-only" if probe == path else f"cannot be created: {probe} is read-only"
            raise _fail(what, str(path), where, "make it writable, or choose another directory")
    except OSError as exc:
        raise _fail(what, str(path), f"cannot be checked ({exc.strerror})", "choose another directory") from None
    return path


# ---------------------------------------------------------------------------------------------
# Numbers, programs, versions, headers


def check_jobs(value: int, what: str = "jobs") -> int:
    if not 0 <= value <= MAX_JOBS:
        why = "is beyond any machine" if value > MAX_JOBS else "is negative"
        raise ConfigError(f"{what} {value} {why}; use 1..{MAX_JOBS}, or 0 to derive it from cores and memory")
    return value


def check_jvm_heap(text: str, what: str = "jvm_heap") -> str:
    fix = "give a size like 3g or 2048m, between 512m and 256g"
    match = _JVM_HEAP.fullmatch(text)
    if match is None:
        raise _fail(what, text, "is not a heap size", fix)
    number, unit = int(match.group(1)), match.group(2).lower()
    mib = number * 1024 if unit == "g" else number
    if not HEAP_MIB[0] <= mib <= HEAP_MIB[1]:
        raise _fail(what, text, "is too small for bazel" if mib < HEAP_MIB[0] else "is beyond any machine", fix)
    return text


def check_program(text: str, what: str) -> str:
    """A program name found on PATH, or an absolute path."""
    fix = "give a program name on PATH or an absolute path (letters, digits and _ . / + - only)"
    bad = _bad_char(text, _PROGRAM_CHAR)
    problem = _common_problem(text) if text.startswith("-") or not bad else f"contains {bad}"
    if problem:
        raise _fail(what, text, problem, fix)
    if "/" in text and not text.startswith("/"):
        raise _fail(what, text, "is a relative path (it would depend on the directory a step runs in)", fix)
    return text


def check_bazel_version(text: str, what: str = "bazel_version") -> str:
    if not _BAZEL_VERSION.fullmatch(text):
        raise _fail(what, text, "is not a bazel version", "give one like 2.0.0 (or 2.0.0-rc1)")
    return text


def check_page_size(text: str, what: str = "page_size") -> str:
    """auto, 4k or 64k, in any case; returns it lower case."""
    value = text.strip().lower()
    if value not in PAGE_SIZES:
        raise _fail(what, text, "is not a page size", f"use one of {', '.join(PAGE_SIZES)}")
    return value


def check_remote_header(text: str, what: str = "remote_header") -> str:
    """A bazel --remote_header NAME=VALUE. A secret: the value is never shown."""
    name, eq, _ = text.partition("=")
    if not eq or not _HEADER_NAME.fullmatch(name):
        raise _fail(what, text, "is not NAME=VALUE", "give it as NAME=VALUE, e.g. x-api-key=TOKEN", secret=True)
    if _CONTROL.search(text):
        raise _fail(what, text, "contains a newline or a control character", "give it on one line", secret=True)
    return text


# ---------------------------------------------------------------------------------------------
# All settings


@dataclasses.dataclass(frozen=True)
class _Names:
    origin: Mapping[str, str]

    def __call__(self, key: str, sub: str = "") -> str:
        return setting_name(key, self.origin.get(key), sub)


def _validate_images(settings: Settings, name: _Names) -> None:
    if settings.tag:
        check_tag(settings.tag, name("tag"))
    check_hub(settings.hub, name("hub"), tag=settings.tag)
    if settings.builder:
        check_image_reference(settings.builder, name("builder"))
    arches = [a.value for a in Arch]
    for arch, table in settings.base_images.items():
        where = name("base_images", arch)
        if arch not in arches:
            raise _fail(
                name("base_images"), arch, "is not an arch", f"use base_images.{' or base_images.'.join(arches)}"
            )
        for image, replacement in table.items():
            check_image_reference(image, f"image name under {where}")
            check_image_reference(replacement, f"replacement for {image!r} under {where}")


def _validate_paths(settings: Settings, name: _Names) -> None:
    for key, path in (("workdir", settings.workdir), ("cache_dir", settings.cache_dir)):
        if path is not None:
            check_safe_path(str(path), name(key))
            check_writable_dir(path, name(key))
    if settings.downloads:
        check_path_text(settings.downloads, name("downloads"))


def _validate_build(settings: Settings, name: _Names) -> None:
    check_jobs(settings.jobs, name("jobs"))
    check_jvm_heap(settings.jvm_heap, name("jvm_heap"))
    for key in ("gn", "ninja", "bazel"):
        check_program(getattr(settings, key), name(key))
    if settings.bazel_version:
        check_bazel_version(settings.bazel_version, name("bazel_version"))
    check_page_size(settings.page_size, name("page_size"))
    if settings.remote_cache:
        check_url(settings.remote_cache, name("remote_cache"), CACHE_SCHEMES)
    if settings.remote_header:
        check_remote_header(settings.remote_header, name("remote_header"))


def validate(settings: Settings, *, origin: Mapping[str, str] | None = None) -> None:
    """Check every setting against its grammar; raise a one-line ConfigError for the first bad one.

    `origin` (key -> layer source, as `config.resolve` returns it) names a setting the way the
    user wrote it: --hub, ISTIOBUILD_HUB, hub in istiobuild.toml. release, arch and toolchain
    are checked where they are parsed (release.get, arch.parse_arch, toolchain.get).
    """
    name = _Names(origin or {})
    _validate_paths(settings, name)
    if settings.mirror:
        check_repository(settings.mirror, name("mirror"))
    for component, url in settings.repos.items():
        check_repository(url, name("repos", component))
    _validate_images(settings, name)
    _validate_build(settings, name)

"""The grammar of the values istiobuild hands to docker, git and make: docker references, tags, URLs.

Each `check_*` returns the value or raises a one-line ConfigError naming the setting, the value
(credentials never shown), why, and what to do. `validate` applies them to every setting.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from istiobuild.errors import ConfigError

ENV_PREFIX = "ISTIOBUILD_"
ENV_SOURCE = "environment (ISTIOBUILD_*)"  # Layer.source of the ISTIOBUILD_* environment
CLI_SOURCE = "command line"  # Layer.source of the command-line flags
REPOSITORY_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
CACHE_SCHEMES = frozenset({"http", "https", "grpc", "grpcs"})
EXECUTOR_SCHEMES = frozenset({"grpc", "grpcs"})  # bazel --remote_executor (REAPI over gRPC)
MAX_REFERENCE = 255  # docker: a whole reference <hub>/<name>:<tag>
MAX_TAG = 120  # docker allows 128; images are tagged <tag>-arm64 / <tag>-amd64
ARCH_SUFFIX = "-arm64"  # the longer of the per-arch tag suffixes
IMAGE_NAME_ROOM = 40  # room left for an image name after the hub (istio's longest is ~25)
_VALUE_SHOWN = 80  # longer values are cut in messages
_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")  # docker's [-]*, without the backtracking
_DNS_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*", re.I)
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_TRANSPORT = re.compile(r"[A-Za-z0-9][A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.S)
_USERINFO_CHAR = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:-]")
_SHELL_SAFE_URL_CHAR = re.compile(r"[A-Za-z0-9._~%/+=,:@-]")
_VISIBLE_CHAR = re.compile(r"[!-~]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
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


def show(value: str, *, secret: bool = False) -> str:
    if secret:
        return "(value hidden)"
    shown = redact(value)
    return repr(shown if len(shown) <= _VALUE_SHOWN else shown[: _VALUE_SHOWN - 3] + "...")


def fail(what: str, value: str, why: str, fix: str, *, secret: bool = False) -> ConfigError:
    """One line: what, the value, why it is wrong, what to do."""
    return ConfigError(f"{what} {show(value, secret=secret)} {why}; {fix}")


def _describe(char: str) -> str:
    if char in _CHAR_NAMES:
        return _CHAR_NAMES[char]
    if CONTROL.fullmatch(char):
        return f"a control character ({char!r})"
    return f"{char!r}"


def bad_char(text: str, allowed: re.Pattern[str]) -> str | None:
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
    bad = bad_char(part, re.compile(r"[a-z0-9._-]"))
    if part and bad == "':'":
        return "has a tag (':...'): give it separately"
    if bad:
        return f"contains {bad}"
    if not part:
        return "has an empty path component ('//')"
    return f"has an invalid path component {part!r} (it must start and end with a letter or digit)"


def _name_problem(name: str) -> str | None:
    """Why `name` is not a docker repository name ([domain/]path), or None."""
    parts = name.split("/")
    domain = len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost")
    path = "/".join(parts[1:] if domain else parts)  # a registry host may have upper case, the path not
    shape = (
        (not name, "is empty"),
        (path != path.lower(), "has upper case letters (docker repository names are lower case)"),
        (name.endswith("/"), "ends with '/'"),
        ("@" in name, "has a digest ('@...'), which a repository name cannot have"),
    )
    problem = next((why for wrong, why in shape if wrong), None)
    if not problem and domain:
        host = parts.pop(0)
        problem = _host_problem(host)
        if not problem and host.startswith("["):  # docker 20.10's reference grammar has no IPv6 literal
            problem = f"has an IPv6 host {host!r}, which docker image references cannot name (use a host name)"
    return problem or next((_component_problem(p) for p in parts if not _PATH_COMPONENT.fullmatch(p)), None)


def _reference_problem(text: str) -> str | None:
    """Why `text` is not a docker reference name[:tag][@sha256:<hex>], or None."""
    name, at, digest = text.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return "has an invalid digest (it must be @sha256: and 64 lower-case hex digits)"
    head, slash, last = name.rpartition("/")
    last, colon, tag = last.partition(":")
    if colon and not _TAG.fullmatch(tag):
        bad = bad_char(tag, re.compile(r"[A-Za-z0-9_.-]"))
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
        raise fail(
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
        raise fail(
            what, text, "is not a docker repository prefix: it has a digest ('@...')", "name the repository only"
        )
    if ":" in last and ("/" in text or not last.partition(":")[2].isdigit()):
        raise fail(what, text, "is not a docker repository prefix: it has a tag (':...')", "give the tag with --tag")
    problem = "ends with '/'" if text.endswith("/") else _name_problem(f"{text}/x")
    if problem:
        raise fail(
            what,
            text,
            f"is not a docker repository prefix: it {problem}",
            "give lower-case letters, digits, '.', '_', '-' and '/', e.g. docker.io/istio or 127.0.0.1:5000/istio",
        )
    longest = f"{text}/{'x' * IMAGE_NAME_ROOM}:{tag or 'x' * 16}{ARCH_SUFFIX}"
    if len(longest) > MAX_REFERENCE:
        why = f"is too long: image references <hub>/<name>:<tag>{ARCH_SUFFIX} would pass {MAX_REFERENCE} characters"
        raise fail(what, text, why, "use a shorter hub or tag")
    return text


def check_tag(text: str, what: str = "tag") -> str:
    """A docker tag, short enough for the -<arch> suffix."""
    if len(text) > MAX_TAG:
        why = f"is {len(text)} characters: images are tagged <tag>{ARCH_SUFFIX}, so at most {MAX_TAG}"
        raise fail(what, text, why, "use a shorter tag")
    if not _TAG.fullmatch(text):
        bad = bad_char(text, re.compile(r"[A-Za-z0-9_.-]"))
        why = f"contains {bad}" if bad else "must start with a letter, digit or '_'"
        raise fail(what, text, f"is not a docker tag: it {why}", "use letters, digits, '_', '.' and '-', e.g. 1.5.0")
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
    if at and (not userinfo or bad_char(userinfo, _USERINFO_CHAR)):
        return encode
    problem = _host_problem(hostport, allow_empty=scheme == "file")
    if problem:
        return encode if "@" in path else problem  # user:pa/ss@host: say nothing of the password
    bad = bad_char(path, path_chars)
    return f"contains {bad} in its path" if bad else None


def common_problem(text: str) -> str | None:
    """What no value handed to git, bazel or a shell may have: a leading '-', whitespace, control characters."""
    if text.startswith("-"):
        return "starts with '-' (a program would read it as an option)"
    bad = bad_char(text, _VISIBLE_CHAR)
    return f"contains {bad}" if bad else None


def check_url(text: str, what: str, schemes: Collection[str] = CACHE_SCHEMES, *, shell_safe: bool = True) -> str:
    """A URL with one of `schemes`; credentials allowed (never shown); `shell_safe`: a path a shell leaves alone."""
    path_chars = _SHELL_SAFE_URL_CHAR if shell_safe else _VISIBLE_CHAR
    leading = "starts with '-' (a program would read it as an option)" if text.startswith("-") else None
    problem = leading or _url_problem(text, schemes, path_chars) or common_problem(text)
    if problem:
        raise fail(
            what,
            text,
            f"is not a usable URL: it {problem}",
            f"give {'|'.join(sorted(schemes))}://[USER:TOKEN@]HOST[:PORT][/PATH]",
        )
    return text


def _repository_problem(text: str) -> str | None:
    if _TRANSPORT.match(text):
        return f"uses git's remote-helper form {text.split('::', 1)[0] + '::'!r}, which can run commands"
    problem = common_problem(text)
    if problem:
        return problem
    if "://" in text:
        return _url_problem(text, REPOSITORY_SCHEMES, _VISIBLE_CHAR)
    colon, slash = text.find(":"), text.find("/")
    if colon > 0 and (slash < 0 or colon < slash):  # git reads [user@]host:path as ssh
        user, at, host = text[:colon].rpartition("@")
        if at and (not user or bad_char(user, re.compile(r"[A-Za-z0-9._~%+-]"))):
            return "has an invalid user before '@'"
        return _host_problem(host) or (None if text[colon + 1 :] else "has no path after ':'")
    return None


def check_repository(text: str, what: str) -> str:
    """A git repository: https/http/ssh/git/file URL, [user@]host:path, or a local path."""
    problem = _repository_problem(text)
    if problem:
        raise fail(
            what,
            text,
            f"is not a repository URL or path: it {problem}",
            "give an https://, ssh://, git:// or file:// URL, user@host:path, or a directory",
        )
    return text

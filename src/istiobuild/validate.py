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
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from istiobuild.arch import Arch
from istiobuild.errors import ConfigError
from istiobuild.grammar import (
    CACHE_SCHEMES,
    CONTROL,
    EXECUTOR_SCHEMES,
    bad_char,
    check_hub,
    check_image_reference,
    check_repository,
    check_tag,
    check_url,
    common_problem,
    fail,
    setting_name,
    show,
)
from istiobuild.kernel import ALLOCATORS, check_target_kernel

if TYPE_CHECKING:
    from istiobuild.config import Settings

PAGE_SIZES = ("auto", "4k", "64k")
MAX_JOBS = 1024
HEAP_MIB = (512, 256 * 1024)  # jvm_heap bounds, 512m .. 256g
_SAFE_PATH_CHAR = re.compile(r"[A-Za-z0-9_./+@%:,=-]")
_PROGRAM_CHAR = re.compile(r"[A-Za-z0-9_./+-]")
_JVM_HEAP = re.compile(r"([1-9][0-9]*)([mMgG])")
_BAZEL_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+){0,2}(?:-[A-Za-z0-9.]+)?")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_PROPERTY_KEY = re.compile(r"[A-Za-z][A-Za-z0-9._-]*")
_PROPERTY_VALUE_CHAR = re.compile(r"[A-Za-z0-9._~%/+=:@-]")


# ---------------------------------------------------------------------------------------------
# Paths


def check_path_text(text: str, what: str) -> str:
    """A path a program can be handed: no leading '-', no control characters (NUL, newline)."""
    if text.startswith("-"):
        raise fail(
            what,
            text,
            "starts with '-' (a program would read it as an option)",
            "write ./" + text + " or an absolute path",
        )
    bad = bad_char(text, re.compile(r"[^\x00-\x1f\x7f]"))
    if bad:
        raise fail(what, text, f"contains {bad}", "choose a path without control characters")
    return text


def check_safe_path(text: str, what: str) -> str:
    """A path that survives make and a shell: letters, digits and _ . / + @ % : , = - only."""
    check_path_text(text, what)
    bad = bad_char(text, _SAFE_PATH_CHAR)
    if bad:
        raise fail(
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
            raise fail(what, str(path), kind, "remove it, or choose a directory")
        if probe != path and not probe.is_dir():
            raise fail(what, str(path), f"cannot be created: {probe} is not a directory", "choose another directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            where = "is read-only" if probe == path else f"cannot be created: {probe} is read-only"
            raise fail(what, str(path), where, "make it writable, or choose another directory")
    except OSError as exc:
        raise fail(what, str(path), f"cannot be checked ({exc.strerror})", "choose another directory") from None
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
        raise fail(what, text, "is not a heap size", fix)
    number, unit = int(match.group(1)), match.group(2).lower()
    mib = number * 1024 if unit == "g" else number
    if not HEAP_MIB[0] <= mib <= HEAP_MIB[1]:
        raise fail(what, text, "is too small for bazel" if mib < HEAP_MIB[0] else "is beyond any machine", fix)
    return text


def check_program(text: str, what: str) -> str:
    """A program name found on PATH, or an absolute path."""
    fix = "give a program name on PATH or an absolute path (letters, digits and _ . / + - only)"
    bad = bad_char(text, _PROGRAM_CHAR)
    problem = common_problem(text) if text.startswith("-") or not bad else f"contains {bad}"
    if problem:
        raise fail(what, text, problem, fix)
    if "/" in text and not text.startswith("/"):
        raise fail(what, text, "is a relative path (it would depend on the directory a step runs in)", fix)
    return text


def check_bazel_version(text: str, what: str = "bazel_version") -> str:
    if not _BAZEL_VERSION.fullmatch(text):
        raise fail(what, text, "is not a bazel version", "give one like 2.0.0 (or 2.0.0-rc1)")
    return text


def check_page_size(text: str, what: str = "page_size") -> str:
    """auto, 4k or 64k, in any case; returns it lower case."""
    value = text.strip().lower()
    if value not in PAGE_SIZES:
        raise fail(what, text, "is not a page size", f"use one of {', '.join(PAGE_SIZES)}")
    return value


def check_remote_header(text: str, what: str = "remote_header") -> str:
    """A bazel --remote_header NAME=VALUE. A secret: the value is never shown."""
    name, eq, _ = text.partition("=")
    if not eq or not _HEADER_NAME.fullmatch(name):
        raise fail(what, text, "is not NAME=VALUE", "give it as NAME=VALUE, e.g. x-api-key=TOKEN", secret=True)
    if CONTROL.search(text):
        raise fail(what, text, "contains a newline or a control character", "give it on one line", secret=True)
    return text


def check_platform_properties(text: str, what: str = "remote_platform") -> tuple[str, ...]:
    """KEY=VALUE[,KEY=VALUE...] for bazel --remote_default_exec_properties; returns the pairs."""
    fix = "give KEY=VALUE[,KEY=VALUE...], e.g. OSFamily=Linux,container-image=docker://IMAGE@sha256:HEX"
    pairs, keys = tuple(text.split(",")), set[str]()
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not _PROPERTY_KEY.fullmatch(key) or not value:
            raise fail(what, text, f"has {pair!r}, not KEY=VALUE", fix)
        bad = bad_char(value, _PROPERTY_VALUE_CHAR)
        if bad:
            raise fail(what, text, f"has {bad} in the value of {key!r} (it reaches bazel through a shell)", fix)
        if key in keys:
            raise fail(what, text, f"sets {key!r} twice", "give each key once")
        keys.add(key)
    return pairs


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
    if settings.push and "hub" not in name.origin:
        raise ConfigError(
            "push needs a hub: the default `istio` is docker.io/istio, upstream's own",
            hint="pass --hub HOST[:PORT]/NAMESPACE (or set hub in istiobuild.toml / ISTIOBUILD_HUB)",
        )
    if settings.builder:
        check_image_reference(settings.builder, name("builder"))
    arches = [a.value for a in Arch]
    for arch, table in settings.base_images.items():
        where = name("base_images", arch)
        if arch not in arches:
            raise fail(
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
        if not Path(settings.downloads).is_dir():
            raise fail(name("downloads"), settings.downloads, "is not a directory", "give the directory holding them")
    _validate_ztunnel(settings, name)
    if settings.signing_key:
        check_path_text(settings.signing_key, name("signing_key"))
        private = Path(settings.signing_key)
        if not private.is_file():
            raise fail(name("signing_key"), settings.signing_key, "is not a file", "give the private key's PEM file")
        if private.stat().st_mode & 0o077:
            raise fail(
                name("signing_key"), settings.signing_key, "is readable by others than its owner (a private key)",
                f"chmod 600 {settings.signing_key}",
            )  # fmt: skip


def _validate_kernel(settings: Settings, name: _Names) -> None:
    """The target kernel's grammar; an explicit page size must be the target kernel's."""
    if not settings.target_kernel:
        return
    target = check_target_kernel(settings.target_kernel, name("target_kernel"))
    if settings.page_size not in ("auto", target.page_size):
        raise fail(
            name("page_size"), settings.page_size,
            f"contradicts {name('target_kernel')} {show(settings.target_kernel)} "
            f"(a {target.page_size.upper()}-page kernel)",
            f"leave it at auto (it follows the target kernel) or give {target.page_size}",
        )  # fmt: skip


def _validate_build(settings: Settings, name: _Names) -> None:
    check_jobs(settings.jobs, name("jobs"))
    check_jvm_heap(settings.jvm_heap, name("jvm_heap"))
    for key in ("gn", "ninja", "bazel"):
        check_program(getattr(settings, key), name(key))
    if settings.bazel_version:
        check_bazel_version(settings.bazel_version, name("bazel_version"))
    check_page_size(settings.page_size, name("page_size"))
    if settings.allocator not in ALLOCATORS:
        raise fail(name("allocator"), settings.allocator, "is not an allocator", f"give one of {', '.join(ALLOCATORS)}")
    _validate_kernel(settings, name)
    if settings.remote_cache:
        check_url(settings.remote_cache, name("remote_cache"), CACHE_SCHEMES)
    if settings.remote_header:
        check_remote_header(settings.remote_header, name("remote_header"))
    if settings.remote_executor:
        check_url(settings.remote_executor, name("remote_executor"), EXECUTOR_SCHEMES)
    if settings.remote_platform:
        check_platform_properties(settings.remote_platform, name("remote_platform"))
        if not settings.remote_executor:
            raise ConfigError(
                f"{name('remote_platform')} needs a remote executor: the properties select its workers",
                hint="set --remote-executor grpc(s)://HOST[:PORT] (ISTIOBUILD_REMOTE_EXECUTOR), or leave it out",
            )


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


def _validate_ztunnel(settings: Settings, name: _Names) -> None:
    if settings.ztunnel:
        check_path_text(settings.ztunnel, name("ztunnel"))
        if not Path(settings.ztunnel).is_file():
            raise fail(
                name("ztunnel"), settings.ztunnel, "is not a file", "give the ztunnel binary built for the target"
            )
        if not settings.ztunnel_sha256:
            raise ConfigError(
                "a ztunnel was given without its sha256",
                hint="pass --ztunnel-sha256 HEX (sha256sum of the file you checked)",
            )
    if settings.ztunnel_sha256 and not re.fullmatch(r"[0-9a-f]{64}", settings.ztunnel_sha256):
        raise fail(name("ztunnel_sha256"), settings.ztunnel_sha256, "is not a sha256", "give 64 hex digits")
    if settings.ztunnel_sha256 and not settings.ztunnel:
        raise ConfigError("a ztunnel sha256 was given without --ztunnel", hint="pass --ztunnel FILE as well")
    check_program(settings.cargo, name("cargo"))
    if not settings.ztunnel_repo:
        return
    if settings.ztunnel:
        raise ConfigError(
            "both --ztunnel and --ztunnel-repo were given", hint="supply the binary, or the checkout to build it from"
        )
    check_path_text(settings.ztunnel_repo, name("ztunnel_repo"))
    if not (Path(settings.ztunnel_repo) / ".git").exists():
        raise fail(
            name("ztunnel_repo"), settings.ztunnel_repo, "is not a git checkout", "give a clone of istio/ztunnel"
        )

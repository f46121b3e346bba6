"""The optional tables of a release line (releases/<line>.toml): per-arch skips, downloads, cross targets, base image
maps, the external images the Dockerfiles name. Each parser gets the merged line table and raises DataError."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild.arch import Arch
from istiobuild.errors import ConfigError, DataError
from istiobuild.grammar import check_image_reference

BASE_TARGET = "docker.base"  # the images stage always builds it (with docker.distroless where istio_bases says so)
ISTIO_BASE = "docker.io/istio/base"
_BASE_REPOSITORY = re.compile(r"[a-z0-9][a-z0-9.-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9_.-]*)+")  # no tag, no option
_DOWNLOAD_KEYS = {"name": str, "url": str, "sha256": str, "into": str, "place": list, "extract": str, "touch": list}
_SHA256_HEX = 64


def _fail(path: Path, where: str, what: str) -> DataError:
    return DataError(f"{path.name}: {where}: {what}", hint=f"fix {path}")


def _is_sha256(text: str) -> bool:
    return len(text) == _SHA256_HEX and all(c in "0123456789abcdef" for c in text)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExternalImage:
    """An image a Dockerfile of the release names in a FROM line (not a build stage, not one the same make
    builds), the docker targets whose Dockerfile names it, and optional pins per target arch."""

    name: str
    targets: tuple[str, ...]
    digests: Mapping[Arch, str] = dataclasses.field(default_factory=dict)  # sha256:<hex>: image ID or repo digest


def skip_targets(path: Path, where: str, line: Mapping[str, Any]) -> dict[Arch, tuple[str, ...]]:
    skip: dict[Arch, tuple[str, ...]] = {}
    for arch_name, targets in line["skip_docker_targets"].items():
        try:
            skip[Arch(arch_name)] = tuple(targets)
        except ValueError:
            raise _fail(path, f"{where} skip_docker_targets", f"unknown arch {arch_name!r}") from None
    return skip


def downloads(path: Path, where: str, line: Mapping[str, Any]) -> list[dict[str, Any]]:
    downloads = []
    for number, item in enumerate(line["downloads"]):
        where_dl = f"{where} downloads[{number}]"
        if (
            not isinstance(item, Mapping)
            or set(item) - set(_DOWNLOAD_KEYS)
            or not {"name", "url", "into", "place"} <= set(item)
        ):
            raise _fail(path, where_dl, f"needs name, url, into, place; allowed keys {sorted(_DOWNLOAD_KEYS)}")
        if item["into"] not in ("envoy_dir", "istio_out"):
            raise _fail(path, where_dl, "into must be envoy_dir or istio_out")
        if item.get("sha256") and not _is_sha256(item["sha256"]):
            raise _fail(path, where_dl, "sha256 must be 64 hex characters")
        downloads.append(dict(item))
    return downloads


def cross(path: Path, where: str, line: Mapping[str, Any]) -> tuple[Arch, ...]:
    """`cross = ["aarch64"]`: the targets whose build takes its target from the plan, not from `uname -m`."""
    names = line["cross"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise _fail(path, f"{where} cross", "must be a list of arch names")
    try:
        return tuple(Arch(n) for n in names)
    except ValueError:
        raise _fail(path, f"{where} cross", f"unknown arch in {names!r} (known: aarch64, x86_64)") from None


def base_images(path: Path, where: str, line: Mapping[str, Any]) -> dict[Arch, dict[str, str]]:
    base_images: dict[Arch, dict[str, str]] = {}
    for arch_name, mapping in line["base_images"].items():
        try:
            base_images[Arch(arch_name)] = {str(k): str(v) for k, v in mapping.items()}
        except (ValueError, AttributeError):
            raise _fail(path, f"{where} base_images", f"unknown arch {arch_name!r} or not a table") from None
    return base_images


def external_images(
    path: Path, where: str, line: Mapping[str, Any], bases: tuple[str, ...]
) -> tuple[ExternalImage, ...]:
    """`external_images = { "<image>" = { targets = [...], digests = { <arch> = "sha256:<hex>" } } }`."""
    known = {*line["docker_targets"], *map(base_target, bases)}
    if not isinstance(line["external_images"], Mapping):
        raise _fail(path, f"{where} external_images", "must be a table")
    found = []
    for name, entry in line["external_images"].items():
        at = f"{where} external_images.{name!r}"
        try:
            check_image_reference(name, "image")
        except ConfigError as exc:
            raise _fail(path, at, exc.message) from None
        if not isinstance(entry, Mapping) or set(entry) - {"targets", "digests"} or "targets" not in entry:
            raise _fail(path, at, "must be a table with targets = [...] and optionally digests = { <arch> = ... }")
        targets = entry["targets"]
        if not isinstance(targets, list) or not targets or not set(targets) <= known:
            raise _fail(path, f"{at} targets", "must be a non-empty list of base or docker_targets entries")
        digests = entry.get("digests", {})
        if not isinstance(digests, Mapping) or not set(digests) <= {a.value for a in Arch}:
            raise _fail(path, f"{at} digests", f"must map {' or '.join(a.value for a in Arch)} to sha256:<hex>")
        for arch_name, digest in digests.items():
            if not isinstance(digest, str) or not _is_sha256(digest.removeprefix("sha256:")):
                raise _fail(path, f"{at} digests.{arch_name}", "must be sha256:<64 hex characters>")
        pins = {Arch(a): d if d.startswith("sha256:") else f"sha256:{d}" for a, d in digests.items()}
        found.append(ExternalImage(name=name, targets=tuple(targets), digests=pins))
    return tuple(found)


def base_target(repository: str) -> str:
    """The make target of tools/istio-docker.mk that builds one of the istio_bases: docker.<last part>."""
    return f"docker.{repository.rpartition('/')[2]}"


def istio_bases(path: Path, where: str, line: Mapping[str, Any]) -> tuple[str, ...]:
    """`istio_bases = ["gcr.io/istio-release/base", "gcr.io/istio-release/distroless"]`: the images istio's make
    builds (target docker.<last part>) that the Dockerfiles' FROM lines name; one hub. Default: istio/base."""
    bases = line.get("istio_bases") or [ISTIO_BASE]
    well_formed = all(isinstance(b, str) and _BASE_REPOSITORY.fullmatch(b) for b in bases)
    targets = [base_target(b) for b in bases] if well_formed else []
    if (
        BASE_TARGET not in targets
        or not set(targets) <= {BASE_TARGET, "docker.distroless"}  # the make targets istio has
        or len({b.rpartition("/")[0] for b in bases}) != 1
        or len(set(bases)) != len(bases)
    ):
        raise _fail(path, f"{where} istio_bases", "must be distinct image repositories under one hub, without tag, "
                    "<hub>/base and optionally <hub>/distroless (e.g. gcr.io/istio-release/base)")  # fmt: skip
    return tuple(bases)


def toolchains(path: Path, where: str, line: Mapping[str, Any]) -> dict[str, Any]:
    """`toolchains = { only = ["clang"], min_version = "14", why = "..." }`: the profiles a line builds with, the
    oldest compiler it takes (optional), and why."""
    table = line["toolchains"]
    if not table:
        return {}
    only, why, low = table.get("only"), table.get("why"), table.get("min_version", "")
    if not {"only", "why"} <= set(table) <= {"only", "why", "min_version"} or not isinstance(why, str) or not why:
        raise _fail(path, f"{where} toolchains", 'must be { only = [profiles], min_version = "N", why = "..." }')
    if not isinstance(low, str) or (low and not all(p.isdigit() for p in low.split("."))):
        raise _fail(path, f"{where} toolchains.min_version", 'must be a version such as "14"')
    if not isinstance(only, list) or not only or not all(isinstance(n, str) and n for n in only):
        raise _fail(path, f"{where} toolchains.only", "must be a non-empty list of toolchain profile names")
    return {"toolchains": tuple(only), "toolchains_why": why, "toolchains_min": low}

"""The release matrix: releases/*.toml, validated on load."""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild.arch import Arch
from istiobuild.archivespec import ArchiveSpec, DefaultsSpec, archive_spec, defaults_spec
from istiobuild.errors import DataError, UsageError
from istiobuild.linetables import (
    ISTIO_BASE,
    ExternalImage,
    base_images,
    base_target,
    cross,
    downloads,
    external_images,
    istio_bases,
    skip_targets,
    toolchains,
)
from istiobuild.mechanism import Mechanism
from istiobuild.mechanism import parse as parse_mechanism
from istiobuild.resources import data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class Component(enum.Enum):
    """The three upstream repositories, in the order they are checked out and patched."""

    PROXY = "proxy"
    ENVOY = "envoy"
    ISTIO = "istio"

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pin:
    """A pinned upstream commit: the repository it comes from, and the tag that names it."""

    repo: str  # owner/name as upstream spells it
    commit: str
    tag: str = ""
    sha256: str = ""  # archive sha256 (envoy, as pinned in the proxy WORKSPACE)
    public_repo: str = ""  # where a privately pinned commit is public


@dataclasses.dataclass(frozen=True, kw_only=True)
class Release:
    """Everything the plan needs to know about one release."""

    version: str
    line: str
    pins: Mapping[Component, Pin]
    urls: Mapping[Component, str]  # where each component is fetched from (before config overrides)
    bazel_version: str
    go: str
    wee8: str
    envoy_target: str
    envoy_output: str
    gopath: bool
    docker_targets: tuple[str, ...]
    skip_docker_targets: Mapping[Arch, tuple[str, ...]]
    series: Mapping[Component, tuple[str, ...]]
    source_date_epoch: int  # the istio commit's committer time: every timestamp the build controls
    downloads: tuple[Mapping[str, Any], ...] = ()  # files init scripts would fetch (templates)
    base_images: Mapping[Arch, Mapping[str, str]] = dataclasses.field(default_factory=dict)  # release's defaults
    external_images: tuple[ExternalImage, ...] = ()  # what the Dockerfiles name in FROM lines
    # What istio's make builds for those FROM lines (docker.base's image; from 1.7 docker.distroless's too): the
    # images stage builds them first, under these names; the sync does not count them as external.
    istio_bases: tuple[str, ...] = (ISTIO_BASE,)
    cross: tuple[Arch, ...] = ()  # targets the build can be cross-compiled for (it takes the target from the plan)
    defaults: DefaultsSpec | None = None  # the files naming the default hub and tag, and what is generated from them
    archive: ArchiveSpec | None = None  # what the release archives hold
    note: str = ""
    # False for a `status = "pinned"` line or release, or an envoy nobody can fetch (envoy_unfetchable)
    buildable: bool = True
    pinned_release: bool = False  # the release itself says `status = "pinned"` (its note says why)
    mechanism: Mechanism | None = None  # [line.mechanism]: how upstream builds this line (docs/lines.md)
    toolchains: tuple[str, ...] = ()  # the only toolchain profiles this line builds with (() = any)
    toolchains_why: str = ""
    toolchains_min: str = ""  # the oldest compiler version the line builds with ("" = the profile's)

    @property
    def example(self) -> bool:
        """One of istiobuild's offline example releases (line `example`, or `example-<family>`)."""
        return self.line == "example" or self.line.startswith("example-")

    @property
    def envoy_unfetchable(self) -> bool:
        """The envoy is pinned in istio-private and no public repository holds the commit (1.6.11): pins only."""
        return "/istio-private/" in self.urls[Component.ENVOY]

    def docker_targets_for(self, arch: Arch) -> tuple[str, ...]:
        skip = set(self.skip_docker_targets.get(arch, ()))
        return tuple(t for t in self.docker_targets if t not in skip)

    @property
    def base_hub(self) -> str:
        return self.istio_bases[0].rpartition("/")[0]

    @property
    def base_targets(self) -> tuple[str, ...]:
        """The make targets building the images the Dockerfiles' FROM lines take from istio itself."""
        return tuple(map(base_target, self.istio_bases))

    def external_images_for(self, arch: Arch) -> tuple[ExternalImage, ...]:
        """The external images a build for `arch` needs: the base targets' and those of the targets it builds."""
        built = {*self.base_targets, *self.docker_targets_for(arch)}
        return tuple(i for i in self.external_images if built & set(i.targets))


_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Release names are used in paths and argv: allow only what a version string needs.
_RELEASE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LINE_KEYS = {
    "name": str,
    "bazel_version": str,
    "go": str,
    "wee8": str,
    "envoy_target": str,
    "envoy_output": str,
    "gopath": bool,
    "docker_targets": list,
    "skip_docker_targets": dict,
    "repos": dict,
    "patches": dict,
}
_OPTIONAL_LINE_KEYS = {
    "downloads": list,
    "base_images": dict,
    "external_images": dict,
    "cross": list,
    "defaults": dict,
    "archive": dict,
    "mechanism": dict,
    "toolchains": dict,
    "istio_bases": list,
}
_RELEASE_KEYS = {"proxy", "istio", "envoy", "source_date_epoch", "extra_patches", "note", "status"}


def _fail(path: Path, where: str, what: str) -> DataError:
    return DataError(f"{path.name}: {where}: {what}", hint=f"fix {path}")


def _pin(path: Path, where: str, raw: Any, *, envoy: bool) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise _fail(path, where, "must be a table")
    allowed = {"repo", "commit", "sha256", "public_repo"} if envoy else {"tag", "commit"}
    unknown = set(raw) - allowed
    if unknown:
        raise _fail(path, where, f"unknown keys {sorted(unknown)}")
    if not _SHA1.match(str(raw.get("commit", ""))):
        raise _fail(path, where, "commit must be a full 40-hex SHA")
    if envoy:
        if not _SHA256.match(str(raw.get("sha256", ""))):
            raise _fail(path, where, "sha256 must be 64 hex characters")
        if "/" not in str(raw.get("repo", "")):
            raise _fail(path, where, "repo must be owner/name")
    elif not raw.get("tag"):
        raise _fail(path, where, "tag is required")
    return {k: str(v) for k, v in raw.items()}


def _series_exists(component: Component, name: str) -> bool:
    return (data_dir("patches") / component.value / name / "series").is_file()


# `status = "pinned"` (releases/<line>.toml written by `invoke sync-releases`): the line's releases are pins only.
# The keys of a build mechanism may be absent (nothing to build); bazel_version and go come per release.
BUILDABLE = "buildable"
PINNED = "pinned"
_NO_MECHANISM: Mapping[str, Any] = {
    "bazel_version": "",
    "go": "",
    "wee8": "",
    "envoy_target": "",
    "envoy_output": "",
    "gopath": False,
    "docker_targets": [],
    "skip_docker_targets": {},
    "patches": {},
}


def _check_status(path: Path, line: dict[str, Any]) -> None:
    status = line.setdefault("status", BUILDABLE)
    if status not in (BUILDABLE, PINNED):
        raise _fail(path, "[line] status", f"must be {BUILDABLE!r} or {PINNED!r}")
    if status == PINNED:
        for key, default in _NO_MECHANISM.items():
            line.setdefault(key, copy.copy(default))


def _check_line(path: Path, line: dict[str, Any]) -> dict[str, Any]:
    _check_status(path, line)
    for key, kind in _LINE_KEYS.items():
        if key not in line:
            raise _fail(path, "[line]", f"missing {key!r}")
        if not isinstance(line[key], kind):
            raise _fail(path, f"[line] {key}", f"must be {kind.__name__}")
    for key, kind in _OPTIONAL_LINE_KEYS.items():
        line.setdefault(key, kind())
        if not isinstance(line[key], kind):
            raise _fail(path, f"[line] {key}", f"must be {kind.__name__}")
    unknown = set(line) - set(_LINE_KEYS) - set(_OPTIONAL_LINE_KEYS) - {"status"}
    if unknown:
        raise _fail(path, "[line]", f"unknown keys {sorted(unknown)}")
    return line


def _load_line(path: Path) -> dict[str, Release]:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path} is not valid TOML: {exc}") from None
    if data.get("schema") != 1:
        raise _fail(path, "schema", "expected schema = 1")
    unknown_top = set(data) - {"schema", "line", "release"}
    if unknown_top:
        raise _fail(path, "top level", f"unknown keys {sorted(unknown_top)}")
    line = _check_line(path, data.get("line", {}))

    releases: dict[str, Release] = {}
    for version, table in data.get("release", {}).items():
        where = f"[release.{version!r}]"
        if not _RELEASE_NAME.match(version):
            raise _fail(path, where, "release name has characters that are not allowed")
        overridable = (set(_LINE_KEYS) | set(_OPTIONAL_LINE_KEYS)) - {"name", "repos", "patches", "mechanism"}
        unknown = set(table) - _RELEASE_KEYS - overridable
        if unknown:
            raise _fail(path, where, f"unknown keys {sorted(unknown)}")
        merged = {**line, **{k: v for k, v in table.items() if k in _LINE_KEYS or k in _OPTIONAL_LINE_KEYS}}
        for key in set(table) & set(_LINE_KEYS):
            if not isinstance(table[key], _LINE_KEYS[key]):
                raise _fail(path, f"{where} {key}", f"must be {_LINE_KEYS[key].__name__}")
        releases[version] = _build(path, where, version, merged, table)
    if not releases:
        raise _fail(path, "release", "no releases")
    return releases


def _build(path: Path, where: str, version: str, line: Mapping[str, Any], table: Mapping[str, Any]) -> Release:
    for key in ("proxy", "istio", "envoy", "source_date_epoch"):
        if key not in table:
            raise _fail(path, where, f"missing {key!r}")
    for key in ("bazel_version", "go"):
        if not line[key]:
            raise _fail(path, where, f"missing {key!r} (give it in [line] or per release)")
    pinned_release = table.get("status", BUILDABLE) == PINNED
    if table.get("status", BUILDABLE) not in (BUILDABLE, PINNED) or (pinned_release and not table.get("note")):
        raise _fail(path, f"{where} status", f"must be {PINNED!r}, with a note saying why the release is not built")
    epoch = table["source_date_epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= 0:
        raise _fail(path, f"{where} source_date_epoch", "must be the istio commit's committer time (seconds)")
    proxy = _pin(path, f"{where} proxy", table["proxy"], envoy=False)
    istio = _pin(path, f"{where} istio", table["istio"], envoy=False)
    envoy = _pin(path, f"{where} envoy", table["envoy"], envoy=True)

    urls = _urls(path, line, envoy)
    owner = {c: _repo_from_url(urls[c]) for c in (Component.PROXY, Component.ISTIO)}
    bases = istio_bases(path, where, line)
    return Release(
        version=version,
        base_images=base_images(path, where, line),
        cross=cross(path, where, line),
        defaults=_defaults(path, where, line),
        archive=_archive(path, where, line),
        external_images=external_images(path, where, line, bases),
        istio_bases=bases,
        downloads=tuple(downloads(path, where, line)),
        line=line["name"],
        pins={
            Component.PROXY: Pin(repo=owner[Component.PROXY], commit=proxy["commit"], tag=proxy["tag"]),
            Component.ISTIO: Pin(repo=owner[Component.ISTIO], commit=istio["commit"], tag=istio["tag"]),
            Component.ENVOY: Pin(
                repo=envoy["repo"],
                commit=envoy["commit"],
                sha256=envoy["sha256"],
                public_repo=envoy.get("public_repo", ""),
            ),
        },
        urls=urls,
        bazel_version=line["bazel_version"],
        go=line["go"],
        wee8=line["wee8"],
        envoy_target=line["envoy_target"],
        envoy_output=line["envoy_output"],
        gopath=line["gopath"],
        docker_targets=tuple(line["docker_targets"]),
        skip_docker_targets=skip_targets(path, where, line),
        series=_series(path, where, line, table),
        source_date_epoch=epoch,
        note=str(table.get("note", "")),
        buildable=line["status"] == BUILDABLE
        and not pinned_release
        and "/istio-private/" not in urls[Component.ENVOY],  # see envoy_unfetchable
        pinned_release=pinned_release,
        mechanism=_mechanism(path, where, line, version),
        **toolchains(path, where, line),
    )


def _urls(path: Path, line: Mapping[str, Any], envoy: Mapping[str, str]) -> dict[Component, str]:
    """Where each component is fetched from; {envoy_repo} is the release's (public) envoy repository."""
    repos = line["repos"]
    if set(repos) != {c.value for c in Component}:
        raise _fail(path, "[line.repos]", "must name proxy, envoy and istio")
    fetch_repo = envoy.get("public_repo") or envoy["repo"]
    return {comp: str(repos[comp.value]).replace("{envoy_repo}", fetch_repo) for comp in Component}


def _series(
    path: Path, where: str, line: Mapping[str, Any], table: Mapping[str, Any]
) -> dict[Component, tuple[str, ...]]:
    series: dict[Component, tuple[str, ...]] = {}
    extra = table.get("extra_patches", {})
    for key in {*line["patches"], *extra}:
        if key not in {c.value for c in Component}:
            raise _fail(path, where, f"patches for unknown component {key!r}")
    for comp in Component:
        names = tuple(line["patches"].get(comp.value, [])) + tuple(extra.get(comp.value, []))
        for name in names:
            if not _series_exists(comp, name):
                raise _fail(path, where, f"patch series {comp.value}/{name} does not exist in patches/")
        series[comp] = names
    return series


def _defaults(path: Path, where: str, line: Mapping[str, Any]) -> DefaultsSpec | None:
    try:
        return defaults_spec(line["defaults"])
    except ValueError as exc:
        raise _fail(path, f"{where} defaults", str(exc)) from None


def _archive(path: Path, where: str, line: Mapping[str, Any]) -> ArchiveSpec | None:
    try:
        return archive_spec(line["archive"])
    except ValueError as exc:
        raise _fail(path, f"{where} archive", str(exc)) from None


def _mechanism(path: Path, where: str, line: Mapping[str, Any], version: str) -> Mechanism | None:
    if not line["mechanism"]:
        return None
    try:
        return parse_mechanism(line["mechanism"], line=line["name"], version=version)
    except ValueError as exc:
        raise _fail(path, f"{where} [line.mechanism]", str(exc)) from None


def _repo_from_url(url: str) -> str:
    parts = url.rstrip("/").removesuffix(".git").replace(":", "/").split("/")
    return "/".join(parts[-2:])


def _version_key(version: str) -> tuple[Any, ...]:
    parts = re.split(r"[.-]", version)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def load_file(path: Path) -> dict[str, Release]:
    """The releases of one releases/<line>.toml, validated."""
    return _load_line(path)


@functools.cache
def matrix(directory: Path | None = None) -> Mapping[str, Release]:
    """Every release in releases/*.toml, in version order."""
    root = directory or data_dir("releases")
    releases: dict[str, Release] = {}
    for path in sorted(root.glob("*.toml")):
        for version, release in _load_line(path).items():
            if version in releases:
                raise DataError(f"release {version} is defined twice", hint=f"fix {path}")
            releases[version] = release
    return dict(sorted(releases.items(), key=lambda item: _version_key(item[0])))


def get(version: str, releases: Mapping[str, Release] | None = None) -> Release:
    """The release named `version`, or a UsageError listing the known ones."""
    known = releases if releases is not None else matrix()
    if not _RELEASE_NAME.match(version):
        raise UsageError(
            f"release {version!r} is not a release name",
            hint="release names are versions like 1.5.0 (letters, digits, '.', '-', '_' only)",
        )
    if version not in known:
        raise UsageError(
            f"unknown release {version!r}",
            hint=f"known releases: {', '.join(known)}",
        )
    return known[version]

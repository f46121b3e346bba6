"""Release line data: what its archives hold ([line.archive]), which files name its default hub and tag
([line.defaults])."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

_FIELDS = {"name", "istioctl_name", "top", "istioctl", "dirs", "files", "copies"}
_PLACEHOLDERS = ("{version}", "{goarch}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ArchiveSpec:
    """`istio-<version>-linux-<arch>.tar.gz` and `istioctl-<version>-linux-<arch>.tar.gz` (release-builder's)."""

    name: str  # the install archive's file name ({version}, {goarch})
    istioctl_name: str  # the istioctl archive's file name: istioctl alone
    top: str  # the install archive's top directory
    istioctl: str  # where istioctl goes inside `top`
    dirs: tuple[tuple[str, tuple[str, ...]], ...]  # (istio tree directory, fnmatch patterns of the names it keeps)
    files: tuple[str, ...]  # istio tree files copied as they are
    copies: tuple[tuple[str, str], ...]  # (istio tree file or directory, where it goes), every file

    @property
    def sources(self) -> tuple[str, ...]:
        """Every istio tree path the archive takes from: files, filtered directories, copied paths."""
        return (*self.files, *(d for d, _ in self.dirs), *(s for s, _ in self.copies))

    def archive_paths(self, path: str) -> list[str]:
        """Where a file of the istio tree lands in the install archive (under `top`), if it does."""
        found = [path] if path in self.files else []
        name = Path(path).name
        if any(path.startswith(f"{d}/") and any(fnmatch(name, p) for p in keep) for d, keep in self.dirs):
            found.append(path)
        for source, dest in self.copies:
            if path == source or path.startswith(f"{source}/"):
                found.append(dest + path[len(source) :])
        return found

    def fill(self, template: str, version: str, goarch: str) -> str:
        return template.replace("{version}", version).replace("{goarch}", goarch)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DefaultsSpec:
    """A release line's defaults ([line.defaults] in releases/<line>.toml)."""

    hub: str  # the hub upstream's files name (gcr.io/istio-testing)
    files: Mapping[str, str]  # path in the istio tree -> the tag that file names upstream
    regenerate: tuple[str, ...] = ()  # argv of istio's generator, run in a copy of `inputs`
    inputs: tuple[str, ...] = ()  # the tree paths the generator reads
    generated: tuple[str, ...] = ()  # the files it writes (taken into the patch)
    tools: tuple[str, ...] = ()  # host programs the generator needs
    check: tuple[str, ...] = ()  # istioctl arguments whose output names the default hub and tag
    version_is_tag: bool = False  # istioctl overlays its version (ldflags) as the default tag (every line 1.4 .. 1.28)


def _relative(value: str) -> str:
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or value.startswith("-"):
        raise ValueError(f"{value!r} must be a relative path inside the tree")
    return value


def archive_spec(raw: Mapping[str, Any]) -> ArchiveSpec | None:
    """The validated spec, None when the line has none; ValueError says what is wrong."""
    if not raw:
        return None
    if set(raw) != _FIELDS:
        raise ValueError(f"needs exactly {sorted(_FIELDS)}")
    for key in ("name", "istioctl_name", "top", "istioctl"):
        if not isinstance(raw[key], str) or not raw[key]:
            raise ValueError(f"{key} must be a non-empty string")
    for key in ("name", "istioctl_name"):
        if "/" in raw[key] or not all(p in raw[key] for p in _PLACEHOLDERS):
            raise ValueError(f"{key} must be a file name with {' and '.join(_PLACEHOLDERS)}")
    if not isinstance(raw["files"], list) or not all(isinstance(x, str) and x for x in raw["files"]):
        raise ValueError("files must be a list of strings")
    dirs = raw["dirs"]
    if not isinstance(dirs, Mapping) or not all(
        isinstance(keep, list) and keep and all(isinstance(x, str) and x for x in keep) for keep in dirs.values()
    ):
        raise ValueError('dirs must be a table of <tree directory> = ["<file name pattern>", ...]')
    copies = raw["copies"]
    if not isinstance(copies, list) or not all(isinstance(c, Mapping) and set(c) == {"from", "to"} for c in copies):
        raise ValueError('copies must be a list of { from = "<tree path>", to = "<archive path>" }')
    return ArchiveSpec(
        name=raw["name"],
        istioctl_name=raw["istioctl_name"],
        top=_relative(raw["top"]),
        istioctl=_relative(raw["istioctl"]),
        dirs=tuple((_relative(str(d)), tuple(keep)) for d, keep in dirs.items()),
        files=tuple(_relative(f) for f in raw["files"]),
        copies=tuple((_relative(str(c["from"])), _relative(str(c["to"]))) for c in copies),
    )


_LISTS = ("regenerate", "inputs", "generated", "tools", "check")


def defaults_spec(raw: Mapping[str, Any]) -> DefaultsSpec | None:
    """`[line.defaults]`: hub, files = { path = tag }, and optionally the lists and version_is_tag; None when absent."""
    if not raw:
        return None
    files = raw.get("files")
    if (
        set(raw) - {"hub", "files", "version_is_tag", *_LISTS}
        or not isinstance(raw.get("version_is_tag", False), bool)
        or not isinstance(raw.get("hub"), str)
        or not isinstance(files, Mapping)
        or not files
        or not all(isinstance(v, str) and v for v in files.values())
        or not all(isinstance(raw.get(k, []), list) and all(isinstance(x, str) for x in raw.get(k, [])) for k in _LISTS)
        or bool(raw.get("regenerate")) != bool(raw.get("generated"))
    ):
        raise ValueError(
            "needs hub and files = { <path> = <tag> }; lists of strings for regenerate, inputs, generated (both or "
            "neither of regenerate and generated), tools, check; version_is_tag true or false"
        )
    for name in (*files, *raw.get("inputs", []), *raw.get("generated", [])):
        if name.startswith(("/", "-")) or ".." in PurePosixPath(name).parts:
            raise ValueError(f"{name!r} must be a path inside the istio tree")
    return DefaultsSpec(
        hub=raw["hub"],
        files=dict(files),
        version_is_tag=raw.get("version_is_tag", False),
        **{k: tuple(raw.get(k, ())) for k in _LISTS},
    )

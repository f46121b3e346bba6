"""Toolchain profiles: toolchains/*.toml, validated on load."""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from istiobuild.arch import Arch
from istiobuild.errors import DataError, UsageError
from istiobuild.resources import data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class Family(enum.Enum):
    CLANG = "clang"
    GCC = "gcc"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Toolchain:
    name: str
    family: Family
    description: str
    min_version: str
    max_version: str
    bazel_configs: tuple[str, ...]
    binaries: Mapping[str, str]  # cc, cxx, ar, nm
    env: Mapping[str, str]

    def binaries_for(self, target: Arch, host: Arch) -> dict[str, str]:
        """Binary names for a target: gcc cross compilers carry the triple prefix."""
        if target == host or self.family is Family.CLANG:
            return dict(self.binaries)
        prefix = f"{target.triple}-"
        return {k: prefix + v for k, v in self.binaries.items()}

    def env_for(self, target: Arch, host: Arch) -> dict[str, str]:
        """The environment bazel, make and the wee8 genrule see."""
        binaries = self.binaries_for(target, host)
        env = {"CC": binaries["cc"], "CXX": binaries["cxx"], "AR": binaries["ar"], "NM": binaries["nm"]}
        env.update(self.env)
        if target != host and self.family is Family.CLANG:
            flag = f"--target={target.triple}"
            for key in ("CFLAGS", "CXXFLAGS", "LDFLAGS"):
                env[key] = f"{flag} {env[key]}" if env.get(key) else flag
        return env

    def accepts(self, version: str) -> bool:
        have = _vtuple(version)
        if self.min_version and have < _vtuple(self.min_version):
            return False
        return not (self.max_version and have > _vtuple(self.max_version))

    def at_least(self, version: str) -> Toolchain:
        """This profile with its minimum raised to `version` (a release line's floor) when that is higher."""
        if version and _vtuple(version) > _vtuple(self.min_version or "0"):
            return dataclasses.replace(self, min_version=version)
        return self

    @property
    def version_range(self) -> str:
        low = f">= {self.min_version}" if self.min_version else ""
        high = f"<= {self.max_version}" if self.max_version else ""
        return ", ".join(x for x in (low, high) if x) or "any"


def version_in(line: str) -> str:
    """The version in a `cc --version` first line ("... clang version 14.0.6", "gcc (Debian 12.2.0-14) 12.2.0")."""
    tail = line.split("version", 1)[1] if "version" in line else line.rsplit(")", 1)[-1]
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", tail) or re.search(r"(\d+(?:\.\d+)*)", line)
    return match.group(1) if match else ""


def _vtuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


_KEYS = {"name", "family", "description", "min_version", "max_version", "bazel_configs", "binaries", "env"}
_BINARIES = {"cc", "cxx", "ar", "nm"}


def _load(path: Path) -> Toolchain:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - _KEYS
    missing = _KEYS - set(data)
    if unknown or missing:
        raise DataError(f"{path.name}: unknown keys {sorted(unknown)}, missing {sorted(missing)}")
    if set(data["binaries"]) != _BINARIES:
        raise DataError(f"{path.name}: [binaries] must name exactly {sorted(_BINARIES)}")
    if data["name"] != path.stem:
        raise DataError(f"{path.name}: name must be {path.stem!r}")
    try:
        family = Family(data["family"])
    except ValueError:
        raise DataError(f"{path.name}: family must be clang or gcc") from None
    return Toolchain(
        name=data["name"],
        family=family,
        description=data["description"],
        min_version=data["min_version"],
        max_version=data["max_version"],
        bazel_configs=tuple(data["bazel_configs"]),
        binaries=dict(data["binaries"]),
        env={str(k): str(v) for k, v in data["env"].items()},
    )


@functools.cache
def profiles() -> Mapping[str, Toolchain]:
    return {p.stem: _load(p) for p in sorted(data_dir("toolchains").glob("*.toml"))}


def get(name: str) -> Toolchain:
    known = profiles()
    if name not in known:
        raise UsageError(f"unknown toolchain {name!r}", hint=f"known toolchains: {', '.join(known)}")
    return known[name]

"""Layered settings: shipped defaults < pyproject.toml [tool.istiobuild] < istiobuild.toml
< ISTIOBUILD_* environment < CLI flags. One function, `resolve`, implements the precedence."""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from istiobuild.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "ISTIOBUILD_"
# ISTIOBUILD_* variables that are not settings (read by tests and tooling, not by resolve()).
ENV_NOT_SETTINGS = frozenset({"ISTIOBUILD_UPSTREAM_MIRRORS", "ISTIOBUILD_DEBUG"})
SECRET_KEYS = frozenset({"remote_header"})
COMPONENT_NAMES = ("proxy", "envoy", "istio")
PAGE_SIZES = ("auto", "4k", "64k")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting a build reads. Paths are absolute once resolved."""

    release: str = "1.5.0"
    arch: str = ""  # "" = the host's
    toolchain: str = "clang"
    workdir: Path = Path("istiobuild-work")
    cache_dir: Path | None = None  # None = <workdir>/cache
    mirror: str = ""  # base URL or directory holding proxy, envoy, istio
    repos: Mapping[str, str] = dataclasses.field(default_factory=dict)  # per-component URL
    jobs: int = 0  # 0 = derived from cores and memory
    page_size: str = "auto"
    gn: str = "gn"
    ninja: str = "ninja"
    bazel: str = "bazel"
    hub: str = "istio"
    tag: str = ""  # "" = the release version
    base_images: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    remote_cache: str = ""  # bazel --remote_cache URL
    remote_header: str = ""  # bazel --remote_header value: a secret, never printed or logged
    downloads: str = ""  # directory holding files upstream scripts would download (wasm, ...)
    jvm_heap: str = "3g"  # bazel server -Xmx (small ARM machines OOM with the default)
    push: bool = False  # push the images to `hub` after verifying them
    in_container: bool = False  # run the toolchain, proxy and istio stages inside `builder`
    builder: str = ""  # builder image (dockerfiles/), for --in-container
    bazel_version: str = ""  # USE_BAZEL_VERSION for bazelisk (default: the release's .bazelversion)

    def __repr__(self) -> str:  # keep the secret out of tracebacks and debug output
        fields = ", ".join(
            f"{f.name}={'***' if f.name == 'remote_header' and self.remote_header else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"Settings({fields})"

    @property
    def cache(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.workdir / "cache"


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_MAPPINGS = {"repos", "base_images"}
_INTS = {"jobs"}
_BOOLS = {"push", "in_container"}
_PATHS = {"workdir", "cache_dir"}


@dataclasses.dataclass(frozen=True)
class Layer:
    """One source of settings: where it came from (for messages) and its raw values."""

    source: str
    values: Mapping[str, Any]


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"


def _check_keys(layer: Layer) -> None:
    for key, value in layer.values.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown config key {key!r} in {layer.source}", hint=_suggest(key, list(_FIELDS)))
        if key == "repos":
            if not isinstance(value, Mapping):
                raise ConfigError(f"'repos' in {layer.source} must be a table")
            for comp in value:
                if comp not in COMPONENT_NAMES:
                    raise ConfigError(
                        f"unknown repository {comp!r} under 'repos' in {layer.source}",
                        hint=_suggest(comp, COMPONENT_NAMES),
                    )


def _coerce(key: str, value: Any, source: str, base: Path) -> Any:
    """Turn a raw value into the type the Settings field holds."""
    if key in _MAPPINGS:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key!r} in {source} must be a table")
        if key == "base_images":
            out: dict[str, dict[str, str]] = {}
            for arch, table in value.items():
                if not isinstance(table, Mapping) or not all(
                    isinstance(k, str) and isinstance(v, str) for k, v in table.items()
                ):
                    raise ConfigError(f"base_images.{arch} in {source} must map image names to image names")
                out[str(arch)] = dict(table)
            return out
        if not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"every value under {key!r} in {source} must be a string")
        return dict(value)
    if key in _INTS:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key!r} in {source} must be a whole number, not {value!r}") from None
        if number < 0:
            raise ConfigError(f"{key!r} in {source} must not be negative")
        return number
    if key in _BOOLS:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return str(value).lower() in ("1", "true", "yes", "on")
        raise ConfigError(f"{key!r} in {source} must be true or false, not {value!r}")
    if not isinstance(value, str):
        raise ConfigError(f"{key!r} in {source} must be a string, not {value!r}")
    if key in _PATHS:
        return (base / Path(value).expanduser()).resolve() if value else None
    if key == "page_size" and value not in PAGE_SIZES:
        raise ConfigError(f"page_size {value!r} in {source} is not one of {', '.join(PAGE_SIZES)}")
    return value


def resolve(layers: Sequence[Layer], *, base: Path) -> tuple[Settings, Mapping[str, str]]:
    """Merge layers, lowest precedence first; tables (repos, base_images) merge per key.

    Returns the settings and, for each key set by a layer, the source that set it last.
    Relative paths resolve against `base` (the directory the command runs in).
    """
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer in layers:
        _check_keys(layer)
        for key, raw in layer.values.items():
            value = _coerce(key, raw, layer.source, base)
            if key in _MAPPINGS and key in values:
                merged = dict(values[key])
                for sub, subvalue in value.items():
                    if isinstance(subvalue, Mapping) and isinstance(merged.get(sub), Mapping):
                        merged[sub] = {**merged[sub], **subvalue}
                    else:
                        merged[sub] = subvalue
                value = merged
            values[key] = value
            origin[key] = layer.source
    if "workdir" not in values:
        values["workdir"] = (base / Settings.workdir).resolve()
    return Settings(**values), origin


def file_layers(directory: Path) -> list[Layer]:
    """[tool.istiobuild] from pyproject.toml, then istiobuild.toml, from `directory`."""
    layers = []
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        data = _read_toml(pyproject)
        table = data.get("tool", {}).get("istiobuild")
        if table is not None:
            layers.append(Layer(f"{pyproject} [tool.istiobuild]", table))
    own = directory / "istiobuild.toml"
    if own.is_file():
        layers.append(Layer(str(own), _read_toml(own)))
    return layers


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data: dict[str, Any] = tomllib.load(fh)
            return data
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", hint="fix the file") from None


def env_layer(env: Mapping[str, str]) -> Layer:
    """ISTIOBUILD_<KEY>=value; ISTIOBUILD_REPOS_<COMPONENT>=url for per-repo URLs."""
    values: dict[str, Any] = {}
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key.startswith("repos_"):
            values.setdefault("repos", {})[key[len("repos_") :]] = value
            continue
        if key not in _FIELDS or key in _MAPPINGS:
            known = [f"{ENV_PREFIX}{k.upper()}" for k in _FIELDS if k not in _MAPPINGS]
            known += [f"{ENV_PREFIX}REPOS_{c.upper()}" for c in COMPONENT_NAMES]
            raise ConfigError(f"unknown environment variable {name}", hint=_suggest(name, known))
        values[key] = value
    return Layer("environment (ISTIOBUILD_*)", values)


def load(
    cli: Mapping[str, Any],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Settings, Mapping[str, str]]:
    """Settings for one command: files in `cwd`, the environment, then CLI flags (None = unset)."""
    directory = (cwd or Path.cwd()).resolve()
    environ = os.environ if env is None else env
    flags = {k: v for k, v in cli.items() if v is not None and v != ""}
    layers = [*file_layers(directory), env_layer(environ), Layer("command line", flags)]
    return resolve(layers, base=directory)

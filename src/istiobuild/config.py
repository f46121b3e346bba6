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
from istiobuild.grammar import CLI_SOURCE, ENV_PREFIX, ENV_SOURCE, setting_name
from istiobuild.kernel import check_target_kernel
from istiobuild.validate import check_page_size, check_path_text, validate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# ISTIOBUILD_* variables that are not settings (read by tests and tooling, not by resolve()).
ENV_NOT_SETTINGS = frozenset({"ISTIOBUILD_UPSTREAM_MIRRORS", "ISTIOBUILD_DEBUG"})
SECRET_KEYS = frozenset({"remote_header"})
COMPONENT_NAMES = ("proxy", "envoy", "istio")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """Every setting a build reads. Paths are absolute once resolved."""

    release: str = "1.5.0"
    arch: str = ""  # "" = the host's
    toolchain: str = "clang"
    workdir: Path = Path("istiobuild-work")
    cache_dir: Path | None = None  # None = the user's cache directory, shared by every workdir (`cache`)
    mirror: str = ""  # base URL or directory holding proxy, envoy, istio
    repos: Mapping[str, str] = dataclasses.field(default_factory=dict)  # per-component URL
    jobs: int = 0  # 0 = derived from cores and memory
    page_size: str = "auto"
    allocator: str = "auto"  # envoy's allocator on 1.22+: auto (from the target kernel), tcmalloc or gperftools
    target_kernel: str = ""  # the deployment kernel, page_size=64k[,va_bits=48] (normalised); "" = not given
    gn: str = "gn"
    ninja: str = "ninja"
    bazel: str = "bazel"
    hub: str = "istio"
    tag: str = ""  # "" = the release version
    base_images: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)
    remote_cache: str = ""  # bazel --remote_cache URL
    remote_header: str = ""  # bazel --remote_header value: a secret, never printed or logged
    remote_upload: bool = True  # upload local results to the remote cache (off: read it only)
    remote_executor: str = ""  # bazel --remote_executor URL, grpc(s):// (an RBE service; untested here)
    remote_platform: str = ""  # KEY=VALUE,... bazel --remote_default_exec_properties for the executor
    downloads: str = ""  # directory holding files upstream scripts would download (wasm, ...)
    ztunnel: str = ""  # a ztunnel binary built for the target (1.18+ lines pre-place it)
    ztunnel_sha256: str = ""  # its sha256, checked before any stage
    ztunnel_repo: str = ""  # or a ztunnel checkout at istio.deps' commit, built with cargo for the target
    cargo: str = "cargo"
    jvm_heap: str = "3g"  # bazel server -Xmx (small ARM machines OOM with the default)
    push: bool = False  # push the images to `hub` after verifying them
    in_container: bool = False  # run the toolchain, proxy and istio stages inside `builder`
    builder: str = ""  # builder image (dockerfiles/), for --in-container
    bazel_version: str = ""  # USE_BAZEL_VERSION for bazelisk (default: the release's .bazelversion)
    signing_key: str = ""  # ed25519 private key (PKCS#8 PEM, 0600) signing the provenance; "" = unsigned

    def __repr__(self) -> str:  # keep secrets (the header, credentials in URLs) out of tracebacks and debug output
        from istiobuild.secrets import redact_url

        def shown(name: str, value: Any) -> str:
            if name == "remote_header" and value:
                return "'***'"
            if name == "repos":
                return repr({k: redact_url(v) for k, v in value.items()})
            return repr(redact_url(value)) if isinstance(value, str) else repr(value)

        fields = ", ".join(f"{f.name}={shown(f.name, getattr(self, f.name))}" for f in dataclasses.fields(self))
        return f"Settings({fields})"

    @property
    def cache(self) -> Path:
        """The cache every workdir shares: cache_dir, else platformdirs' user cache directory
        ($XDG_CACHE_HOME/istiobuild or ~/.cache/istiobuild), read from the environment when asked."""
        if self.cache_dir is not None:
            return self.cache_dir
        import platformdirs

        return Path(platformdirs.user_cache_dir("istiobuild")).absolute()


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_MAPPINGS = {"repos", "base_images"}
_INTS = {"jobs"}
_BOOLS = {"push", "in_container", "remote_upload"}
_PATHS = {"workdir", "cache_dir"}
# What to give instead of an empty value, for the message.
_WANTED = {
    "release": "a release such as 1.5.0",
    "arch": "aarch64 or x86_64",
    "toolchain": "a toolchain profile such as clang",
    "gn": "a program name or absolute path",
    "ninja": "a program name or absolute path",
    "bazel": "a program name or absolute path",
    "workdir": "a directory",
    "cache_dir": "a directory",
    "downloads": "a directory",
    "ztunnel": "the path of a ztunnel binary",
    "ztunnel_sha256": "a sha256 (64 hex digits)",
    "ztunnel_repo": "a ztunnel git checkout",
    "cargo": "a program name or absolute path",
    "mirror": "a base URL or directory",
    "repos": "a repository URL or directory",
    "base_images": "an image reference",
    "hub": "a registry prefix such as docker.io/istio",
    "tag": "a tag such as 1.5.0",
    "jobs": "a number of jobs (0 = automatic)",
    "page_size": "auto, 4k or 64k",
    "target_kernel": "page_size=4k|64k[,va_bits=N]",
    "allocator": "auto, tcmalloc or gperftools",
    "jvm_heap": "a heap size such as 3g",
    "push": "true or false",
    "in_container": "true or false",
    "builder": "an image reference",
    "remote_cache": "a URL",
    "remote_header": "NAME=VALUE",
    "remote_upload": "on or off",
    "remote_executor": "a grpc:// or grpcs:// URL",
    "remote_platform": "KEY=VALUE[,KEY=VALUE...]",
    "bazel_version": "a version such as 2.0.0",
    "signing_key": "the path of a PEM private key",
}


@dataclasses.dataclass(frozen=True)
class Layer:
    """One source of settings: where it came from (for messages) and its raw values."""

    source: str
    values: Mapping[str, Any]


def _suggest(key: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(sorted(known))}"


def _empty(value: object) -> bool:
    return isinstance(value, str) and not value.strip()


def _empty_error(key: str, source: str, sub: str = "") -> ConfigError:
    undo = {ENV_SOURCE: "unset it", CLI_SOURCE: "leave the flag out"}.get(source, "remove it")
    return ConfigError(f"{setting_name(key, source, sub)} is empty; {undo} or give {_WANTED.get(key, 'a value')}")


def _check_empty(key: str, value: Any, source: str) -> None:
    """An explicitly empty value is an error wherever it is written (unset means: not written)."""
    if _empty(value):
        raise _empty_error(key, source)
    if not isinstance(value, Mapping):
        return
    for sub, inner in value.items():
        if _empty(sub) or _empty(inner):
            raise _empty_error(key, source, str(sub))
        if isinstance(inner, Mapping) and any(_empty(k) or _empty(v) for k, v in inner.items()):
            raise _empty_error(key, source, str(sub))


def _check_keys(layer: Layer) -> None:
    for key, value in layer.values.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown config key {key!r} in {layer.source}", hint=_suggest(key, list(_FIELDS)))
        _check_empty(key, value, layer.source)
        if key == "repos":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{setting_name(key, layer.source)} is not a table; write it as a [repos] table")
            for comp in value:
                if comp not in COMPONENT_NAMES:
                    raise ConfigError(
                        f"unknown repository {comp!r} under 'repos' in {layer.source}",
                        hint=_suggest(comp, COMPONENT_NAMES),
                    )


def _coerce_mapping(key: str, value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name} is {_kind(value)}, not a table; write it as a [{key}] table")
    if key != "base_images":
        if not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"every value under {name} must be a string; quote them")
        return dict(value)
    out: dict[str, dict[str, str]] = {}
    for arch, table in value.items():
        if not isinstance(table, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()
        ):
            raise ConfigError(
                f"{setting_name(key, None, str(arch))} in {name} must map image names to image names; "
                'write it as [base_images.aarch64] with "from" = "to" lines'
            )
        out[str(arch)] = dict(table)
    return out


def _coerce_int(value: Any, name: str) -> int:
    wrong = isinstance(value, (bool, float))
    try:
        number = int(value)
    except (TypeError, ValueError):
        wrong = True
    if wrong:
        raise ConfigError(f"{name} {value!r} is not a whole number; give a number of jobs (0 = automatic)")
    if number < 0:
        raise ConfigError(f"{name} {value!r} is negative; give a number of jobs (0 = automatic)")
    return number


def _coerce_bool(value: Any, name: str, wanted: str = "true or false") -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return text in ("1", "true", "yes", "on")
    raise ConfigError(f"{name} {value!r} is not {wanted}; give {wanted}")


def _coerce_path(value: str, name: str, base: Path, *, keep_link: bool = False) -> Path:
    check_path_text(value, name)
    try:
        path = base / Path(value).expanduser()
        if keep_link:  # the cache root: a symlink there stays visible, for cache.check_root to refuse it
            path = Path(os.path.normpath(path))
            return path.parent.resolve() / path.name
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"{name} {value!r} is not a usable path ({exc}); give a directory") from None


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(type(value), "a table or list")


def _coerce(key: str, value: Any, source: str, base: Path) -> Any:
    """Turn a raw value into the type the Settings field holds."""
    name = setting_name(key, source)
    if key in _MAPPINGS:
        return _coerce_mapping(key, value, name)
    if key in _INTS:
        return _coerce_int(value, name)
    if key in _BOOLS:
        return _coerce_bool(value, name, _WANTED[key])
    if not isinstance(value, str):
        shown = "(value hidden)" if key in SECRET_KEYS else repr(value)
        raise ConfigError(f"{name} {shown} is {_kind(value)}, not a string; quote it")
    if key in _PATHS:
        return _coerce_path(value, name, base, keep_link=key == "cache_dir")
    return _normalised(key, value, name)


def _normalised(key: str, value: str, name: str) -> str:
    """4K -> 4k; a sha256 in uppercase (as some tools print it) -> the lowercase sha256sum prints."""
    if key in ("page_size", "target_kernel"):
        return check_page_size(value, name) if key == "page_size" else check_target_kernel(value, name).spec()
    return value.strip().lower() if key == "ztunnel_sha256" else value


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
        tool = _read_toml(pyproject).get("tool", {})
        if not isinstance(tool, Mapping):
            raise ConfigError(f"[tool] in {pyproject} is {_kind(tool)}, not a table; make it a table or remove it")
        table = tool.get("istiobuild")
        if table is not None and not isinstance(table, Mapping):
            raise ConfigError(
                f"[tool] istiobuild in {pyproject} is {_kind(table)}, not a table; "
                "write the settings under a [tool.istiobuild] section"
            )
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
        raise ConfigError(f"{path} is not valid TOML: {exc}; fix the file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read ({exc.strerror or exc}); make it readable or remove it") from None


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
    return Layer(ENV_SOURCE, values)


def load(
    cli: Mapping[str, Any],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[Settings, Mapping[str, str]]:
    """Settings for one command: files in `cwd`, the environment, then CLI flags, validated.

    A CLI value of None is unset; "" (like an empty ISTIOBUILD_* variable or `key = ""` in a file)
    is an explicit empty value and an error. Every value is checked against its grammar
    (`validate.validate`) before anything runs.
    """
    directory = (cwd or Path.cwd()).resolve()
    environ = os.environ if env is None else env
    flags = {k: v for k, v in cli.items() if v is not None}
    layers = [*file_layers(directory), env_layer(environ), Layer(CLI_SOURCE, flags)]
    settings, origin = resolve(layers, base=directory)
    validate(settings, origin=origin)
    return settings, origin

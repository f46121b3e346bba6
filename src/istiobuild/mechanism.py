"""A release line's build mechanism: `[line.mechanism]` in releases/<line>.toml, validated on load.

How istio takes the local envoy, what must be pre-placed under istio's out dir so its init scripts
download nothing, how the arch reaches the Go build, what drives the images, the envoy bazel target,
ztunnel, the allocator and the LLVM toolchain, per line (docs/lines.md). Every value is a word of a
closed vocabulary. A fact that changes inside a line goes in `[line.mechanism.since."1.7.5"]`: a
partial table that holds from that release on.
"""

from __future__ import annotations

import dataclasses
import re
import string
from collections.abc import Mapping
from typing import Any, Literal, get_args

LocalEnvoy = Literal["use_local_proxy_init", "use_local_proxy_make", "istio_envoy_local", "preplace"]
GoArch = Literal["target_arch_build_linux_amd64", "target_arch_agent_binaries", "goarch_local"]
Images = Literal["make_docker", "docker_builder_make", "docker_builder_yaml"]
Ztunnel = Literal["none", "download_or_build"]
Allocator = Literal["default", "gperftools_forced", "tcmalloc_default_gperftools_optin"]
Llvm = Literal["local", "toolchains_llvm"]
Source = Literal["envoy", "ztunnel", "download"]  # what fills a pre-placed path

VOCABULARIES: Mapping[str, tuple[str, ...]] = {
    "local_envoy": get_args(LocalEnvoy),
    "arch": get_args(GoArch),
    "images": get_args(Images),
    "ztunnel": get_args(Ztunnel),
    "allocator": get_args(Allocator),
    "llvm": get_args(Llvm),
}
# What a pre-placed path template may name: istio's out dir ("out/..."), or the local envoy's directory
# ({envoy_dir}: with USE_LOCAL_PROXY=1 istio's Makefile makes it the envoy release dir).
PLACEHOLDERS = ("goarch", "proxy_sha", "ztunnel_sha", "envoy_dir")
# Where istio's binaries keep their build information (common/scripts/report_build_info.sh's -X keys).
VERSION_PACKAGES = ("istio.io/pkg/version", "istio.io/istio/pkg/version")  # the second from 1.19
_KEYS = (
    *VOCABULARIES,
    "preplace",
    "definitions",
    "wee8",
    "envoy_target",
    "envoy_output",
    "aarch64_work",
    "version_package",
    "rc_compiler",
    "rc_path",
    "v8_prerun",
)
_OPTIONAL = {
    "definitions": "",
    "version_package": VERSION_PACKAGES[0],
    "rc_compiler": False,
    "rc_path": "",
    "v8_prerun": False,
}
_SINCE = re.compile(r"^(\d+\.\d+)\.\d+$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_.{}-]+$")
_BAZEL_LABEL = re.compile(r"^//[A-Za-z0-9_/.-]*:[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mechanism:
    """How one release is built upstream's way (the line's mechanism with its `since` changes applied)."""

    local_envoy: LocalEnvoy
    preplace: tuple[str, ...]  # path templates (PLACEHOLDERS) that must exist before istio's `make`
    arch: GoArch
    images: Images
    definitions: str  # the image definitions docker-builder reads ("" unless images = docker_builder_yaml)
    wee8: bool  # envoy builds V8 (wee8) with gn/ninja
    envoy_target: str  # proxy Makefile.core.mk build_envoy BAZEL_TARGETS
    envoy_output: str  # relative to the proxy checkout
    ztunnel: Ztunnel
    allocator: Allocator
    llvm: Llvm
    aarch64_work: tuple[str, ...]  # what a build for aarch64 still needs, in short
    version_package: str = VERSION_PACKAGES[0]  # the Go package BUILDINFO's -X keys name
    # The proxy's bazel rc names the compiler (envoy.bazelrc `build:clang --action_env=CC=clang`, 1.13+), and
    # from 1.25 fixes the actions' PATH (.bazelrc `build:linux --action_env=PATH=...`): the bare `clang` would be
    # whichever that PATH finds first, not the chosen profile's. The proxy stage sets them after the configs.
    rc_compiler: bool = False
    rc_path: str = ""
    # The proxy Makefile's build_envoy first runs `prerun_v8_build` (1.12, 1.13): a `bazel query` without the
    # driver's startup args or envoy override (a second bazel server under its HOME, the unpatched upstream envoy
    # fetched), then V8 alone with the driver's flags. The main build compiles V8 anyway: the proxy stage runs
    # make with `--assume-old=prerun_v8_build`.
    v8_prerun: bool = False

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def paths(self, **values: str) -> tuple[str, ...]:
        """The pre-placed paths with the placeholders filled in from `values` (one per PLACEHOLDERS name)."""
        return tuple(string.Formatter().vformat(p, (), values) for p in self.preplace)

    def describe(self, goarch: str) -> str:
        """One line: how the envoy, the images, ztunnel, the allocator and LLVM are handled."""
        shown = self.paths(goarch=goarch, proxy_sha="<proxy_sha>", ztunnel_sha="<ztunnel_sha>", envoy_dir="<envoy_dir>")
        listed = ", ".join(shown[:4]) + (f", +{len(shown) - 4} more" if len(shown) > 4 else "")
        parts = [
            {
                "use_local_proxy_init": "envoy via USE_LOCAL_PROXY=1 in the Makefile and init.sh",
                "use_local_proxy_make": "envoy via USE_LOCAL_PROXY=1 in the Makefile",
                "istio_envoy_local": "envoy via ISTIO_ENVOY_LOCAL",
                "preplace": f"envoy pre-placed ({listed})",
            }[self.local_envoy]
        ]
        parts += [f"pre-placed ({listed})"] if shown and self.local_envoy != "preplace" else []
        parts += [
            {
                "make_docker": "images by istio's make docker targets",
                "docker_builder_make": "images by tools/docker-builder from the make docker targets",
                "docker_builder_yaml": f"images by tools/docker-builder from {self.definitions}",
            }[self.images]
        ]
        parts += ["wee8 via gn/ninja"] if self.wee8 else []
        parts += ["ztunnel"] if self.ztunnel != "none" else []
        parts += {
            "default": [],
            "gperftools_forced": ["gperftools tcmalloc"],
            "tcmalloc_default_gperftools_optin": ["Google tcmalloc (gperftools opt-in)"],
        }[self.allocator]
        parts += ["toolchains_llvm"] if self.llvm == "toolchains_llvm" else []
        return ", ".join(parts)


def source_of(path: str) -> Source:
    """What a pre-placed path holds, from its file name: the envoy the proxy stage built (`envoy`,
    `envoy-<sha>`, `envoy-centos-<sha>`: istio's centos image carries the same target envoy), ztunnel (supplied
    with --ztunnel), or a file the release's `downloads` place (the wasm plugins)."""
    name = path.rsplit("/", 1)[-1]
    if name == "envoy" or name.startswith(("envoy-{", "envoy-centos-{")):
        return "envoy"
    if name == "ztunnel" or name.startswith("ztunnel-{"):
        return "ztunnel"
    if name.endswith(".wasm"):
        return "download"
    raise ValueError(f"preplace {path!r}: not an envoy, ztunnel or .wasm file name")


def parse(raw: Any, *, line: str, version: str) -> Mechanism:
    """The mechanism of release `version` of `line`; ValueError says what is wrong with the table."""
    if not isinstance(raw, Mapping):
        raise ValueError("must be a table")
    since = raw.get("since", {})
    if not isinstance(since, Mapping):
        raise ValueError("since must be a table of releases")
    values = {k: v for k, v in raw.items() if k != "since"}
    _check_keys(values, where="", partial=False)
    for start, change in sorted(since.items(), key=lambda item: _key(item[0])):
        found = _SINCE.match(start)
        if not found or found[1] != line:
            raise ValueError(f"since {start!r}: not a release of line {line}")
        if not isinstance(change, Mapping):
            raise ValueError(f"since {start!r}: must be a table")
        _check_keys(change, where=f"since {start!r}: ", partial=True)
        if _key(version) >= _key(start):
            values.update(change)
    return _build(values)


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def _check_keys(table: Mapping[str, Any], *, where: str, partial: bool) -> None:
    unknown = set(table) - set(_KEYS)
    if unknown:
        raise ValueError(f"{where}unknown keys {sorted(unknown)} (known: {', '.join(_KEYS)})")
    missing = [] if partial else [k for k in _KEYS if k not in table and k not in _OPTIONAL]
    if missing:
        raise ValueError(f"{where}missing {missing}")


def _word(values: Mapping[str, Any], key: str) -> Any:
    value = values[key]
    if value not in VOCABULARIES[key]:
        raise ValueError(f"{key} = {value!r}: must be one of {', '.join(VOCABULARIES[key])}")
    return value


def _strings(values: Mapping[str, Any], key: str) -> tuple[str, ...]:
    items = values[key]
    if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
        raise ValueError(f"{key} must be a list of non-empty strings")
    return tuple(items)


def _build(values: Mapping[str, Any]) -> Mechanism:
    for key in ("definitions", "envoy_target", "envoy_output", "rc_path"):
        if not isinstance(values.get(key, ""), str):
            raise ValueError(f"{key} must be a string")
    for key in ("wee8", "rc_compiler", "v8_prerun"):
        if not isinstance(values.get(key, False), bool):
            raise ValueError(f"{key} must be true or false")
    found = Mechanism(
        local_envoy=_word(values, "local_envoy"),
        preplace=_strings(values, "preplace"),
        arch=_word(values, "arch"),
        images=_word(values, "images"),
        definitions=values.get("definitions", ""),
        wee8=values["wee8"],
        envoy_target=values["envoy_target"],
        envoy_output=values["envoy_output"],
        ztunnel=_word(values, "ztunnel"),
        allocator=_word(values, "allocator"),
        llvm=_word(values, "llvm"),
        aarch64_work=_strings(values, "aarch64_work"),
        version_package=values.get("version_package", VERSION_PACKAGES[0]),
        rc_compiler=values.get("rc_compiler", False),
        rc_path=values.get("rc_path", ""),
        v8_prerun=values.get("v8_prerun", False),
    )
    if found.version_package not in VERSION_PACKAGES:
        raise ValueError(f"version_package {found.version_package!r}: must be one of {', '.join(VERSION_PACKAGES)}")
    _check_paths(found)
    return found


def _check_paths(m: Mechanism) -> None:
    if (m.images == "docker_builder_yaml") != bool(m.definitions):
        raise ValueError("definitions names the image definitions file exactly when images = 'docker_builder_yaml'")
    if m.definitions:
        _relative("definitions", m.definitions, placeholders=())
    if not _BAZEL_LABEL.match(m.envoy_target):
        raise ValueError(f"envoy_target {m.envoy_target!r} is not a bazel label //package:name")
    _relative("envoy_output", m.envoy_output, placeholders=())
    if not m.envoy_output.startswith("bazel-bin/"):
        raise ValueError(f"envoy_output {m.envoy_output!r} must be under bazel-bin/")
    allowed = PLACEHOLDERS if m.ztunnel != "none" else tuple(p for p in PLACEHOLDERS if p != "ztunnel_sha")
    for path in m.preplace:
        _relative("preplace", path, placeholders=allowed)
        if not path.startswith(("out/", "{envoy_dir}/")):
            raise ValueError(f"preplace {path!r} must be under istio's out/ or {{envoy_dir}}/")
        if "{envoy_dir}" in path[1:]:
            raise ValueError(f"preplace {path!r}: {{envoy_dir}} may only begin a path")
        if source_of(path) == "ztunnel" and m.ztunnel == "none":
            raise ValueError(f"preplace {path!r}: a ztunnel path, but ztunnel = 'none'")


def _relative(key: str, path: str, *, placeholders: tuple[str, ...]) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts):
        raise ValueError(f"{key} {path!r} must be a relative path without '.', '..' or empty parts")
    try:
        named = {name for _, name, _, _ in string.Formatter().parse(path) if name is not None}
    except ValueError:
        raise ValueError(f"{key} {path!r} has an unbalanced brace") from None
    unknown = named - set(placeholders)
    if unknown:
        known = ", ".join("{" + p + "}" for p in placeholders) or "none"
        raise ValueError(f"{key} {path!r}: unknown placeholder(s) {sorted(unknown)} (known: {known})")

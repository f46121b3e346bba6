"""Images from istio's own image definitions (tools/docker.yaml, 1.14+), the way tools/docker-builder uses them.

docker-builder (istio tools/docker-builder, read at 1.22.0: main.go ReadPlan, docker.go RunDocker/CopyInputs,
common.go createArgs) expands `${VAR}` in docker.yaml (TARGET_OS, TARGET_ARCH, TARGET_OUT, TARGET_OUT_LINUX,
SIDECAR=envoy, RELEASE_MODE=release), runs `make <every image's targets>` once, copies each image's dockerfile,
files and targets with istio's tools/docker-copy.sh into out/linux_<arch>/dockerx_build/build.docker.<name>, and
hands those contexts to `docker buildx bake` with the build args BASE_VERSION, ISTIO_BASE_REGISTRY,
BASE_DISTRIBUTION, proxy_version, ztunnel_version, istio_version (plus TARGETARCH/TARGETOS, which buildx sets).
This machine has no buildx: the same contexts and args go to the classic builder (DOCKER_BUILDKIT=0), one
`docker build` per image, with TARGETARCH/TARGETOS passed as build args as docker-builder does for crane.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from istiobuild.errors import StepFailed
from istiobuild.executor import Executor
from istiobuild.preplace import ZTUNNEL_DEPS, deps_sha
from istiobuild.steps import Action, Command

_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
# Makefile.core.mk lines docker-builder reads the base image's registry and version from (common.go).
_MAKE_DEFAULT = re.compile(r"^(BASE_VERSION|ISTIO_BASE_REGISTRY) \?= (\S+)\s*$", re.MULTILINE)
_KEYS = {"name", "dockerfile", "files", "targets", "base", "emulationRequired"}


@dataclasses.dataclass(frozen=True)
class ImageDef:
    """One entry of docker.yaml's `images` list, its variables expanded."""

    name: str
    dockerfile: str
    files: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    base: bool = False

    def dependencies(self) -> tuple[str, ...]:
        """What docker-copy.sh copies into the context (docker-builder's ImagePlan.Dependencies)."""
        return (self.dockerfile, *self.files, *self.targets)


def variables(istio: Path, goarch: str) -> dict[str, str]:
    """The values docker-builder expands docker.yaml with (archToEnvMap plus SIDECAR and RELEASE_MODE)."""
    out = istio / "out" / f"linux_{goarch}"
    return {
        "TARGET_OS": "linux",
        "TARGET_ARCH": goarch,
        "TARGET_OUT": str(out),
        "TARGET_OUT_LINUX": str(out),
        "SIDECAR": "envoy",
        "RELEASE_MODE": "release",
    }


def expand(text: str, values: Mapping[str, str], *, where: str) -> str:
    """`${VAR}`/`$VAR` replaced from `values`; docker-builder falls back to its environment, istiobuild refuses."""

    def one(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in values:
            raise ValueError(f"{where} names ${{{name}}}, which istiobuild does not set (known: {', '.join(values)})")
        return values[name]

    return _VARIABLE.sub(one, text)


def load(path: Path, values: Mapping[str, str]) -> tuple[ImageDef, ...]:
    """The image definitions in `path`, expanded; ValueError says what is wrong."""
    try:
        raw = yaml.safe_load(expand(path.read_text(encoding="utf-8"), values, where=str(path)))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("images"), list):
        raise ValueError(f"{path} has no `images` list")
    found = [_entry(item, where=f"{path} images[{i}]") for i, item in enumerate(raw["images"])]
    names = [d.name for d in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{path} defines {', '.join(duplicated)} more than once")
    return tuple(found)


def _entry(item: Any, *, where: str) -> ImageDef:
    if not isinstance(item, Mapping) or set(item) - _KEYS:
        raise ValueError(f"{where}: must be a table of {', '.join(sorted(_KEYS))}")
    name, dockerfile = item.get("name"), item.get("dockerfile")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}: name {name!r} is not an image name")
    lists = {k: item.get(k) or [] for k in ("files", "targets")}
    if not isinstance(dockerfile, str) or not all(
        isinstance(v, list) and all(isinstance(s, str) and s for s in v) for v in lists.values()
    ):
        raise ValueError(f"{where} ({name}): dockerfile must be a path, files and targets lists of paths")
    for item_path in (dockerfile, *lists["files"], *lists["targets"]):
        _check_path(item_path, where=f"{where} ({name})")
    return ImageDef(
        name=name,
        dockerfile=dockerfile,
        files=tuple(lists["files"]),
        targets=tuple(lists["targets"]),
        base=bool(item.get("base", False)),
    )


def _check_path(path: str, *, where: str) -> None:
    """A dependency is a path in the checkout (relative, no `..`) or, expanded, under its out/; never an option."""
    parts = path.split("/")
    inside_out = path.startswith("/") and "/out/linux_" in path
    if path.startswith("-") or ".." in parts or (path.startswith("/") and not inside_out) or "\n" in path:
        raise ValueError(f"{where}: {path!r} is not a path inside the checkout or its out/ directory")


def select(defs: Sequence[ImageDef], docker_targets: Sequence[str], *, where: str) -> tuple[ImageDef, ...]:
    """The definitions DOCKER_TARGETS (docker.<name>) names, in its order; unknown names refused as docker-builder
    refuses them ("unknown targets")."""
    by_name = {d.name: d for d in defs}
    wanted = [t.removeprefix("docker.") for t in docker_targets]
    unknown = [w for w in wanted if w not in by_name]
    if unknown:
        raise ValueError(f"unknown targets {unknown}: {where} defines {', '.join(sorted(by_name))}")
    return tuple(by_name[w] for w in wanted)


def make_defaults(makefile: str) -> dict[str, str]:
    """BASE_VERSION (and, from 1.17, ISTIO_BASE_REGISTRY) as Makefile.core.mk's text sets them (docker-builder's
    fetchBaseVersion/fetchIstioBaseReg)."""
    found = dict(_MAKE_DEFAULT.findall(makefile))
    if "BASE_VERSION" not in found:
        raise ValueError("sets no BASE_VERSION (`BASE_VERSION ?= value`)")
    return found


def build_args(defaults: Mapping[str, str], versions: Mapping[str, str], goarch: str) -> dict[str, str]:
    """docker-builder's createArgs for the default variant (debug), TARGETARCH/TARGETOS as for crane; the registry
    and ztunnel_version where this istio has them (1.17+, 1.18+)."""
    return {
        **defaults,
        "BASE_DISTRIBUTION": "debug",
        "proxy_version": versions["proxy"],
        **({"ztunnel_version": versions["ztunnel"]} if versions.get("ztunnel") else {}),
        "istio_version": versions["istio"],
        "VM_IMAGE_NAME": "",
        "VM_IMAGE_VERSION": "",
        "TARGETARCH": goarch,
        "TARGETOS": "linux",
    }


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildFromDefinitions(Action):
    """Every image DOCKER_TARGETS names, from its definition in `definitions`, with the classic builder."""

    istio: Path
    definitions: str  # relative to istio
    docker_targets: tuple[str, ...]
    goarch: str
    hub: str
    tag: str
    versions: Mapping[str, str]  # proxy, istio (ztunnel: read from istio.deps where it pins one)
    env: Mapping[str, str]

    def render(self) -> str:
        values = variables(self.istio, self.goarch)
        context = f"{values['TARGET_OUT_LINUX']}/dockerx_build/build.docker.<name>"
        return (
            f"read {self.istio / self.definitions} (expanded with {', '.join(f'{k}={v}' for k, v in values.items())}) "
            f"for {', '.join(self.docker_targets)}; run `make --no-print-directory <their targets>` in {self.istio} "
            f"once; per image: recreate {context}, copy its dockerfile, files and targets there with "
            f"tools/docker-copy.sh (TARGET_ARCH={self.goarch}: ELF files under {self.goarch}/); `docker build` "
            f"(classic builder, DOCKER_BUILDKIT=0, no buildx here) -f <dockerfile's name> "
            f"-t {self.hub}/<name>:{self.tag} with BASE_VERSION (and ISTIO_BASE_REGISTRY) from Makefile.core.mk, "
            f"BASE_DISTRIBUTION=debug, "
            f"proxy_version={self.versions['proxy']}, istio_version={self.versions['istio']}, ztunnel_version from "
            f"istio.deps (where it pins one), TARGETARCH={self.goarch}, TARGETOS=linux"
        )

    def perform(self, ex: Executor) -> None:
        values = variables(self.istio, self.goarch)
        try:
            chosen = select(load(self.istio / self.definitions, values), self.docker_targets, where=self.definitions)
            versions = {**self.versions, "ztunnel": deps_sha(self.istio, ZTUNNEL_DEPS)}
            makefile = (self.istio / "Makefile.core.mk").read_text(encoding="utf-8")
            args = build_args(make_defaults(makefile), versions, self.goarch)
        except (OSError, ValueError) as exc:
            raise StepFailed(f"image definitions: {exc}", log=ex.log) from None
        targets = sorted({"init", *(t for d in chosen for t in d.targets)})
        ex.command(self._command(["make", "--no-print-directory", "--", *targets], "the images' make targets"))
        for image in chosen:
            context = Path(values["TARGET_OUT_LINUX"]) / "dockerx_build" / f"build.docker.{image.name}"
            shutil.rmtree(context, ignore_errors=True)
            copy = ["tools/docker-copy.sh", *image.dependencies(), str(context)]
            ex.command(self._command(copy, f"{image.name}: its inputs into the context"))
            build = ["docker", "build", "-f", str(context / Path(image.dockerfile).name)]
            build += [f"--build-arg={k}={v}" for k, v in args.items()]
            build += ["-t", f"{self.hub}/{image.name}:{self.tag}", "--", str(context)]
            ex.command(self._command(build, f"{image.name} (classic builder)"))
            ex.console.info(f"images: {self.hub}/{image.name}:{self.tag} from {image.dockerfile}")

    def _command(self, argv: Sequence[str], description: str) -> Command:
        return Command(argv=tuple(argv), cwd=self.istio, env=dict(self.env), description=description)

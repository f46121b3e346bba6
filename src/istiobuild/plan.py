"""The build plan: a pure, frozen description of every stage, made before anything runs.

`make_plan` reads only shipped data (release matrix, patch series, toolchain profiles) and its
arguments; it never runs a subprocess or touches the workdir. Executors only run plans.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild import patches as patchmod
from istiobuild.arch import Arch
from istiobuild.config import Settings
from istiobuild.downloads import OFFLINE_URL, fill
from istiobuild.errors import UsageError
from istiobuild.release import Component, LocalProxy, Release
from istiobuild.sources import cache_repo, release_dir, sources
from istiobuild.toolchain import Family, Toolchain


class StageName(enum.Enum):
    CHECKOUT = "checkout"
    PATCH = "patch"
    TOOLCHAIN = "toolchain"
    PROXY = "proxy"
    ISTIO = "istio"
    IMAGES = "images"
    VERIFY = "verify"
    PUBLISH = "publish"
    RECORD = "record"


# Stages `invoke build` runs today; the others are planned and shown, and come with later work.
IMPLEMENTED = frozenset(StageName)
INTERNAL = "istiobuild"  # argv[0] of steps istiobuild performs itself (git plumbing, verification)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Step:
    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""
    container: str = ""  # builder image the command runs in ("" = on the host)

    def render(self) -> str:
        delta = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        inside = f"[in {self.container}] " if self.container else ""
        return f"{inside}(cd {shlex.quote(self.cwd)} && {delta + ' ' if delta else ''}{shlex.join(self.argv)})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stage:
    name: StageName
    summary: str
    steps: tuple[Step, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    patches: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    notes: tuple[str, ...] = ()
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # structured input for the executor

    @property
    def implemented(self) -> bool:
        return self.name in IMPLEMENTED


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildPlan:
    release: str
    arch: Arch
    host: Arch
    toolchain: str
    workdir: str
    tag: str
    page_size: str
    stages: tuple[Stage, ...]
    notes: tuple[str, ...] = ()

    def stage(self, name: StageName | str) -> Stage:
        wanted = StageName(name) if isinstance(name, str) else name
        return next(s for s in self.stages if s.name == wanted)

    def to_json(self) -> dict[str, Any]:
        def enc(obj: Any) -> Any:
            if isinstance(obj, enum.Enum):
                return obj.value
            if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
                data = {f.name: enc(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
                if isinstance(obj, Stage):
                    data["implemented"] = obj.implemented
                return data
            if isinstance(obj, Mapping):
                return {str(k): enc(v) for k, v in obj.items()}
            if isinstance(obj, (tuple, list)):
                return [enc(v) for v in obj]
            return obj

        return enc(self)  # type: ignore[no-any-return]

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


# Paths end up inside make variables and bazel flags that a shell splits on whitespace.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+@%:,=-]+$")


def _check_path(path: Path, what: str) -> str:
    text = str(path)
    if not _SAFE_PATH.match(text):
        raise UsageError(
            f"{what} {text!r} contains spaces or shell metacharacters",
            hint="upstream Makefiles pass it through a shell: choose a path of letters, digits, "
            "and . _ - / only (--workdir / ISTIOBUILD_WORKDIR)",
        )
    return text


def base_image_map(release: Release, settings: Settings, arch: Arch) -> dict[str, str]:
    """The release's base-image defaults for the arch, overridden per image by base_images.<arch>."""
    return {**release.base_images.get(arch, {}), **settings.base_images.get(arch.value, {})}


def remote_flagfile(settings: Settings) -> Path:
    return settings.cache / "secrets" / "remote-header.flags"


def secret_bazel_flags(settings: Settings) -> list[str]:
    flags = []
    if settings.remote_cache and redact_url(settings.remote_cache) != settings.remote_cache:
        flags.append(f"--remote_cache={settings.remote_cache}")
    if settings.remote_header:
        flags.append(f"--remote_header={settings.remote_header}")
    return flags


def redact_url(url: str) -> str:
    """A URL without credentials (https://user:token@host/ -> https://***@host/)."""
    return re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]+@", r"\1***@", url)


def make_plan(
    release: Release, arch: Arch, toolchain: Toolchain, settings: Settings, *, host: Arch, host_page_size: str = "4k"
) -> BuildPlan:
    """Every stage of the pipeline for (release, arch, toolchain, settings)."""
    if settings.in_container:
        if not settings.builder:
            raise UsageError(
                "--in-container needs a builder image",
                hint="build one from dockerfiles/ (see dockerfiles/README.md) and pass --builder IMAGE",
            )
        # inside the builder the target arch is native (or emulated): no cross compilation
        host = arch
    root = release_dir(settings, release)
    _check_path(settings.workdir, "workdir")
    _check_path(settings.cache, "cache_dir")
    srcs = {s.component: s for s in sources(release, settings)}
    proxy_dir = str(srcs[Component.PROXY].path)
    envoy_dir = str(srcs[Component.ENVOY].path)
    istio_dir = str(srcs[Component.ISTIO].path)
    out_dir = settings.workdir / f"{release.version}-{arch.value}"
    artifacts = out_dir / "artifacts"
    tag = settings.tag or release.version
    # "auto": the kernel this builds on, when it is also the target; a cross build assumes 4K.
    page_size = settings.page_size if settings.page_size != "auto" else (host_page_size if arch == host else "4k")
    tc_env = toolchain.env_for(arch, host)
    notes: list[str] = []
    if release.note:
        notes.append(release.note)
    envoy_pin = release.pins[Component.ENVOY]
    if envoy_pin.public_repo:
        notes.append(
            f"envoy is pinned to {envoy_pin.repo}@{envoy_pin.commit[:12]}; fetched from the public "
            f"{envoy_pin.public_repo}, where the same commit exists"
        )
    if arch != host:
        notes.append(f"target {arch} differs from host {host}: aarch64 output is run under qemu-user (binfmt)")

    # -- checkout
    checkout_steps = []
    for comp in Component:
        src = srcs[comp]
        cache = str(cache_repo(settings, comp))
        checkout_steps.append(
            Step(
                argv=(
                    "git",
                    "fetch",
                    "--depth=1",
                    "--no-tags",
                    src.url,
                    f"+{src.pin.commit}:refs/istiobuild/pins/{src.pin.commit}",
                ),
                cwd=cache,
                description=f"{comp}: fetch the pinned commit into the object cache (full fetch if refused)"
                + (f"; tag {src.pin.tag} must still point at it" if src.pin.tag else ""),
            )
        )
        checkout_steps.append(
            Step(
                argv=("git", "checkout", "--detach", src.pin.commit),
                cwd=str(src.path),
                description=f"{comp}: check out {src.pin.commit[:12]} (objects borrowed from the cache)",
            )
        )
    checkout = Stage(
        name=StageName.CHECKOUT,
        summary="check out proxy, envoy and istio at their pinned commits, as siblings",
        steps=tuple(checkout_steps),
        inputs=tuple(
            f"{c}: {srcs[c].url} ({srcs[c].via}) {srcs[c].pin.tag or '-'} {srcs[c].pin.commit}" for c in Component
        ),
        outputs=(proxy_dir, envoy_dir, istio_dir),
    )

    # -- patch
    selected = {c: patchmod.select(release, c, arch, page_size) for c in Component}
    base_map = base_image_map(release, settings, arch)
    patch_steps = tuple(
        Step(
            argv=("git", "apply", *[p.name for p in selected[c]]),
            cwd=str(srcs[c].path),
            description=f"{c}: check all, then apply all ({len(selected[c])} patches) or none",
        )
        for c in Component
        if selected[c]
    )
    patch_notes = []
    if base_map:
        patch_notes.append(
            "istio: base images rewritten by a generated patch from base_images."
            + arch.value
            + ": "
            + ", ".join(f"{k} -> {v}" for k, v in sorted(base_map.items()))
        )
    patch = Stage(
        name=StageName.PATCH,
        summary="apply the release's patch series (atomic, idempotent, recorded)",
        steps=patch_steps,
        inputs=tuple(p.name for c in Component for p in selected[c]),
        outputs=tuple(f"{srcs[c].path}/.git/{patchmod.STATE_FILE}" for c in Component if selected[c]),
        patches={c.value: tuple(p.name for p in selected[c]) for c in Component},
        notes=tuple(patch_notes),
        data={"base_images": base_map},
    )

    # -- toolchain
    binaries = toolchain.binaries_for(arch, host)
    toolchain_stage = Stage(
        name=StageName.TOOLCHAIN,
        summary=f"check toolchain {toolchain.name} ({toolchain.description}), version {toolchain.version_range}",
        steps=(Step(argv=(binaries["cc"], "--version"), cwd=str(root), env=tc_env, description="compiler version"),),
        inputs=tuple(f"{k}={v}" for k, v in sorted(binaries.items())),
        outputs=(),
        notes=(f"bazel configs: {' '.join('--config=' + c for c in toolchain.bazel_configs)}",),
    )

    # -- proxy (envoy)
    bazel_args = [
        f"--override_repository=envoy={envoy_dir}",
        "--action_env=GN",
        "--action_env=NINJA",
        f"--disk_cache={settings.cache / 'bazel-disk'}",
        "--verbose_failures",
    ]
    if settings.jobs:
        bazel_args.append(f"--jobs={settings.jobs}")
    if settings.remote_cache and redact_url(settings.remote_cache) == settings.remote_cache:
        bazel_args.append(f"--remote_cache={settings.remote_cache}")
    if secret_bazel_flags(settings):
        # Secrets (a remote header, a cache URL with credentials) live in a 0600 flag file written
        # at run time: never in argv, the plan, the screen or a log.
        bazel_args.append(f"--flagfile={remote_flagfile(settings)}")
    if toolchain.family is Family.GCC:
        bazel_args.append("--action_env=BAZEL_COMPILER")
    if arch != host and toolchain.family is Family.CLANG:
        # clang cross-compiles with --target; a gcc cross compiler is named by CC itself.
        bazel_args += [f"--copt=--target={arch.triple}", f"--linkopt=--target={arch.triple}"]
    bazel_configs = list(toolchain.bazel_configs)
    proxy_env = {**tc_env, "GN": settings.gn, "NINJA": settings.ninja}
    cross_steps: list[Step] = []
    if arch != host:
        # Bazel's autoconfigured C++ toolchain probes CC (include dirs, ld.gold) and links with
        # -B<dir of CC> -fuse-ld=gold: CC and CXX must name the target arch themselves (clang reads
        # the target from its name) and live in a directory of their own, not /usr/bin, whose
        # ld.gold is the host's.
        bindir = settings.cache / "toolchain" / arch.value / "bin"
        links = []
        for var in ("CC", "CXX"):
            name = tc_env[var]
            link = name if name.startswith(f"{arch.triple}-") else f"{arch.triple}-{name}"
            links.append(f"{link}={name}")
            proxy_env[var] = str(bindir / link)
        cross_steps.append(
            Step(
                argv=(INTERNAL, "cross-links", str(bindir), *links),
                cwd=proxy_dir,
                description=f"CC/CXX for {arch} as links named for the target, in a directory of their own",
            )
        )
        if "libc++" in bazel_configs:
            # Debian's libc++ for another arch cannot be installed next to the host's: link the
            # cross compiler's libstdc++ instead (--config=clang: clang without libc++).
            bazel_configs = ["clang" if c == "libc++" else c for c in bazel_configs]
            proxy_env.update(BAZEL_CXXOPTS="-std=c++17", BAZEL_LINKLIBS="-l%:libstdc++.a:-lm")
    configs = " ".join(f"--config={c}" for c in bazel_configs)
    if settings.bazel_version:
        proxy_env["USE_BAZEL_VERSION"] = settings.bazel_version
    envoy_binary = Path(proxy_dir) / release.envoy_output
    proxy = Stage(
        name=StageName.PROXY,
        summary=f"build envoy ({release.envoy_target}) with bazel through the proxy's make build_envoy",
        steps=(
            *cross_steps,
            Step(
                argv=(
                    "make",
                    "build_envoy",
                    f"BAZEL_BUILD_ARGS={' '.join(bazel_args)}",
                    f"BAZEL_CONFIG_REL={configs}",
                    "BAZEL_STARTUP_ARGS="
                    + " ".join(
                        (
                            f"--output_user_root={settings.cache / 'bazel-root'}",
                            f"--host_jvm_args=-Xmx{settings.jvm_heap}",
                            "--max_idle_secs=600",
                        )
                    ),
                ),
                cwd=proxy_dir,
                env=proxy_env,
                description="bazel build; wee8 via gn/ninja from GN/NINJA",
            ),
            Step(
                argv=(INTERNAL, "collect-envoy", str(envoy_binary), str(artifacts / "envoy")),
                cwd=str(root),
                description=f"copy envoy with its sha256, check it is an ELF for {arch}, run --version",
            ),
        ),
        inputs=(proxy_dir, envoy_dir, f"bazel {release.bazel_version}", f"wee8 {release.wee8 or '-'}"),
        outputs=(str(envoy_binary), str(artifacts / "envoy")),
        notes=tuple([f"wee8 {release.wee8} is built by a genrule running gn and ninja"] if release.wee8 else []),
    )

    # -- istio
    istio_env = {
        "BUILD_WITH_CONTAINER": "0",
        "TARGET_ARCH": arch.goarch,
        "GOARCH": arch.goarch,
        "GOOS": "linux",
        "VERBOSE": "1",
    }
    local_envoy = str(artifacts / "envoy")
    # init.sh must never fetch anything unpinned: its download URLs point nowhere, and every file
    # it would download is placed by istiobuild first (see docs/downloads.md).
    offline = {
        "ISTIO_ENVOY_BASE_URL": OFFLINE_URL,
        "ISTIO_ENVOY_LINUX_DEBUG_URL": OFFLINE_URL,
        "ISTIO_ENVOY_LINUX_RELEASE_URL": OFFLINE_URL,
    }
    if release.gopath:
        istio_env["GOPATH"] = str(out_dir / "gopath")
        istio_out = out_dir / "gopath" / "out" / f"linux_{arch.goarch}" / "release"
    else:
        istio_out = Path(istio_dir) / "out" / f"linux_{arch.goarch}"
    local = release.local_proxy
    placements: list[dict[str, Any]] = []
    match local:
        case LocalProxy.USE_LOCAL_PROXY:
            istio_env.update(USE_LOCAL_PROXY="1", ISTIO_ENVOY_LOCAL=local_envoy, ISTIO_ENVOY_LOCAL_PATH=local_envoy)
            local_note = (
                f"USE_LOCAL_PROXY=1 (siblings proxy, istio: ../proxy/{release.envoy_output}); ISTIO_ENVOY_LOCAL "
                "names the checked copy in artifacts/"
            )
        case LocalProxy.ISTIO_ENVOY_LOCAL:
            istio_env.update(ISTIO_ENVOY_LOCAL=local_envoy, ISTIO_ENVOY_LOCAL_PATH=local_envoy)
            local_note = "ISTIO_ENVOY_LOCAL points at the envoy we built"
        case LocalProxy.RELEASE_PATH:
            istio_env["DOCKER_ARCHITECTURES"] = arch.oci_platform
            proxy_sha = release.pins[Component.PROXY].commit
            placements.append(
                {"from": local_envoy, "into": str(istio_out / "release"), "place": [f"envoy-{proxy_sha}", "envoy"]}
            )
            local_note = "envoy pre-placed at ISTIO_ENVOY_LINUX_RELEASE_PATH (download skipped)"
    istio_env.update(offline)
    values = {"proxy_sha": release.pins[Component.PROXY].commit, "goarch": arch.goarch, "version": release.version}
    downloads = []
    for raw in release.downloads:
        item = {k: fill(v, values) if isinstance(v, str) else [fill(x, values) for x in v] for k, v in raw.items()}
        item["into"] = str(artifacts) if raw["into"] == "envoy_dir" else str(istio_out)
        downloads.append(item)
    istio = Stage(
        name=StageName.ISTIO,
        summary="build istio's Go binaries for the target with the local proxy",
        steps=(
            Step(
                argv=(INTERNAL, "prepare-istio", str(istio_out)),
                cwd=istio_dir,
                description="place pinned downloads and the local envoy; reset init.sh's istio_is_init stamp",
            ),
            Step(argv=("make", "build"), cwd=istio_dir, env=istio_env, description=local_note),
        ),
        inputs=(
            istio_dir,
            local_envoy,
            f"go {release.go}",
            *(f"download {d['name']}: sha256 {d.get('sha256') or 'not pinned (supply it)'}" for d in downloads),
        ),
        outputs=(str(istio_out),),
        data={"downloads": downloads, "placements": placements, "istio_out": str(istio_out)},
    )

    # -- images
    targets = release.docker_targets_for(arch)
    skipped = sorted(set(release.docker_targets) - set(targets))
    arch_tag = f"{tag}-{arch.goarch}"  # per arch, so both coexist and `manifest` can join them
    image_names = tuple(f"{settings.hub}/{t.removeprefix('docker.')}:{arch_tag}" for t in targets)
    image_env = {
        **istio_env,
        # the classic builder (no buildx); no --platform: the base images are already the target's
        # (made so by the base-images step), and forcing it breaks multi-stage builds on dockerd 20.10
        "DOCKER_BUILDKIT": "0",
        "TAG": arch_tag,
        "BASE_VERSION": arch_tag,
    }
    labels = {
        "org.opencontainers.image.source": srcs[Component.ISTIO].url,
        "org.opencontainers.image.revision": release.pins[Component.ISTIO].commit,
        "org.opencontainers.image.version": release.version,
        "io.istiobuild.release": release.version,
        "io.istiobuild.arch": arch.value,
        "io.istiobuild.toolchain": toolchain.name,
        **{f"io.istiobuild.{c.value}.source": srcs[c].url for c in Component},
        **{f"io.istiobuild.{c.value}.revision": release.pins[c].commit for c in Component},
    }
    images = Stage(
        name=StageName.IMAGES,
        summary="build istio's images with istio's own make targets",
        steps=(
            Step(
                argv=(INTERNAL, "base-images", arch.value),
                cwd=istio_dir,
                description="every base image the Dockerfiles name exists locally for the arch "
                "(the example's are imported from a busybox rootfs)",
            ),
            Step(
                argv=("make", "docker.base", "HUB=docker.io/istio", f"TAG={arch_tag}"),
                cwd=istio_dir,
                env=image_env,
                description="base image under the name every Dockerfile's FROM uses "
                "(docker.io/istio/base:${BASE_VERSION}), whatever HUB is",
            ),
            Step(
                argv=(
                    "make",
                    "docker",
                    f"HUB={settings.hub}",
                    f"TAG={arch_tag}",
                    f"BASE_VERSION={arch_tag}",
                    f"DOCKER_TARGETS={' '.join(targets)}",
                ),
                cwd=istio_dir,
                env=image_env,
                description="images; skipped for " + arch.value + ": " + (", ".join(skipped) or "none"),
            ),
            Step(
                argv=(INTERNAL, "finalize", *image_names),
                cwd=istio_dir,
                description="image config: OCI labels naming the source repositories and commits, and the "
                "target platform (the classic builder records the host's)",
            ),
        ),
        inputs=(istio_dir, str(artifacts / "envoy")),
        outputs=image_names,
        notes=tuple(f"base image {k} -> {v}" for k, v in sorted(base_map.items()))
        or ("base images as upstream's Dockerfiles name them",),
        data={"labels": labels, "platform": arch.oci_platform, "base_images": base_map},
    )

    verify = Stage(
        name=StageName.VERIFY,
        summary="check every image: platform, ELF arch of every file, envoy --version, labels",
        steps=(Step(argv=(INTERNAL, "verify", f"--arch={arch.value}", *image_names), cwd=str(root)),),
        inputs=image_names,
        outputs=(str(out_dir / "verify.json"),),
        data={"labels": labels},
    )
    stages = [checkout, patch, toolchain_stage, proxy, istio, images, verify]
    if settings.push:
        stages.append(
            Stage(
                name=StageName.PUBLISH,
                summary=f"push the images to {settings.hub} (credentials from the docker config; never printed)",
                steps=(Step(argv=(INTERNAL, "push", *image_names), cwd=str(root)),),
                inputs=image_names,
                outputs=(str(out_dir / "pushed.json"),),
            )
        )
    record = Stage(
        name=StageName.RECORD,
        summary="record what was built: pins, patches with sha256, toolchain, artifacts, images",
        steps=(Step(argv=(INTERNAL, "record", str(out_dir / "build-record.json")), cwd=str(root)),),
        inputs=(),
        outputs=(str(out_dir / "build-record.json"),),
    )
    stages.append(record)
    return BuildPlan(
        release=release.version,
        arch=arch,
        host=host,
        toolchain=toolchain.name,
        workdir=str(settings.workdir),
        tag=tag,
        page_size=page_size,
        stages=tuple(_in_container(s, settings.builder) for s in stages) if settings.in_container else tuple(stages),
        notes=tuple(notes),
    )


def _in_container(stage: Stage, builder: str) -> Stage:
    if stage.name not in (StageName.TOOLCHAIN, StageName.PROXY, StageName.ISTIO):
        return stage
    steps = tuple(s if s.argv[0] == INTERNAL else dataclasses.replace(s, container=builder) for s in stage.steps)
    return dataclasses.replace(
        stage, steps=steps, data={**stage.data, "container": builder}, notes=(*stage.notes, f"runs in {builder}")
    )


def render(plan: BuildPlan) -> str:
    """The plan as text for humans."""
    lines = [
        f"release {plan.release}  arch {plan.arch} (host {plan.host})  toolchain {plan.toolchain}  tag {plan.tag}"
        f"  page size {plan.page_size}",
        f"workdir {plan.workdir}",
    ]
    lines += [f"note: {n}" for n in plan.notes]
    for number, stage in enumerate(plan.stages, 1):
        state = "" if stage.implemented else "  [planned: not run by this version]"
        lines.append("")
        lines.append(f"{number}. {stage.name.value}: {stage.summary}{state}")
        for step in stage.steps:
            if step.description:
                lines.append(f"   # {step.description}")
            lines.append(f"   {step.render()}")
        for comp, names in stage.patches.items():
            lines.append(f"   patches for {comp}: " + (", ".join(names) if names else "none"))
        for item in stage.inputs:
            lines.append(f"   in:  {item}")
        for item in stage.outputs:
            lines.append(f"   out: {item}")
        lines += [f"   note: {n}" for n in stage.notes]
    return "\n".join(lines)

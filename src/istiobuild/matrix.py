"""The CI build matrix and the bazel cache key.

`entries` turns a selection (releases or release lines, arches, toolchains, a runner kind) into one entry
per release x arch x toolchain for a CI `include:` list: the runner labels of the arch, the image tag, the
cache key. `key_inputs` is what a bazel cache of one build depends on, as a plan for a native runner of
the arch sees it: the proxy and envoy pins, the sha256 of every patch the patch stage applies to them, the
toolchain profile with the version its compiler reports, the bazel version, the arch and the page size.
Not the istio pin (bazel never sees istio), not the workdir, not the hub or tag (docs/ci.md).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from istiobuild import config, doctor, kernel
from istiobuild import release as releases
from istiobuild import toolchain as toolchains
from istiobuild.arch import Arch, host_arch, parse_arch
from istiobuild.config import Settings
from istiobuild.downloads import sha256_file
from istiobuild.errors import StepFailed, ToolError, UsageError
from istiobuild.layout import Layout
from istiobuild.plan import layout_for, make_plan
from istiobuild.release import Component, Release
from istiobuild.resources import relative
from istiobuild.run import run
from istiobuild.stages.patch import ApplySeries
from istiobuild.steps import StageName
from istiobuild.toolchain import Toolchain

KEY_PREFIX = "istiobuild-bazel"
BAZEL_COMPONENTS = (Component.PROXY, Component.ENVOY)  # what bazel builds (istio is Go, outside bazel)


class RunnerKind(enum.Enum):
    HOSTED = "hosted"
    SELF_HOSTED = "self-hosted"


RunnerLabel = str | tuple[str, ...]
RUNNER_LABELS: Mapping[RunnerKind, Mapping[Arch, RunnerLabel]] = {
    RunnerKind.HOSTED: {Arch.AARCH64: "ubuntu-24.04-arm", Arch.X86_64: "ubuntu-24.04"},
    RunnerKind.SELF_HOSTED: {
        Arch.AARCH64: ("self-hosted", "linux", "ARM64"),
        Arch.X86_64: ("self-hosted", "linux", "X64"),
    },
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class KeyInputs:
    """Exactly what changes the bazel caches of one build; nothing that names a machine or a directory."""

    release: str
    arch: str
    page_size: str
    proxy_commit: str
    envoy_commit: str
    envoy_sha256: str
    patches: tuple[tuple[str, str, str], ...]  # (component, patch as in the repository, sha256), in apply order
    toolchain: Mapping[str, object]  # the profile: name, family, accepted versions, bazel configs, binaries, env
    compiler: str  # what the profile's C compiler reports (`cc --version`, first line)
    bazel: str

    def digest(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}-{self.release}-{self.arch}-{self.digest()[:16]}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Entry:
    """One build of the matrix, as a CI `include:` entry."""

    release: str
    line: str
    arch: Arch
    toolchain: str
    runner: RunnerLabel
    tag: str  # the multi-arch tag `invoke manifest` joins; each arch pushes <tag><tag_suffix>
    page_size: str
    compiler: str
    cache_key: str

    def to_json(self) -> dict[str, object]:
        return {
            "name": f"{self.release} {self.arch} {self.toolchain}",
            "release": self.release,
            "line": self.line,
            "arch": self.arch.value,
            "goarch": self.arch.goarch,
            "platform": self.arch.oci_platform,
            "toolchain": self.toolchain,
            "runner": list(self.runner) if isinstance(self.runner, tuple) else self.runner,
            "tag": self.tag,
            "tag_suffix": f"-{self.arch.goarch}",
            "page_size": self.page_size,
            "compiler": self.compiler,
            "cache_key": self.cache_key,
        }


def page_size_for(settings: Settings, arch: Arch, *, host: Arch, host_page_size: str) -> str:
    """The page size a native runner of `arch` builds for: the target kernel's when given; else `auto` is this
    kernel's only on a machine of that arch."""
    return kernel.build_page_size(
        settings.page_size, settings.target_kernel, arch=arch, host=host, host_page_size=host_page_size
    )


def key_inputs(
    rel: Release, arch: Arch, tc: Toolchain, settings: Settings, *, page_size: str, compiler: str
) -> KeyInputs:
    """Pure: from the plan a native runner of `arch` makes (its patch stage's series) and the shipped data."""
    built = make_plan(rel, arch, tc, dataclasses.replace(settings, page_size=page_size), host=arch)
    patches = []
    for step in built.stage(StageName.PATCH).steps:
        if isinstance(step, ApplySeries):
            for series in step.series:
                if series.component in BAZEL_COMPONENTS:
                    patches += [(series.component.value, relative(p), sha256_file(p)) for p in series.patches]
    envoy = rel.pins[Component.ENVOY]
    return KeyInputs(
        release=rel.version,
        arch=arch.value,
        page_size=built.page_size,
        proxy_commit=rel.pins[Component.PROXY].commit,
        envoy_commit=envoy.commit,
        envoy_sha256=envoy.sha256,
        patches=tuple(patches),
        toolchain={
            "name": tc.name,
            "family": tc.family.value,
            "versions": tc.version_range,
            "bazel_configs": list(tc.bazel_configs),
            "binaries": dict(sorted(tc.binaries.items())),
            "env": dict(sorted(tc.env.items())),
        },
        compiler=compiler,
        bazel=settings.bazel_version or rel.bazel_version,
    )


def compiler_version(tc: Toolchain, settings: Settings) -> str:
    """The first line of `<cc> --version` for the profile's compiler on this machine (a builder: its image)."""
    if settings.in_container:
        return f"builder {settings.builder}"
    cc = tc.binaries["cc"]
    result = run([cc, "--version"], capture=True, check=False, what=f"report {cc}'s version for the cache key")
    lines = (result.stdout or "\n".join(result.tail)).strip().splitlines()
    if result.returncode != 0 or not lines or not toolchains.version_in(lines[0]):
        raise ToolError(
            f"{cc} --version did not report a version (exit {result.returncode})",
            hint=f"the cache key covers toolchain {tc.name}'s compiler: install {cc} or choose another --toolchain",
        )
    return lines[0].strip()


def cached_dirs(layout: Layout) -> tuple[Path, ...]:
    """What a CI cache keyed by the cache key holds: bazel's disk cache and its repository cache."""
    return (layout.bazel_disk, layout.bazel_repo)


def select_releases(text: str, known: Mapping[str, Release]) -> list[Release]:
    """Releases named by `text`: comma-separated releases or release lines ("1.5" = every buildable 1.5.x; a line
    with none gives its pinned releases, which the plan then refuses saying why); "" = every buildable release
    except the offline example (pinned-only ones have nothing to build)."""
    if not text:
        return [r for r in known.values() if not r.example and r.buildable]
    wanted = [t.strip() for t in text.split(",") if t.strip()]
    lines = sorted({r.line for r in known.values()})
    for token in wanted:
        if token not in known and token not in lines:
            raise UsageError(
                f"--release {token!r} is neither a release nor a release line",
                hint=f"release lines: {', '.join(lines)}; releases: `invoke releases`",
            )
    some = {r.line for r in known.values() if r.buildable}
    return [
        r for r in known.values() if r.version in wanted or (r.line in wanted and (r.buildable or r.line not in some))
    ]


def _split(text: str, default: Sequence[str]) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()] if text else list(default)
    return list(dict.fromkeys(items))


def runner_kind(text: str) -> RunnerKind:
    try:
        return RunnerKind(text or RunnerKind.HOSTED.value)
    except ValueError:
        kinds = " or ".join(k.value for k in RunnerKind)
        raise UsageError(f"--runner {text!r} is not a runner kind", hint=f"use {kinds}") from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Selection:
    releases: str = ""
    arches: str = ""
    toolchains: str = ""
    runner: str = ""


def entries(
    selection: Selection, settings: Settings, *, host: Arch, host_page_size: str, probe: CompilerProbe
) -> list[Entry]:
    """One entry per release x arch x toolchain; the tag carries the toolchain when several are built."""
    kind = runner_kind(selection.runner)
    rels = select_releases(selection.releases, releases.matrix())
    arches = [parse_arch(a) for a in _split(selection.arches, [a.value for a in Arch])]
    arches = list(dict.fromkeys(arches))
    tcs = [toolchains.get(t) for t in _split(selection.toolchains, [settings.toolchain])]
    found = []
    for rel in rels:
        for arch in arches:
            # a profile the line refuses (1.22: clang only) is left out, as the plan would refuse it
            for tc in (t.at_least(rel.toolchains_min) for t in tcs if not rel.toolchains or t.name in rel.toolchains):
                page_size = page_size_for(settings, arch, host=host, host_page_size=host_page_size)
                compiler = probe(tc, settings)
                inputs = key_inputs(rel, arch, tc, settings, page_size=page_size, compiler=compiler)
                found.append(
                    Entry(
                        release=rel.version,
                        line=rel.line,
                        arch=arch,
                        toolchain=tc.name,
                        runner=RUNNER_LABELS[kind][arch],
                        tag=rel.version if len(tcs) == 1 else f"{rel.version}-{tc.name}",
                        page_size=inputs.page_size,
                        compiler=compiler,
                        cache_key=inputs.key,
                    )
                )
    return found


def manifests(found: Iterable[Entry]) -> list[dict[str, str]]:
    """One entry per multi-arch tag (release and toolchain) built for two arches or more: what to join."""
    arches: dict[tuple[str, str, str], list[str]] = {}
    for e in found:
        arches.setdefault((e.release, e.toolchain, e.tag), []).append(e.arch.value)
    return [
        {"release": rel, "toolchain": tc, "tag": tag, "arches": ",".join(sorted(names))}
        for (rel, tc, tag), names in arches.items()
        if len(set(names)) >= 2
    ]


class CompilerProbe:
    """`compiler_version` once per profile; a compiler missing here is named in the entry instead of failing
    the matrix (the runners compute the key again with `invoke cache-key`, with their own compiler)."""

    def __init__(self) -> None:
        self._seen: dict[str, str] = {}

    def __call__(self, tc: Toolchain, settings: Settings) -> str:
        if tc.name not in self._seen:
            try:
                self._seen[tc.name] = compiler_version(tc, settings)
            except (ToolError, StepFailed) as exc:
                self._seen[tc.name] = f"unknown where the matrix was made: {exc.message}"
        seen = self._seen[tc.name]
        found = "" if seen.startswith(("unknown where", "builder ")) else toolchains.version_in(seen)
        if found and not tc.accepts(found):  # the line's floor (1.26: clang 18) is above this machine's compiler
            return f"unknown where the matrix was made: {seen} is not {tc.version_range}"
        return seen


def show_matrix(selection: Selection, settings_cli: Mapping[str, Any], *, joins: bool) -> None:
    """Print the entries (or, with `joins`, the multi-arch tags to join) as one line of JSON."""
    settings, _ = config.load(settings_cli)
    found = entries(
        selection, settings, host=host_arch(), host_page_size=doctor.host_page_size(), probe=CompilerProbe()
    )
    rows: list[Any] = manifests(found) if joins else [e.to_json() for e in found]
    print(json.dumps(rows, separators=(",", ":")))
    chosen = {e.release for e in found}
    lines = {t.strip() for t in selection.releases.split(",")}
    left = [r.version for r in releases.matrix().values() if r.line in lines and r.version not in chosen]
    if left:  # stdout stays one line of JSON ($GITHUB_OUTPUT)
        print(f"note: pinned, not in the matrix: {', '.join(left)} (`invoke releases` says why)", file=sys.stderr)


def show_cache_key(settings_cli: Mapping[str, Any], *, as_json: bool) -> None:
    """Print the cache key of (release, arch, toolchain) with this machine's compiler; --json adds its inputs."""
    settings, _ = config.load(settings_cli)
    rel = releases.get(settings.release)
    arch = parse_arch(settings.arch) if settings.arch else host_arch()
    tc = toolchains.get(settings.toolchain).at_least(rel.toolchains_min)  # as the build and the matrix take it
    page_size = page_size_for(settings, arch, host=host_arch(), host_page_size=doctor.host_page_size())
    inputs = key_inputs(rel, arch, tc, settings, page_size=page_size, compiler=compiler_version(tc, settings))
    if not as_json:
        print(inputs.key)
        return
    layout = layout_for(settings, rel, arch)
    data = {
        "key": inputs.key,
        "inputs": dataclasses.asdict(inputs),
        "cache_dirs": [str(p.relative_to(settings.cache)) for p in cached_dirs(layout)],
    }
    print(json.dumps(data, indent=2))

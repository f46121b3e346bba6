"""The build plan: a pure, frozen description of every stage, made before anything runs.

`make_plan` reads only shipped data (release matrix, patch series, toolchain profiles) and its
arguments; it never runs a subprocess or touches the workdir. The executor runs exactly these steps.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from istiobuild import kernel
from istiobuild.arch import Arch
from istiobuild.config import Settings
from istiobuild.errors import UsageError
from istiobuild.layout import Layout
from istiobuild.modes import Mode, decide, describe
from istiobuild.release import Component, Release
from istiobuild.secrets import redact_url
from istiobuild.sources import sources
from istiobuild.stages import checkout, images, istio, patch, proxy, publish, record, toolchain, verify
from istiobuild.stages import release as archives_stage
from istiobuild.steps import Command, PlanInput, Stage, StageName, encode
from istiobuild.toolchain import Toolchain


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildPlan:
    release: str
    arch: Arch
    host: Arch  # this machine
    mode: Mode
    toolchain: str
    workdir: str
    tag: str
    page_size: str
    allocator: str
    stages: tuple[Stage, ...]
    layout: Layout
    notes: tuple[str, ...] = ()

    def stage(self, name: StageName | str) -> Stage:
        wanted = StageName(name) if isinstance(name, str) else name
        return next(s for s in self.stages if s.name == wanted)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = encode(self)
        return data

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def layout_for(settings: Settings, release: Release, arch: Arch) -> Layout:
    return Layout(workdir=settings.workdir, cache=settings.cache, release=release.version, arch=arch)


def make_plan(
    release: Release,
    arch: Arch,
    tc: Toolchain,
    settings: Settings,
    *,
    host: Arch,
    host_page_size: str = "4k",
    ci: bool = False,
) -> BuildPlan:
    """Every stage of the pipeline for (release, arch, toolchain, settings) on `host`.

    The mode (native, cross, emulated) is decided first; a combination that would build for the host
    while claiming the target is refused here, before any work, naming the modes that would work.
    """
    if not release.buildable and release.envoy_unfetchable:
        raise UsageError(
            f"release {release.version} cannot be built: its envoy ({release.pins[Component.ENVOY].repo}@"
            f"{release.pins[Component.ENVOY].commit[:12]}) is in a private repository with no public copy",
            hint=f"{release.note} (the other releases of line {release.line} build)"
            if release.note
            else f"the other releases of line {release.line} build",
        )
    if release.pinned_release:
        raise UsageError(
            f"release {release.version} is pinned: {release.note}",
            hint=f"the other releases of line {release.line} build; `invoke releases` lists them",
        )
    if not release.buildable:
        raise UsageError(
            f"release {release.version} is pinned: istiobuild cannot build line {release.line} yet",
            hint=f"line {release.line}: {release.mechanism.describe(arch.goarch)}; istiobuild builds only the "
            "lines `invoke releases` marks buildable so far"
            if release.mechanism
            else f'its pins are data only (releases/{release.line}.toml, status = "pinned"); '
            "`invoke releases` shows which releases are buildable",
        )
    if release.toolchains and tc.name not in release.toolchains:
        raise UsageError(
            f"release {release.version} does not build with toolchain {tc.name}: it takes only "
            f"{' or '.join(release.toolchains)}"
            f"{f' ({release.toolchains_min} or newer)' if release.toolchains_min else ''}; {release.toolchains_why}",
            hint=f"use --toolchain {' or '.join(release.toolchains)}",
        )
    tc = tc.at_least(release.toolchains_min)  # the line's floor (1.22's C++20: clang 14)
    if settings.in_container and not settings.builder:
        raise UsageError(
            "--in-container needs a builder image",
            hint="build one from dockerfiles/ (see dockerfiles/README.md) and pass --builder IMAGE",
        )
    mode = decide(host=host, target=arch, release=release, in_container=settings.in_container)
    # "auto": the target kernel's (--target-kernel), else the kernel this builds on when it is also the target;
    # a cross build assumes 4K.
    page_size = kernel.build_page_size(
        settings.page_size, settings.target_kernel, arch=arch, host=host, host_page_size=host_page_size
    )
    mech = release.mechanism.allocator if release.mechanism else "default"
    allocator, why = kernel.choose_allocator(settings.allocator, mech, settings.target_kernel)
    p = PlanInput(
        release=release,
        arch=arch,
        # inside the builder the target arch is native (or emulated): no cross compilation
        host=arch if settings.in_container else host,
        mode=mode,
        toolchain=tc,
        settings=settings,
        layout=layout_for(settings, release, arch),
        sources={s.component: s for s in sources(release, settings)},
        page_size=page_size,
        allocator=allocator,
        tag=settings.tag or release.version,
        ci=ci,
    )
    stages = [checkout.plan(p), patch.plan(p), toolchain.plan(p), proxy.plan(p), istio.plan(p), images.plan(p)]
    stages.append(verify.plan(p))
    stages.append(archives_stage.plan(p))
    if settings.push:
        stages.append(publish.plan(p))
    stages.append(record.plan(p, images.names(p, p.arch_tag)))
    return BuildPlan(
        release=release.version,
        arch=arch,
        host=host,
        mode=mode,
        toolchain=tc.name,
        workdir=str(settings.workdir),
        tag=p.tag,
        page_size=page_size,
        allocator=allocator,
        stages=tuple(stages),
        layout=p.layout,
        notes=(*_notes(p, host), f"allocator {allocator}: {why}"),
    )


def _notes(p: PlanInput, host: Arch) -> list[str]:
    builder = p.settings.builder if p.settings.in_container else ""
    notes = [describe(p.mode, host=host, target=p.arch, builder=builder)]
    notes += [p.release.note] if p.release.note else []
    notes += kernel.plan_note(p.settings.target_kernel)
    envoy_pin = p.release.pins[Component.ENVOY]
    if envoy_pin.public_repo:
        notes.append(
            f"envoy is pinned to {envoy_pin.repo}@{envoy_pin.commit[:12]}; fetched from the public "
            f"{envoy_pin.public_repo}, where the same commit exists"
        )
    if p.arch != p.host:
        notes.append(f"target {p.arch} differs from host {p.host}: {p.arch} output is run under qemu-user (binfmt)")
    if p.mode is Mode.NATIVE and p.settings.in_container:
        notes.append(f"the toolchain, proxy and istio commands run in {p.settings.builder}; images on the host")
    return notes


def render(plan: BuildPlan) -> str:
    """The plan as text: command steps can be pasted into a shell as shown; actions say what istiobuild does."""
    lines = [
        f"release {plan.release}  arch {plan.arch} (host {plan.host})  mode {plan.mode}  toolchain {plan.toolchain}"
        f"  tag {plan.tag}  page size {plan.page_size}  allocator {plan.allocator}",
        f"workdir {plan.workdir}",
    ]
    lines += [f"note: {n}" for n in plan.notes]
    for number, stage in enumerate(plan.stages, 1):
        lines += ["", f"{number}. {stage.name.value}: {stage.summary}"]
        for step in stage.steps:
            if isinstance(step, Command):
                if step.description:
                    lines.append(f"   # {step.description}")
                lines.append(f"   {step.render()}")
            else:
                lines += [f"   [istiobuild] {line}" for line in step.render().splitlines()]
        lines += [f"   reads: {p}" for p in stage.reads] + [f"   out: {p}" for p in (*stage.produces, *stage.images)]
        lines += [f"   note: {redact_url(n)}" for n in stage.notes]
    return "\n".join(lines)

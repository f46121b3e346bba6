"""Executing a plan: the stages `invoke build` runs, in plan order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

from istiobuild import baseimages, sources
from istiobuild import patches as patchmod
from istiobuild.config import Settings
from istiobuild.console import Console
from istiobuild.errors import PatchError, UsageError
from istiobuild.plan import BuildPlan, StageName
from istiobuild.release import Component, Release
from istiobuild.resources import data_root


def ensure_example(release: Release, settings: Settings, console: Console) -> None:
    """Generate the miniature upstream repositories when the release points at them."""
    if not any(url.startswith(sources.EXAMPLE_SCHEME) for url in release.urls.values()):
        return
    if settings.mirror or settings.repos:
        return
    from istiobuild import example

    dest = sources.example_upstream(settings)
    repos = example.generate(dest)
    console.info(f"example upstream repositories ready in {dest} ({', '.join(sorted(repos))})")


def do_checkout(
    plan: BuildPlan, release: Release, settings: Settings, console: Console, *, force: bool
) -> list[sources.CheckoutResult]:
    ensure_example(release, settings, console)
    results = []
    for src in sources.sources(release, settings):
        result = sources.checkout(settings, src, force=force, note=console.info)
        console.info(f"{src.component}: {result.action} at {result.commit[:12]} in {result.path}")
        results.append(result)
    return results


def do_patch(plan: BuildPlan, release: Release, settings: Settings, console: Console) -> dict[str, object]:
    """Apply each component's series; returns the record (patch names and sha256 per component)."""
    stage = plan.stage(StageName.PATCH)
    record: dict[str, object] = {}
    srcs = {s.component: s for s in sources.sources(release, settings)}
    # Check every component before changing any: a conflict in istio must not leave envoy patched.
    work: list[tuple[Component, list[patchmod.PatchSource]]] = []
    for comp in Component:
        path = srcs[comp].path
        if not (path / ".git").exists():
            raise UsageError(
                f"{path} is not checked out", hint=f"run `invoke checkout --release {release.version}` first"
            )
        wanted = [
            patchmod.PatchSource(name=name, path=data_root() / name) for name in stage.patches.get(comp.value, ())
        ]
        if comp is Component.ISTIO:
            generated = baseimages.patch_for(path, settings.base_images.get(plan.arch.value, {}), wanted)
            if generated is not None:
                wanted.append(generated)
        clean, _ = patchmod.pristine_or_ours(path)
        if not clean:
            raise PatchError(
                f"{path} has local changes that istiobuild did not make",
                hint="commit or stash them first, or run checkout with --force to save them in a git stash",
            )
        patchmod.check(path, sources.head_of(path), wanted)
        work.append((comp, wanted))
    for comp, wanted in work:
        state, changed = patchmod.apply(srcs[comp].path, wanted)
        verb = "applied" if changed else "already applied"
        console.info(f"{comp}: {verb} {len(state.patches)} patches" + "".join(f"\n    {n}" for n, _ in state.patches))
        record[comp.value] = [{"name": n, "sha256": s} for n, s in state.patches]
    out = Path(settings.workdir) / f"{release.version}-{plan.arch.value}" / "patches.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return record


def build(
    plan: BuildPlan,
    release: Release,
    settings: Settings,
    console: Console,
    *,
    force: bool,
    only: Iterable[StageName] | None = None,
) -> None:
    """Run the implemented stages in plan order."""
    wanted = set(only) if only is not None else None
    for stage in plan.stages:
        if wanted is not None and stage.name not in wanted:
            continue
        if not stage.implemented:
            console.skip(stage.name.value, "planned; not implemented in this version (see `invoke plan`)")
            continue
        console.start(stage.name.value, stage.summary)
        start = time.monotonic()
        if stage.name is StageName.CHECKOUT:
            do_checkout(plan, release, settings, console, force=force)
        elif stage.name is StageName.PATCH:
            do_patch(plan, release, settings, console)
        console.done(stage.name.value, time.monotonic() - start)

"""Stage patch: the release's patch series for the arch, checked first, applied all or none, recorded."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Mapping
from pathlib import Path

from istiobuild import baseimages, fsutil
from istiobuild import defaults as defaultsmod
from istiobuild import patches as patchmod
from istiobuild.archivespec import DefaultsSpec
from istiobuild.errors import PatchError, UsageError
from istiobuild.executor import Executor
from istiobuild.git import git, head
from istiobuild.release import Component
from istiobuild.resources import relative
from istiobuild.steps import Action, PlanInput, Stage, StageName


@dataclasses.dataclass(frozen=True, kw_only=True)
class Series:
    component: Component
    repo: Path
    patches: tuple[Path, ...]  # absolute paths of the shipped patch files, in order
    base_images: Mapping[str, str] = dataclasses.field(default_factory=dict)  # FROM rewrites (istio)
    defaults: DefaultsSpec | None = None  # the release defaults (istio): set to hub and tag
    hub: str = ""
    tag: str = ""
    definitions: bool = False  # images from tools/docker.yaml: FROM lines resolve with docker-builder's args


@dataclasses.dataclass(frozen=True, kw_only=True)
class ApplySeries(Action):
    series: tuple[Series, ...]
    record: Path

    def render(self) -> str:
        lines = [
            "check every patch of every component on a private index, then apply all or none "
            f"(recorded in <checkout>/.git/{patchmod.STATE_FILE} and {self.record}):"
        ]
        for s in self.series:
            lines.append(f"  {s.component} in {s.repo}: " + (" ".join(map(str, s.patches)) or "no patches"))
            if s.base_images:
                pairs = ", ".join(f"{k} -> {v}" for k, v in sorted(s.base_images.items()))
                lines.append(f"  {s.component}: plus a generated patch rewriting Dockerfile FROM lines: {pairs}")
            if s.defaults is not None:
                lines.append(f"  {s.component}: plus a generated patch: {defaultsmod.render(s.defaults, s.hub, s.tag)}")
        return "\n".join(lines)

    def perform(self, ex: Executor) -> None:
        work = [(s, _wanted(s, ex.log)) for s in self.series]
        record: dict[str, object] = {}
        pending = []
        for s, wanted in work:  # a conflict in istio must not leave envoy patched
            modified = _modified(ex, s.repo, wanted)
            if modified is not None:
                record[s.component.value] = modified
                continue
            patchmod.check(s.repo, head(s.repo), wanted)
            pending.append((s, wanted))
        for s, wanted in pending:
            state, changed = patchmod.apply(s.repo, wanted)
            verb = "applied" if changed else "already applied"
            ex.console.info(f"{s.component}: {verb} {len(state.patches)} patches")
            record[s.component.value] = [{"name": n, "sha256": h} for n, h in state.patches]
        fsutil.write_json(self.record, record)


def _wanted(s: Series, log: Path) -> list[patchmod.PatchSource]:
    if not (s.repo / ".git").exists():
        raise UsageError(f"{s.repo} is not checked out", hint="run the checkout stage first (`invoke checkout`)")
    wanted = [patchmod.PatchSource(name=relative(p), path=p) for p in s.patches]
    generated = baseimages.patch_for(s.repo, s.base_images, wanted, definitions=s.definitions)
    wanted = [*wanted, generated] if generated is not None else wanted
    if s.defaults is not None:
        wanted.append(defaultsmod.patch_for(s.repo, s.defaults, s.hub, s.tag, wanted, log))
    return wanted


def _modified(ex: Executor, repo: Path, wanted: list[patchmod.PatchSource]) -> dict[str, object] | None:
    """None when the checkout is pristine or exactly ours; with --allow-modified, the record of the edits."""
    clean, _ = patchmod.pristine_or_ours(repo)
    if clean:
        return None
    state = patchmod.read_state(repo)
    ours = (
        state is not None
        and state.commit == head(repo)
        and state.patches == tuple((p.name, p.sha256()) for p in wanted)
    )
    if state is None or not ours:
        raise PatchError(
            f"{repo} has local changes that istiobuild did not make",
            hint="commit or stash them first (istiobuild never patches over your edits), "
            "or run checkout with --force to save them under refs/istiobuild/saved/",
        )
    names, diff = _edits(repo, wanted)
    if not ex.allow_modified:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise PatchError(
            f"{repo} changed since the patch stage: {shown}",
            hint="undo the edits, or pass --allow-modified to build them and record the build as modified",
        )
    path = ex.layout.out_dir / f"modified-{repo.name}.diff"
    fsutil.write_atomic(path, diff)
    ex.console.info(f"{repo.name}: building with your changes ({len(names)} files), recorded in {path}")
    return {
        "modified": True,
        "files": names,
        "diff": str(path),
        "sha256": hashlib.sha256(diff.encode()).hexdigest(),
        "patches": [{"name": n, "sha256": h} for n, h in state.patches],
    }


def _edits(repo: Path, wanted: list[patchmod.PatchSource]) -> tuple[list[str], str]:
    """The files changed since our patches were applied, and the binary diff of those changes."""
    with tempfile.TemporaryDirectory(prefix="istiobuild-edits-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", "HEAD", env=env)
        for patch in wanted:
            git(repo, "apply", "--cached", "--whitespace=nowarn", "--", str(patch.path), env=env)
        ours = git(repo, "write-tree", env=env).stdout.strip()
        git(repo, "add", "-A", env=env)
        now = git(repo, "write-tree", env=env).stdout.strip()
    names = git(repo, "diff", "--name-only", ours, now).stdout.split()
    return names, git(repo, "diff", "--binary", ours, now).stdout


def plan(p: PlanInput) -> Stage:
    base_map = {**p.release.base_images.get(p.arch, {}), **p.settings.base_images.get(p.arch.value, {})}
    series = []
    for comp in Component:
        files = tuple(x.path for x in patchmod.select(p.release, comp, p.arch, p.page_size))
        istio = comp is Component.ISTIO
        # every component, also one without patches for this arch: another arch's series is reverted
        series.append(
            Series(
                component=comp, repo=p.checkout(comp), patches=files, base_images=base_map if istio else {},
                defaults=p.release.defaults if istio else None, hub=p.settings.hub, tag=p.tag,
                definitions=istio and bool(p.release.mechanism and p.release.mechanism.definitions),
            )
        )  # fmt: skip
    return Stage(
        name=StageName.PATCH,
        summary=f"apply the release's patch series for {p.arch} (atomic, idempotent, recorded)",
        steps=(ApplySeries(series=tuple(series), record=p.layout.record("patches")),),
        consumes=tuple(f for s in series for f in s.patches),
        trees=tuple(p.checkout(c) for c in Component),
        produces=(p.layout.record("patches"),),
    )

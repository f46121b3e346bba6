"""Stage checkout: proxy, envoy and istio at their pinned commits, as siblings, through an object cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from istiobuild import sources
from istiobuild.errors import StepFailed
from istiobuild.executor import Executor
from istiobuild.git import out
from istiobuild.release import Component
from istiobuild.secrets import redact_url
from istiobuild.steps import Action, PlanInput, Stage, StageName, Step


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateExample(Action):
    dest: Path

    def render(self) -> str:
        return (
            f"generate the miniature upstream repositories of the example release in {self.dest} (replacing the "
            "ones another istiobuild version generated there, if nobody committed to them)"
        )

    def perform(self, ex: Executor) -> None:
        from istiobuild import example

        repos = example.generate(self.dest, replace_older=True)
        ex.console.info(f"example upstream repositories ready in {self.dest} ({', '.join(sorted(repos))})")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckoutPin(Action):
    component: Component
    url: str  # without credentials: those are read from the settings when the fetch runs
    commit: str
    tag: str
    cache: Path
    path: Path

    def render(self) -> str:
        tag = f", tag {self.tag} must still point at it" if self.tag else ""
        return (
            f"{self.component}: fetch {self.commit} from {self.url} into {self.cache} (by SHA, shallow; a full "
            f"fetch if refused{tag}); check it out detached in {self.path} (objects borrowed from the cache)"
        )

    def perform(self, ex: Executor) -> None:
        source = next(s for s in sources.sources(ex.release, ex.settings) if s.component is self.component)
        result = sources.checkout(ex.settings, source, force=ex.force, note=ex.console.info)
        ex.console.info(f"{self.component}: {result.action} at {result.commit[:12]} in {result.path}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckEpoch(Action):
    """The release's SOURCE_DATE_EPOCH is the pinned istio commit's committer time: every timestamp the build
    controls (image created, layer mtimes, history, SBOM, archives) derives from the sources, not the clock."""

    path: Path
    commit: str
    epoch: int

    def render(self) -> str:
        return (
            f"SOURCE_DATE_EPOCH={self.epoch}: the committer time of istio {self.commit[:12]} in {self.path} "
            "must be exactly that"
        )

    def perform(self, ex: Executor) -> None:
        found = out(self.path, "show", "-s", "--format=%ct", self.commit, "--", what="read the istio commit's time")
        if found != str(self.epoch):
            raise StepFailed(
                f"the release says SOURCE_DATE_EPOCH={self.epoch}, the istio commit {self.commit[:12]} was "
                f"committed at {found}",
                hint=f"fix source_date_epoch of release {ex.release.version} in its releases/*.toml",
            )


def plan(p: PlanInput) -> Stage:
    steps: list[Step] = []
    example = any(s.via == "example" for s in p.sources.values())
    if example:
        steps.append(GenerateExample(dest=p.layout.example_upstream))
    for comp in Component:
        src = p.sources[comp]
        steps.append(
            CheckoutPin(
                component=comp,
                url=redact_url(src.url),
                commit=src.pin.commit,
                tag=src.pin.tag,
                cache=p.layout.git_cache(comp),
                path=src.path,
            )
        )
    istio = p.sources[Component.ISTIO]
    steps.append(CheckEpoch(path=istio.path, commit=istio.pin.commit, epoch=p.release.source_date_epoch))
    paths = tuple(p.checkout(c) for c in Component)
    return Stage(
        name=StageName.CHECKOUT,
        summary="check out proxy, envoy and istio at their pinned commits, as siblings",
        steps=tuple(steps),
        heads=paths,
        notes=tuple(f"{c}: {redact_url(p.sources[c].url)} ({p.sources[c].via})" for c in Component),
    )

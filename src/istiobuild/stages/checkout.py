"""Stage checkout: proxy, envoy and istio at their pinned commits, as siblings, through an object cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from istiobuild import sources
from istiobuild.executor import Executor
from istiobuild.release import Component
from istiobuild.secrets import redact_url
from istiobuild.steps import Action, PlanInput, Stage, StageName, Step


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerateExample(Action):
    dest: Path

    def render(self) -> str:
        return f"generate the miniature upstream repositories of the example release in {self.dest}"

    def perform(self, ex: Executor) -> None:
        from istiobuild import example

        repos = example.generate(self.dest)
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
    paths = tuple(p.checkout(c) for c in Component)
    return Stage(
        name=StageName.CHECKOUT,
        summary="check out proxy, envoy and istio at their pinned commits, as siblings",
        steps=tuple(steps),
        heads=paths,
        notes=tuple(f"{c}: {redact_url(p.sources[c].url)} ({p.sources[c].via})" for c in Component),
    )

"""Stage record: what was built, from what, with what: one JSON file per release and arch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from istiobuild import fsutil
from istiobuild.executor import Executor
from istiobuild.steps import Action, PlanInput, Stage, StageName


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteRecord(Action):
    path: Path
    parts: tuple[tuple[str, Path], ...]  # (key, the stage record it is read from)
    facts: tuple[tuple[str, str], ...]
    images: tuple[str, ...]

    def render(self) -> str:
        return f"write {self.path}: {', '.join(k for k, _ in self.facts)}, " + ", ".join(k for k, _ in self.parts)

    def perform(self, ex: Executor) -> None:
        record: dict[str, object] = dict(self.facts)
        record["pins"] = {c.value: dataclasses.asdict(pin) for c, pin in ex.release.pins.items()}
        for key, path in self.parts:
            record[key] = json.loads(path.read_text()) if path.is_file() else None
        record["images"] = list(self.images)
        fsutil.write_json(self.path, record)
        ex.console.info(f"build record: {self.path}")


def plan(p: PlanInput, images: tuple[str, ...]) -> Stage:
    path = p.layout.record("build-record")
    keys = ("patches", "toolchain", "envoy", "istio", "downloads", "verify") + (("pushed",) if p.settings.push else ())
    facts = (
        ("release", p.release.version),
        ("arch", p.arch.value),
        ("host", p.host.value),
        ("page_size", p.page_size),
        ("toolchain_profile", p.toolchain.name),
    )
    return Stage(
        name=StageName.RECORD,
        summary="record what was built: pins, patches with sha256, toolchain, artifacts, images",
        steps=(WriteRecord(path=path, parts=tuple((k, p.layout.record(k)) for k in keys), facts=facts, images=images),),
        consumes=tuple(p.layout.record(k) for k in keys),
        produces=(path,),
    )

"""Stage publish: push the verified images (credentials from the docker config, never printed), and
`invoke manifest`'s multi-arch join."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from istiobuild import dockerapi, fsutil
from istiobuild.errors import IstiobuildError, SourceError
from istiobuild.executor import Executor
from istiobuild.run import run
from istiobuild.secrets import Redactor
from istiobuild.stages.images import build_tag, names
from istiobuild.steps import Action, PlanInput, Stage, StageName


@dataclasses.dataclass(frozen=True, kw_only=True)
class PushImages(Action):
    pairs: tuple[tuple[str, str], ...]  # (built and verified, final name to push)
    record: Path

    def render(self) -> str:
        return (
            "push through the docker API (credentials from the docker config or its helpers, never printed), each "
            "only while its final name still holds the verified image: " + ", ".join(b for _, b in self.pairs)
        )

    def perform(self, ex: Executor) -> None:
        cli = ex.docker()
        digests = {}
        for built, final in self.pairs:
            with dockerapi.name_lock(final):
                if dockerapi.image_id(cli, final) != dockerapi.image_id(cli, built):
                    dockerapi.tag(cli, built, final)  # another build took the name since verify: ours again
                digests.update(push(cli, [final]))
        fsutil.write_json(self.record, digests)
        for image, digest in digests.items():
            ex.console.info(f"pushed {image} {digest}")


def push(cli: Any, images: Iterable[str]) -> dict[str, str]:
    """Push each image; credentials come from the docker config or its credential helpers."""
    digests = {}
    for image in images:
        repo, _, tag = image.rpartition(":")
        try:
            for event in cli.images.push(repo, tag=tag, stream=True, decode=True):
                if "error" in event:
                    raise SourceError(_push_error(image, str(event["error"])), hint=_PUSH_HINT)
                aux = event.get("aux") or {}
                if "Digest" in aux:
                    digests[image] = aux["Digest"]
        except IstiobuildError:
            raise
        except Exception as exc:
            raise SourceError(_push_error(image, type(exc).__name__), hint=_PUSH_HINT) from None
    return digests


_PUSH_HINT = "check that the registry runs and `docker login <registry>` (credentials are never printed)"


def _push_error(image: str, raw: str) -> str:
    reason = Redactor(dockerapi.config_secrets()).text(raw)  # a registry may echo the credentials it was sent
    problem = dockerapi.registry_problem(reason)
    if problem == "not authorized":
        return f"the registry refused {image}: not authorized"
    if problem:
        return f"the registry for {image} is not reachable"
    return f"pushing {image} failed: {reason.splitlines()[0][:200]}"


def manifest(target: str, sources: Iterable[str], *, insecure: bool, log: Path) -> str:
    """Join per-arch images (already in the registry) into one multi-arch tag and push it; its digest."""
    flag = ["--insecure"] if insecure else []
    run(["docker", "manifest", "rm", target], log=log, check=False)
    run(["docker", "manifest", "create", *flag, target, *sources], log=log, what=f"docker manifest create {target}")
    pushed = run(
        ["docker", "manifest", "push", *flag, "--purge", target],
        log=log, capture=True, what=f"docker manifest push {target}",
    )  # fmt: skip
    return next((w for w in pushed.stdout.split() if w.startswith("sha256:")), "")


def plan(p: PlanInput) -> Stage:
    built, final = names(p, build_tag(p)), names(p, p.arch_tag)
    return Stage(
        name=StageName.PUBLISH,
        summary=f"push the images to {p.settings.hub}",
        steps=(PushImages(pairs=tuple(zip(built, final, strict=True)), record=p.layout.record("pushed")),),
        produces=(p.layout.record("pushed"),),
    )

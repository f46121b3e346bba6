"""The pipeline: stamps over real inputs and outputs, preflight, and the loop over the plan's stages."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from istiobuild import cache, doctor, fsutil, secrets
from istiobuild.downloads import sha256_file
from istiobuild.errors import IstiobuildError, StepFailed, ToolError, UsageError
from istiobuild.executor import Executor
from istiobuild.git import head, worktree_tree
from istiobuild.modes import Mode
from istiobuild.plan import BuildPlan
from istiobuild.release import Component
from istiobuild.steps import Stage, StageName, encode
from istiobuild.toolchain import Toolchain


class State:
    """What the stamps compare: tree states, file digests, HEADs and image IDs, computed once per run."""

    def __init__(self, ex: Executor) -> None:
        self.ex = ex
        self._trees: dict[Path, str] = {}
        self._images: dict[str, str] | None = None

    def forget(self) -> None:
        self._trees.clear()
        self._images = None

    def tree(self, path: Path) -> str:
        if path not in self._trees:
            self._trees[path] = worktree_tree(path) if (path / ".git").exists() else ""
        return self._trees[path]

    def inputs(self, stage: Stage) -> dict[str, Any]:
        return {
            "reads": {str(p): self.tree(p) for p in stage.reads},
            "consumes": {str(p): _digest(p) for p in stage.consumes},
        }

    def outputs(self, stage: Stage) -> dict[str, Any]:
        data: dict[str, Any] = {
            "produces": {str(p): _digest(p) for p in stage.produces},
            "trees": {str(p): self.tree(p) for p in stage.trees},
            "heads": {str(p): head(p) if (p / ".git").exists() else "" for p in stage.heads},
        }
        if stage.images:
            from istiobuild import dockerapi

            if self._images is None:  # one `docker images` per run, not the SDK's import per check
                self._images = dockerapi.local_image_ids()
            data["images"] = {name: self._images.get(dockerapi.short_name(name), "") for name in stage.images}
        return data


def _digest(path: Path) -> str:
    return sha256_file(path) if path.is_file() and not path.is_symlink() else ""


def stage_key(previous: str, stage: Stage, inputs: Mapping[str, Any]) -> str:
    """A stage's key: its planned steps and its real inputs, chained to the previous stage's key."""
    blob = json.dumps([previous, encode(stage), inputs], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_stamp(path: Path) -> dict[str, Any]:
    """A stamp, or {} when it is missing, unreadable or not the shape we write."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("key"), str) else {}


def up_to_date(state: State, stage: Stage, key: str, stamp: Mapping[str, Any]) -> bool:
    """Skippable only when the key matches and every output is exactly what the stamp recorded."""
    if stamp.get("key") != key:
        return False
    outputs = state.outputs(stage)
    return bool(stamp.get("outputs") == outputs and all(outputs["produces"].values()))


def pending(state: State, plan: BuildPlan, wanted: list[Stage], start: StageName | None) -> list[Stage]:
    """The stages that must run: from the first one that is not up to date (or --from / --force) on."""
    ex = state.ex
    order = [s.name for s in plan.stages]
    previous = ""
    for stage in plan.stages:
        key = previous = stage_key(previous, stage, state.inputs(stage))
        if stage not in wanted:
            continue
        forced = ex.force or (start is not None and order.index(stage.name) >= order.index(start))
        stamp = read_stamp(plan.layout.stamps / f"{stage.name.value}.json")
        if forced or not up_to_date(state, stage, key, stamp):
            return wanted[wanted.index(stage) :]
    return []


def _preflight(ex: Executor, plan: BuildPlan, tc: Toolchain, stages: list[Stage]) -> None:
    """The doctor's checks for the stages about to run; stop before any work if one fails."""
    from istiobuild.stages import istio

    names = {s.name.value for s in stages}
    for stage in stages:
        if stage.name is StageName.ISTIO:
            istio.preflight(stage)
    in_builder = {"toolchain", "proxy", "istio"} | ({"images"} if plan.mode is Mode.EMULATED else set())
    if ex.settings.in_container and names & in_builder:
        _check_builder(ex, plan)  # the commands of those stages run in it: it is checked, not the host
        names = (names - in_builder) | {"images"}
    checks = doctor.run_checks(
        arch=plan.arch,
        host=plan.host,
        page_size=plan.page_size,
        release=ex.release,
        toolchain=tc,
        settings=ex.settings,
        proxy_dir=plan.layout.checkout(Component.PROXY),
        stages=names,
    )
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ToolError(
            "; ".join(f"{c.name}: found {c.found}, need {c.required}" for c in failed),
            hint="\n".join(f"fix {c.name}: {c.fix}" for c in failed)
            + f"\n`invoke doctor --release {plan.release} --arch {plan.arch} --toolchain {tc.name}` shows every "
            "check; nothing was changed",
        )
    _check_base_images(ex, stages)


def _check_base_images(ex: Executor, stages: list[Stage]) -> None:
    """When the images stage will run: every base image resolved for the target platform now, not hours later."""
    from istiobuild.stages.images import EnsureBaseImages

    for step in (step for stage in stages for step in stage.steps):
        if isinstance(step, EnsureBaseImages):
            step.resolve(ex)


def _check_builder(ex: Executor, plan: BuildPlan) -> None:
    from istiobuild import dockerapi

    cli, builder = ex.docker(), ex.settings.builder
    if not dockerapi.has_image(cli, builder):
        raise ToolError(
            f"builder image {builder} does not exist",
            hint="build it from dockerfiles/ (dockerfiles/README.md), for the target platform",
        )
    os_, have = dockerapi.image_arch(cli, builder)
    if have != plan.arch.goarch:
        raise ToolError(
            f"builder image {builder} is {os_}/{have}, the target is {plan.arch.oci_platform}",
            hint=f"build the builder with --platform {plan.arch.oci_platform}",
        )


@contextlib.contextmanager
def _stage_scope(ex: Executor, stage: Stage) -> Iterator[None]:
    """The stage's log and secrets: its secret files are removed however the stage ends."""
    ex.stage = stage
    try:
        yield
    except IstiobuildError as exc:
        if exc.log is None and ex.log.exists():
            exc.log = ex.log
        if not exc.message.startswith("stage "):
            exc.message = f"stage {stage.name.value} failed: {exc.message}"
        raise
    except OSError as exc:  # disk full, a path that vanished, no permission: one line, not a traceback
        hint = "free some disk space, then run the same command again" if exc.errno == errno.ENOSPC else ""
        where = f": {exc.filename}" if exc.filename else ""
        raise StepFailed(
            f"stage {stage.name.value} failed: {exc.strerror or exc}{where}", hint=hint, log=ex.log
        ) from exc
    except Exception as exc:
        if type(exc).__module__.startswith("docker"):  # the docker SDK's errors: the daemon's own words
            raise StepFailed(f"stage {stage.name.value} failed: docker: {exc}", log=ex.log) from exc
        raise
    finally:
        for path in stage.secret_files:
            secrets.remove_secret_file(path)
        ex.stage = None


def run(
    ex: Executor,
    plan: BuildPlan,
    tc: Toolchain,
    *,
    only: list[StageName] | None = None,
    start: StageName | None = None,
) -> list[str]:
    """Run the plan's stages in order, skipping those that are up to date; returns what happened to each."""
    names = [s.name for s in plan.stages]
    for name in [*(only or []), *([start] if start else [])]:
        if name not in names:
            raise UsageError(
                f"stage {name.value} is not part of this plan{_missing_why(name)}", hint=_missing_hint(name)
            )
    wanted = [s for s in plan.stages if only is None or s.name in only]
    if ex.dry_run:
        return _dry_run(ex, plan, wanted, start)
    with fsutil.workdir_lock(ex.settings.workdir), cache.shared(ex.settings.cache):  # no prune while it runs
        state = State(ex)  # shared: nothing changes a checkout before the first stage that runs
        todo = pending(state, plan, wanted, start)
        if todo:
            _preflight(ex, plan, tc, todo)
        return _loop(state, plan, wanted, todo)


def _missing_why(name: StageName) -> str:
    return ": it runs only with --push" if name is StageName.PUBLISH else ""


def _missing_hint(name: StageName) -> str:
    if name is StageName.PUBLISH:
        return "publish runs only with --push (and a --hub you can push to)"
    return "`invoke plan` lists the stages"


def _loop(state: State, plan: BuildPlan, wanted: list[Stage], todo: list[Stage]) -> list[str]:
    summary = []
    ex = state.ex
    previous = ""
    for stage in plan.stages:
        key = previous = stage_key(previous, stage, state.inputs(stage))
        if stage not in wanted:
            continue
        if stage not in todo:
            ex.console.skip(stage.name.value, "up to date")
            summary.append(f"{stage.name.value}: up to date")
            continue
        stamp = plan.layout.stamps / f"{stage.name.value}.json"
        stamp.unlink(missing_ok=True)
        ex.console.start(stage.name.value, stage.summary, plan.layout.log(stage.name.value))
        began = time.monotonic()
        try:
            with _stage_scope(ex, stage):
                for step in stage.steps:
                    ex.step(step)
        except IstiobuildError as exc:  # its stage, time and log for the CI annotation and the summary
            ex.console.failed(stage.name.value, time.monotonic() - began, exc)
            raise
        state.forget()
        fsutil.write_json(stamp, {"key": key, "outputs": state.outputs(stage)})
        ex.console.done(stage.name.value, time.monotonic() - began)
        summary.append(f"{stage.name.value}: done")
    return summary


def _dry_run(ex: Executor, plan: BuildPlan, wanted: list[Stage], start: StageName | None) -> list[str]:
    """Show what a build would do; read-only: no lock, no stamp, no log, no image, nothing written. The checks of
    supplied files (a ztunnel's sha256 and arch, the downloads, cargo's target library) run as for a build: they
    only read."""
    from istiobuild.stages import istio

    todo = pending(State(ex), plan, wanted, start)
    for stage in todo:
        if stage.name is StageName.ISTIO:
            istio.preflight(stage)
    summary = []
    for stage in wanted:
        if stage not in todo:
            ex.console.skip(stage.name.value, "up to date (would be skipped)")
            summary.append(f"{stage.name.value}: up to date")
            continue
        ex.console.start(stage.name.value, f"would run: {stage.summary}")
        for step in stage.steps:
            ex.step(step)
        summary.append(f"{stage.name.value}: would run")
    return summary

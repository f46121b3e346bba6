"""Benchmark: istiobuild's own cost per stage on a real build, cold and warm, the no-op rerun, `invoke --list`.

1. Builds the offline example once, with a cache of the bench's own (ISTIOBUILD_CACHE_DIR; never the
   user's ~/.cache/istiobuild, which other workdirs share and the cold runs would empty).
2. Per stage (proxy, istio), REPEAT rounds of `invoke build --from S --to S` (istiobuild runs exactly that
   stage: its actions and its commands) and a bare bash script running the same stage's command steps as
   `invoke plan --json` prints them, each after `bazel clean --expunge` (proxy) or with istio's out/ gone,
   so both do the same real work:
   - cold: bazel's disk and repository caches and Go's build and module caches emptied before each run:
     everything is built (the cache root stays: its paths are in every stage's key, so another root would
     make `--from S` run checkout, patch and toolchain again too);
   - warm: the cache as the previous run left it, as a second workdir sharing the cache gets it.
   Prints medians and the ratio (goal <= 1.05).
3. A rerun with nothing changed (every stage skipped), `invoke plan`, and `invoke --list` against importing invoke
   alone (goal <= 1.2x).

    python bench/bench_build.py [--arch aarch64] [--toolchain gcc] [--repeat 5] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from istiobuild.cache import part_dir

REPO = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]
COLD = ("bazel-disk", "bazel-repo", "go-build", "go-mod")  # the parts of the cache a cold build finds empty
Plan = dict[str, Any]  # `invoke plan --json`


def invoke(*args: str, cache: Path) -> None:
    env = {**os.environ, "ISTIOBUILD_CACHE_DIR": str(cache)}
    subprocess.run([*INVOKE, *args], check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def plan_of(common: tuple[str, ...], cache: Path) -> Plan:
    env = {**os.environ, "ISTIOBUILD_CACHE_DIR": str(cache)}
    out = subprocess.run([*INVOKE, "plan", *common, "--json"], check=True, capture_output=True, text=True, env=env)
    plan: Plan = json.loads(out.stdout)
    return plan


def bare_script(plan: Plan, stage: str) -> str:
    """The stage's command steps, pasted as `invoke plan` prints them."""
    steps = next(s for s in plan["stages"] if s["name"] == stage)["steps"]
    lines = ["#!/bin/bash", "set -euo pipefail"]
    lines += [f'{s["command"]} >>"$LOG" 2>&1' for s in steps if "action" not in s]
    return "\n".join(lines) + "\n"


def first_command(plan: Plan, stage: str) -> Plan:
    step: Plan = next(s for s in next(s for s in plan["stages"] if s["name"] == stage)["steps"] if "action" not in s)
    return step


def fresh(stage: str, plan: Plan) -> None:
    """The stage's outputs gone: bazel's output base for proxy (its disk cache is the cache's), Go's out/ for istio."""
    step = first_command(plan, stage)
    if stage == "istio":
        shutil.rmtree(Path(step["cwd"]) / "out", ignore_errors=True)
        return
    startup = next(a for a in step["argv"] if a.startswith("BAZEL_STARTUP_ARGS=")).split("=", 1)[1].split()
    subprocess.run(["bazel", *startup, "clean", "--expunge"], cwd=step["cwd"], env={**os.environ, **step["env"]},
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def chill(cache: Path) -> None:
    """Empty what makes a build warm: bazel's disk and repository caches, Go's build and (read-only) module caches."""
    for part in COLD:
        path = part_dir(cache, part)
        for folder, _, _ in os.walk(path):
            os.chmod(folder, 0o700)  # noqa: PTH101
        shutil.rmtree(path, ignore_errors=True)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ours(stage: str, common: tuple[str, ...], cache: Path, cold: bool) -> float:
    fresh(stage, plan_of(common, cache))
    if cold:
        chill(cache)
    return timed(lambda: invoke("build", *common, "--from", stage, "--to", stage, cache=cache))


def bare(stage: str, common: tuple[str, ...], work: Path, cache: Path, cold: bool) -> float:
    plan = plan_of(common, cache)
    script = work / f"bare-{stage}.sh"
    script.write_text(bare_script(plan, stage))
    env = {**os.environ, "LOG": str(work / "bare.log")}
    fresh(stage, plan)
    if cold:
        chill(cache)
    return timed(lambda: subprocess.run(["bash", str(script)], check=True, env=env))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="aarch64")
    parser.add_argument("--toolchain", default="gcc")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="istiobuild-bench-"))
    cache = Path(tempfile.mkdtemp(prefix="istiobuild-bench-cache-"))  # the checkouts borrow its git objects: kept
    common = ("--release", "example", "--arch", args.arch, "--toolchain", args.toolchain, "--workdir", str(work))
    first = timed(lambda: invoke("build", *common, cache=cache))
    print(f"example build, {args.arch}/{args.toolchain}, workdir {work}, cache {cache}")
    print(f"  first full build: {first:.1f} s")
    for stage in ("proxy", "istio"):
        for cold in (True, False):
            rounds = [(ours(stage, common, cache, cold), bare(stage, common, work, cache, cold))
                      for _ in range(args.repeat)]  # fmt: skip
            mine, script = (statistics.median(r[i] for r in rounds) for i in (0, 1))
            goal = " (goal <= 1.05)" if cold else ""  # warm: little real work, istiobuild's own seconds dominate
            print(f"  {stage} {'cold' if cold else 'warm'}, median of {args.repeat}: istiobuild {mine:.2f} s, "
                  f"bare script {script:.2f} s, ratio {mine / script:.3f}{goal}, "
                  f"difference {mine - script:+.2f} s")  # fmt: skip
    noop = statistics.median(timed(lambda: invoke("build", *common, cache=cache)) for _ in range(5))
    print(f"  no-op rerun, median of 5: {noop:.2f} s (python + invoke start-up included)")
    planned = statistics.median(timed(lambda: invoke("plan", *common, cache=cache)) for _ in range(5))
    print(f"  invoke plan, median of 5: {planned:.2f} s (goal <= 1 s: no SBOM validator or other heavy import)")
    listing = statistics.median(timed(lambda: invoke("--list", cache=cache)) for _ in range(9))
    one_task = work / "one-task"
    one_task.mkdir(exist_ok=True)
    (one_task / "tasks.py").write_text("from invoke import task\n\n\n@task\ndef hello(c):\n    pass\n")
    listing_one = statistics.median(
        timed(
            lambda: subprocess.run(
                [*INVOKE[:3], "--search-root", str(one_task), "--list"], check=True, stdout=subprocess.DEVNULL
            )
        )
        for _ in range(9)
    )
    bare_import = statistics.median(
        timed(lambda: subprocess.run([sys.executable, "-c", "import invoke"], check=True)) for _ in range(9)
    )
    print(f"  invoke --list {listing:.3f} s vs python -c 'import invoke' {bare_import:.3f} s: "
          f"ratio {listing / bare_import:.2f} (goal <= 1.2); invoke --list of a one-task tasks.py "
          f"{listing_one:.3f} s (ratio {listing / listing_one:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()

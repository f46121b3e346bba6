"""Benchmark: istiobuild's own cost per stage on a real build, the no-op rerun, and `invoke --list`.

1. Builds the offline example once to warm everything up.
2. Per stage (proxy, istio), alternating REPEAT times: `invoke build --from S --to S` (istiobuild runs
   exactly that stage: its actions and its commands) and a bare bash script running the same stage's
   command steps as `invoke plan --json` prints them, each after `bazel clean --expunge` with an empty
   disk cache for proxy, so both do the same real work. Prints medians and the ratio (goal <= 1.05).
3. A rerun with nothing changed (every stage skipped), and `invoke --list` against importing invoke
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

REPO = Path(__file__).resolve().parent.parent
INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]


def invoke(*args: str) -> None:
    subprocess.run([*INVOKE, *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bare_script(plan: dict, stage: str) -> str:  # type: ignore[type-arg]
    """The stage's command steps, pasted as `invoke plan` prints them."""
    steps = next(s for s in plan["stages"] if s["name"] == stage)["steps"]
    lines = ["#!/bin/bash", "set -euo pipefail"]
    lines += [f'{s["command"]} >>"$LOG" 2>&1' for s in steps if "action" not in s]
    return "\n".join(lines) + "\n"


def bazel_clean(plan: dict, work: Path) -> None:  # type: ignore[type-arg]
    step = next(s for s in next(s for s in plan["stages"] if s["name"] == "proxy")["steps"] if "action" not in s)
    startup = next(a for a in step["argv"] if a.startswith("BAZEL_STARTUP_ARGS=")).split("=", 1)[1].split()
    subprocess.run(["bazel", *startup, "clean", "--expunge"], cwd=step["cwd"], env={**os.environ, **step["env"]},
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    shutil.rmtree(work / "cache" / "bazel-disk", ignore_errors=True)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh(stage: str, plan: dict, work: Path) -> None:  # type: ignore[type-arg]
    """Make both ways do the stage's real work: bazel from scratch for proxy, Go's outputs gone for istio."""
    if stage == "proxy":
        bazel_clean(plan, work)
    else:
        step = next(s for s in next(s for s in plan["stages"] if s["name"] == "istio")["steps"] if "action" not in s)
        shutil.rmtree(Path(step["cwd"]) / "out", ignore_errors=True)


def compare(stage: str, plan: dict, common: tuple[str, ...], work: Path, repeat: int) -> tuple[float, float]:  # type: ignore[type-arg]
    script = work / f"bare-{stage}.sh"
    script.write_text(bare_script(plan, stage))
    env = {**os.environ, "LOG": str(work / "bare.log")}
    ours, bare = [], []
    for _ in range(repeat):
        fresh(stage, plan, work)
        ours.append(timed(lambda: invoke("build", *common, "--from", stage, "--to", stage)))
        fresh(stage, plan, work)
        bare.append(timed(lambda: subprocess.run(["bash", str(script)], check=True, env=env)))
    return statistics.median(ours), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="aarch64")
    parser.add_argument("--toolchain", default="gcc")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="istiobuild-bench-"))
    common = ("--release", "example", "--arch", args.arch, "--toolchain", args.toolchain, "--workdir", str(work))
    first = timed(lambda: invoke("build", *common))
    out = subprocess.run([*INVOKE, "plan", *common, "--json"], check=True, capture_output=True, text=True).stdout
    plan = json.loads(out)
    print(f"example build, {args.arch}/{args.toolchain}, workdir {work}")
    print(f"  first full build: {first:.1f} s")
    for stage in ("proxy", "istio"):
        ours, bare = compare(stage, plan, common, work, args.repeat)
        print(f"  {stage}, median of {args.repeat}: istiobuild {ours:.2f} s, bare script {bare:.2f} s, "
              f"ratio {ours / bare:.3f} (goal <= 1.05)")  # fmt: skip
    noop = statistics.median(timed(lambda: invoke("build", *common)) for _ in range(5))
    print(f"  no-op rerun, median of 5: {noop:.2f} s (python + invoke start-up included)")
    listing = statistics.median(timed(lambda: invoke("--list")) for _ in range(9))
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

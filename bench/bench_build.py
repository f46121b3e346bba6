"""Benchmark: istiobuild's own cost on a real build, and the cost of a no-op rerun.

1. Builds the offline example once (checkout .. istio) to warm everything up.
2. Alternates, REPEAT times: `invoke build --from proxy` (istiobuild runs the proxy and istio
   stages) and a bare bash script running the same commands (argv, cwd, env from `invoke plan
   --json`), each after `bazel clean --expunge` with an empty disk cache, so both do the same
   real work (bazel server start, wee8 via gn/ninja, envoy, Go). Prints medians and the ratio
   (goal <= 1.05).
3. Times a rerun with nothing changed (every stage skipped; goal <= 1 s).

    python bench/bench_build.py [--arch aarch64] [--toolchain gcc] [--repeat 3] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def invoke(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bare_script(plan: dict, stages: tuple[str, ...]) -> str:  # type: ignore[type-arg]
    lines = ["#!/bin/bash", "set -euo pipefail"]
    for stage in plan["stages"]:
        if stage["name"] not in stages:
            continue
        for step in stage["steps"]:
            if step["argv"][0] == "istiobuild":
                continue
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(step["env"].items()))
            lines.append(f'(cd {shlex.quote(step["cwd"])} && env {env} {shlex.join(step["argv"])}) >>"$LOG" 2>&1')
    return "\n".join(lines) + "\n"


def bazel_clean(plan: dict) -> None:  # type: ignore[type-arg]
    steps = next(s for s in plan["stages"] if s["name"] == "proxy")["steps"]
    step = next(s for s in steps if s["argv"][0] == "make")
    startup = next(a for a in step["argv"] if a.startswith("BAZEL_STARTUP_ARGS=")).split("=", 1)[1].split()
    subprocess.run(
        ["bazel", *startup, "clean", "--expunge"],
        cwd=step["cwd"],
        env={**os.environ, **step["env"]},
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="aarch64")
    parser.add_argument("--toolchain", default="gcc")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="istiobuild-bench-"))
    common = ("--release", "example", "--arch", args.arch, "--toolchain", args.toolchain, "--workdir", str(work))
    start = time.perf_counter()
    invoke("build", *common)
    first = time.perf_counter() - start
    plan = json.loads(
        subprocess.run(
            [sys.executable, "-m", "invoke", "--search-root", str(REPO), "plan", *common, "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    script = work / "bare.sh"
    script.write_text(bare_script(plan, ("proxy", "istio")))
    timings: dict[str, list[float]] = {"istiobuild": [], "bare": []}
    for _ in range(args.repeat):
        bazel_clean(plan)
        t = time.perf_counter()
        invoke("build", *common, "--from", "proxy")
        timings["istiobuild"].append(time.perf_counter() - t)
        bazel_clean(plan)
        t = time.perf_counter()
        subprocess.run(["bash", str(script)], check=True, env={**os.environ, "LOG": str(work / "bare.log")})
        timings["bare"].append(time.perf_counter() - t)
    noop = []
    for _ in range(5):
        t = time.perf_counter()
        invoke("build", *common)
        noop.append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in timings.items()}
    print(f"example build, {args.arch}/{args.toolchain}, workdir {work}")
    print(f"  first full build (checkout .. istio): {first:.1f} s")
    print(
        f"  proxy+istio stages, median of {args.repeat}: istiobuild {med['istiobuild']:.2f} s, "
        f"bare script {med['bare']:.2f} s, ratio {med['istiobuild'] / med['bare']:.3f} (goal <= 1.05)"
    )
    print(
        f"  no-op rerun (every stage up to date), median of 5: {statistics.median(noop):.2f} s (goal <= 1 s)"
        f" [includes python+invoke start-up]"
    )


if __name__ == "__main__":
    main()

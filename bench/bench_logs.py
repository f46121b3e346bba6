"""Benchmark: does streaming gigabytes of build output through istiobuild's runner slow a build?

Streams SIZE bytes (default 1 GiB) through `istiobuild.run.run` (the child writes straight into the
step's log file; the tail is read back at the end), through the runner with a live view (what a TTY
gets: the log's newest line polled a few times a second), through the runner with a secret to mask
(the output is copied through the stream-safe redactor), and through a plain redirect to a file,
alternating, REPEAT times each; prints the median times, their ratios (goal <= 1.05) and the peak
memory of each (goal: flat, independent of SIZE).

    python bench/bench_logs.py [--size BYTES] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def measure(mode: str, size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(HERE / "stream.py"), mode, str(size)], capture_output=True, text=True, check=True
    ).stdout
    data: dict[str, float] = json.loads(out)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1 << 30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"redirect": [], "runner": [], "runner-live": [], "runner-secret": []}
    for _ in range(args.repeat):
        for mode, runs in results.items():
            runs.append(measure(mode, args.size))
    small = measure("runner", args.size // 16)
    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in results.items()}
    peak = {m: max(r["peak_rss_kib"] for r in rs) for m, rs in results.items()}
    print(f"log streaming, {args.size / 2**30:.2f} GiB, median of {args.repeat}:")
    print(f"  plain redirect  {med['redirect']:.2f} s   peak RSS {peak['redirect'] / 1024:.1f} MiB")
    print(f"  istiobuild run  {med['runner']:.2f} s   peak RSS {peak['runner'] / 1024:.1f} MiB")
    print(
        f"  istiobuild run, live view (TTY)  {med['runner-live']:.2f} s   peak RSS {peak['runner-live'] / 1024:.1f} MiB"
    )
    print(
        f"  istiobuild run, masking a secret  {med['runner-secret']:.2f} s   "
        f"peak RSS {peak['runner-secret'] / 1024:.1f} MiB"
    )
    print(f"  ratio runner/redirect = {med['runner'] / med['redirect']:.3f}  (goal <= 1.05)")
    print(f"  ratio masking/redirect = {med['runner-secret'] / med['redirect']:.3f}")
    print(f"  ratio live view/redirect = {med['runner-live'] / med['redirect']:.3f}")
    print(
        f"  runner peak RSS at 1/16 of the size: {small['peak_rss_kib'] / 1024:.1f} MiB "
        f"(flat memory: same as at full size)"
    )


if __name__ == "__main__":
    main()

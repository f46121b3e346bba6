"""Benchmark: the example's proxy stage served from a remote cache vs a cold build.

Per round (--repeat N, each with a fresh cache server and fresh workdirs):
1. cold: `invoke build --release example --arch x86_64 --to proxy` without a remote cache, in a new workdir
   with an empty cache directory (no bazel output base, empty --disk_cache): every action runs;
2. upload: the same against an empty remote cache (what the first CI runner pays: it runs and uploads);
3. served: the same in a third workdir, the cache directory emptied again (same path): every action should
   be a remote cache hit.
The cache is nginx with WebDAV (tests/cacheserver.py, HTTP) or, with --grpc, BuildGrid (tests/reapi.py).
Times: the proxy stage's own ("done proxy in X s": bazel's server start, analysis and the actions, plus
istiobuild's steps), and bazel's critical path ("INFO: Elapsed time: ..., Critical Path: X s": the actions
alone, run or fetched). Prints the medians, the ratios served/cold and the hit counts.

    python bench/bench_remote_cache.py [--grpc] [--repeat 3] [--toolchain clang] [--base DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from cacheserver import cache_server  # noqa: E402
from istiobuild import procs  # noqa: E402
from reapi import reapi_server  # noqa: E402

INVOKE = [sys.executable, "-m", "invoke", "--search-root", str(REPO)]
DONE = re.compile(r"done proxy in ([0-9.]+)s")
HITS = re.compile(r"remote cache: (\d+) of (\d+) actions hit")
CRITICAL = re.compile(r"INFO: Elapsed time: [0-9.]+s, Critical Path: ([0-9.]+)s")


def proxy_stage(work: Path, cache: Path, toolchain: str, env: dict[str, str]) -> tuple[float, float, str]:
    """One `build --to proxy`: the proxy stage's seconds, bazel's critical path, the hits ("M of N", "-")."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    full.update(env, ISTIOBUILD_CACHE_DIR=str(cache))
    argv = [*INVOKE, "build", "--release", "example", "--arch", "x86_64", "--toolchain", toolchain]
    try:
        proc = subprocess.run([*argv, "--workdir", str(work), "--to", "proxy"], env=full, capture_output=True,
                              text=True, check=False)  # fmt: skip
    finally:
        for root in (work / "cache" / "bazel-root", cache / "bazel-root"):
            procs.stop_bazel_servers(root)
    if proc.returncode != 0:
        sys.exit(f"build failed:\n{proc.stderr[-3000:]}")
    seconds = float(DONE.findall(proc.stderr)[-1])
    critical = float(CRITICAL.findall((work / "logs" / "example-x86_64-proxy.log").read_text())[-1])
    hits = HITS.findall(proc.stderr)
    return seconds, critical, f"{hits[-1][0]} of {hits[-1][1]}" if hits else "-"


@contextlib.contextmanager
def server(base: Path, grpc: bool) -> Iterator[dict[str, str]]:
    """A fresh, empty cache; yields the environment that points a build at it."""
    if grpc:
        with reapi_server(base) as reapi:
            yield {"ISTIOBUILD_REMOTE_CACHE": reapi.url}
    else:
        with cache_server(base) as nginx:
            yield {
                "ISTIOBUILD_REMOTE_CACHE": nginx.url,
                "ISTIOBUILD_REMOTE_HEADER": f"{nginx.header_name}={nginx.header_value}",
            }


def one_round(base: Path, grpc: bool, toolchain: str) -> dict[str, tuple[float, float, str]]:
    cache = base / "cache"
    results = {"cold": proxy_stage(base / "cold", base / "cold-cache", toolchain, {})}
    with server(base / "server", grpc) as env:
        results["upload"] = proxy_stage(base / "upload", cache, toolchain, env)
        cache.rename(base / "cache.uploaded")  # the next build: empty disk cache, same cache path
        results["served"] = proxy_stage(base / "served", cache, toolchain, env)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grpc", action="store_true", help="BuildGrid (REAPI) instead of nginx (HTTP)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--toolchain", default="clang")
    parser.add_argument("--base", default="", help="directory for workdirs and caches (default: a temp dir)")
    args = parser.parse_args()
    base = Path(args.base or tempfile.mkdtemp(prefix="istiobuild-bench-remote-"))
    rounds = [one_round(base / f"round{i}", args.grpc, args.toolchain) for i in range(args.repeat)]
    kind = "BuildGrid (gRPC)" if args.grpc else "nginx WebDAV (HTTP)"
    print(f"example proxy stage, x86_64/{args.toolchain}, remote cache {kind}, {args.repeat} rounds, in {base}")
    stage, critical = {}, {}
    for name in ("cold", "upload", "served"):
        stage[name] = statistics.median(r[name][0] for r in rounds)
        critical[name] = statistics.median(r[name][1] for r in rounds)
        runs = " ".join(f"{r[name][0]:.1f}" for r in rounds)
        hits = ", ".join(r[name][2] for r in rounds)
        print(f"  {name:<7} proxy stage median {stage[name]:6.2f} s (runs: {runs}), bazel critical path median "
              f"{critical[name]:5.2f} s; remote cache hits: {hits}")  # fmt: skip
    for name in ("served", "upload"):
        print(f"  {name} / cold: proxy stage {stage[name] / stage['cold']:.2f}, "
              f"critical path {critical[name] / critical['cold']:.2f}")  # fmt: skip
    if not args.base:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

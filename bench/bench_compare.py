"""Benchmark: how long does `compare_files` take to say where two envoy binaries differ?

Copies ENVOY (default: the example's, from `invoke build --release example --arch x86_64 --workdir
/tmp/h3-work`), flips its last byte (the worst case: every byte before it is read and compared) and
times `compare_files` REPEAT times; then the same for the binary padded to --pad-to bytes (a real
envoy is 100 MB+; the example's is ~1 MB). Prints JSON: bytes, median and best seconds, MB/s, the
summary line. Files are read from the page cache after the first round.

    python bench/bench_compare.py [--envoy PATH] [--repeat N] [--pad-to BYTES]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from istiobuild.compare import compare_files


def measure(original: Path, repeat: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "envoy-flipped"
        shutil.copyfile(original, copy)
        with copy.open("r+b") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
            fh.seek(-1, os.SEEK_END)
            fh.write(bytes([last[0] ^ 0xFF]))
        times, summary = [], ""
        for _ in range(repeat):
            start = time.perf_counter()
            found = compare_files(original, copy)
            times.append(time.perf_counter() - start)
            assert found is not None
            summary = found.summary
    size = original.stat().st_size
    median = statistics.median(times)
    return {"bytes": size, "median_s": round(median, 4), "best_s": round(min(times), 4),
            "mb_per_s": round(2 * size / median / 1e6), "summary": summary}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--envoy", type=Path, default=Path("/tmp/h3-work/example-x86_64/artifacts/envoy"))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pad-to", type=int, default=150_000_000)
    args = parser.parse_args()
    print(json.dumps({"envoy": measure(args.envoy, args.repeat)}))
    with tempfile.TemporaryDirectory() as tmp:
        padded = Path(tmp) / "envoy-padded"
        shutil.copyfile(args.envoy, padded)
        with padded.open("ab") as fh:
            while fh.tell() < args.pad_to:
                fh.write(os.urandom(min(1 << 20, args.pad_to - fh.tell())))
        print(json.dumps({"envoy padded": measure(padded, args.repeat)}))


if __name__ == "__main__":
    main()

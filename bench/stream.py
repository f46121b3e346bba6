"""One measurement: stream N bytes of build-like output either through istiobuild's runner or into a
plain file redirect. Prints JSON: mode, seconds, peak RSS of this process (KiB)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINE = "INFO: From Compiling external/com_googlesource_chromium_v8/wee8/src/objects/objects.cc: -Wno-error\n"


def producer(size: int) -> list[str]:
    # a child that writes `size` bytes of log lines, as `bazel -s --sandbox_debug` does
    code = (
        "import sys\n"
        f"line = {LINE!r}.encode()\n"
        f"block = line * (65536 // len(line))\n"
        f"left = {size}\n"
        "out = sys.stdout.buffer\n"
        "while left > 0:\n"
        "    chunk = block[:left]\n"
        "    out.write(chunk)\n"
        "    left -= len(chunk)\n"
    )
    return [sys.executable, "-c", code]


def main() -> None:
    mode, size = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "step.log"
        start = time.perf_counter()
        if mode in ("runner", "runner-live", "runner-secret"):
            from istiobuild.run import run

            seen: list[str] = []
            secrets = ["X-Cache-Token=not-in-the-output"] if mode == "runner-secret" else []
            run(producer(size), log=log, on_line=seen.append if mode == "runner-live" else None, secrets=secrets)
        else:
            with log.open("wb") as fh:
                subprocess.run(producer(size), stdout=fh, stderr=subprocess.STDOUT, check=True)
        seconds = time.perf_counter() - start
        written = log.stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": mode, "seconds": seconds, "peak_rss_kib": peak, "bytes": written}))


if __name__ == "__main__":
    main()

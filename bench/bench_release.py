"""What the release stage costs on a real-sized tree: the 1.5.0 archive laid out from the real istio tree, and the
release-defaults patch (with istio's own regeneration of istioctl's embedded charts) on the real files.

    python bench/bench_release.py [--mirrors /work/mirrors] [--istioctl-mb 80] [--repeat 3]

Needs mirrors of istio/istio (ISTIOBUILD_UPSTREAM_MIRRORS or --mirrors) and go-bindata. The istioctl is a stand-in
of the given size (a real 1.5 istioctl is ~80 MB unstripped). Prints seconds and sizes; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from istiobuild import archives, release, upstream
from istiobuild.arch import Arch


def _timed(repeat: int, fn):  # type: ignore[no-untyped-def]
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mirrors", default=os.environ.get("ISTIOBUILD_UPSTREAM_MIRRORS", "/work/mirrors"))
    parser.add_argument("--istioctl-mb", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rel = release.get("1.5.0")
    assert rel.archive is not None
    mirror = upstream.mirror_repo(Path(args.mirrors), release.Component.ISTIO)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tree = root / "istio"
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(mirror), "archive", "--format=tar", rel.pins[release.Component.ISTIO].commit],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        istioctl = root / "istioctl"
        istioctl.write_bytes(b"\x7fELF" + os.urandom(args.istioctl_mb * 2**20))

        def make() -> bytes:
            entries = archives.install_entries(rel.archive, tree, istioctl, "version: 1.5.0\n", "istio-1.5.0")  # type: ignore[arg-type]
            return archives.tar_gz(entries, rel.source_date_epoch)

        seconds, data = _timed(args.repeat, make)
        files = len(archives.install_entries(rel.archive, tree, istioctl, "", "istio-1.5.0"))
        print(
            f"1.5.0 install archive: {files} files, {len(data) / 2**20:.1f} MB, {seconds:.2f} s "
            f"(median of {args.repeat})"
        )
        print(f"  identical when made again: {make() == data}")
        seconds, outcome = _timed(
            args.repeat,
            lambda: upstream.check_defaults(
                rel, Path(args.mirrors), Arch.AARCH64, Path(tempfile.mkdtemp(dir=tmp)), root / "log"
            ),
        )
        print(
            f"1.5.0 release-defaults patch (rewrite {len(rel.defaults.files) if rel.defaults else 0} files, regenerate "
            f"assets.gen.go, git apply --check with the series): {seconds:.2f} s, {outcome.patch_bytes} bytes"
        )


if __name__ == "__main__":
    main()

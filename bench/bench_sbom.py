"""Benchmark: what does an SBOM cost on top of reading the image once?

For IMAGE (default: the example's proxyv2, `istio/proxyv2:example-amd64`; with --build it is built first by
`invoke build --release example --arch x86_64 --workdir /tmp/h1-work`), times REPEAT times each:

  export       a plain `container.export()` read to the end (the floor: docker's tar stream)
  sbom-scan    imagefs.scan_image: the same pass with every file's sha256, ELF machine, Go build info
  build        sbom.build (cyclonedx-python-lib)
  validate     sbom.validate (the library's bundled CycloneDX 1.6 schema, strict)

and prints the medians, the image's size, files and Go binaries. With --large DIR[,DIR...] it also imports a
tar of those host directories as an image (e.g. /usr/lib/go-1.19,/usr/share/go-1.19/src: ~8,700 files, ~20 Go
binaries, 450 MB) and times the same on it, to show how the figures grow with thousands of files.

    python bench/bench_sbom.py [--image IMG] [--build] [--repeat N] [--large DIRS]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import statistics
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker

from istiobuild import imagefs, sbom
from istiobuild.run import run

REPO = Path(__file__).resolve().parent.parent
SOURCES = [
    sbom.SourceRef(name="proxy", url="https://github.com/istio/proxy", commit="a" * 40, tag="0.1.0"),
    sbom.SourceRef(name="envoy", url="https://github.com/istio/envoy", commit="b" * 40),
    sbom.SourceRef(name="istio", url="https://github.com/istio/istio", commit="c" * 40, tag="0.1.0"),
]


def _export(cli: Any, image: str) -> Iterator[bytes]:
    container = cli.containers.create(image, entrypoint=["/nonexistent"])
    try:
        yield from container.export()
    finally:
        container.remove(force=True)


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def bench(cli: Any, image: str, repeat: int, scratch: Path) -> None:
    attrs = cli.images.get(image).attrs
    t_export, size = _timed(lambda: sum(len(c) for c in _export(cli, image)), repeat)
    t_scan, scan = _timed(lambda: imagefs.scan_image(cli, image, scratch), repeat)
    args = {"image_id": attrs["Id"], "platform": f"linux/{attrs['Architecture']}", "sources": SOURCES}
    t_build, doc = _timed(
        lambda: sbom.build(image=image, scan=scan, base=None, epoch=0, tool_version="bench", **args), repeat
    )
    t_validate, _ = _timed(lambda: sbom.validate(doc), repeat)
    text = sbom.dumps(doc)
    total = t_scan + t_build + t_validate
    print(f"{image} ({attrs['Id'][:19]}): {size / 2**20:.1f} MiB tar, {len(scan.files)} files, {len(scan.go)} Go")
    print(f"  binaries, {len(doc['components'])} components, SBOM {len(text) / 2**10:.0f} KiB; median of {repeat}:")
    print(f"  export (plain read)      {t_export:7.3f} s")
    print(f"  sbom scan (also verify's ELF check) {t_scan:7.3f} s")
    print(f"  sbom build               {t_build:7.3f} s")
    print(f"  sbom validate            {t_validate:7.3f} s")
    print(f"  scan+build+validate      {total:7.3f} s   = {total / t_export:.1f}x the plain export")


def _build_example() -> str:
    run(
        ["invoke", "build", "--release", "example", "--arch", "x86_64", "--workdir", "/tmp/h1-work"],
        cwd=REPO,
        what="build the example",
    )
    return "istio/proxyv2:example-amd64"


@contextlib.contextmanager
def _pinned(cli: Any, image: str) -> Iterator[str]:
    """A private tag for `image`, so that other builds retagging the shared name do not change it mid-run."""
    tag = f"istiobuild-bench/sbom:{uuid.uuid4().hex[:8]}"
    cli.images.get(image).tag(tag)
    try:
        yield tag
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            cli.images.remove(tag)


@contextlib.contextmanager
def _large_image(cli: Any, dirs: list[str]) -> Iterator[str]:
    with tempfile.TemporaryFile() as fh:
        with tarfile.open(fileobj=fh, mode="w") as tar:
            for directory in dirs:
                tar.add(directory, arcname=directory.lstrip("/"))
        fh.seek(0)
        repo = f"istiobuild-bench/large-{uuid.uuid4().hex[:8]}"
        cli.api.import_image_from_data(fh, repository=repo, tag="t")
    try:
        yield f"{repo}:t"
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            cli.images.remove(f"{repo}:t", force=True)


@contextlib.contextmanager
def _docker_in_use() -> Iterator[None]:
    """Hold the test suite's shared docker lock (tests/conftest.py): a test session ending meanwhile then leaves
    the images and containers it did not make (ours) alone."""
    lock = os.open("/tmp/istiobuild-tests-docker.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_SH)
        yield
    finally:
        os.close(lock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default="istio/proxyv2:example-amd64")
    parser.add_argument("--build", action="store_true", help="build the example first")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--large", default="", help="comma-separated host directories to import as an image")
    args = parser.parse_args()
    cli = docker.from_env()
    with _docker_in_use(), tempfile.TemporaryDirectory() as scratch:
        image = _build_example() if args.build else args.image
        with _pinned(cli, image) as pinned:
            bench(cli, pinned, args.repeat, Path(scratch))
        if args.large:
            with _large_image(cli, args.large.split(",")) as large:
                bench(cli, large, max(1, args.repeat // 2), Path(scratch))


if __name__ == "__main__":
    main()

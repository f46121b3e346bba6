# ruff: noqa: PTH114, PTH115, PTH118, PTH208, S108  (system paths handled as dpkg lists them: strings)
"""A builder image made offline from this machine's own Debian packages.

For air-gapped machines and CI: the files of the packages a build needs (and everything they depend
on), `/etc`, and the update-alternatives links, imported with `docker import`. The result runs the
example's stages in a container exactly like the real builders from dockerfiles/ do; it carries the
docker CLI, which the images stage of an emulated build drives the host's daemon with.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

from istiobuild.errors import ToolError
from istiobuild.run import run

PACKAGES = (
    "bash", "coreutils", "dash", "make", "gcc", "g++", "libc6-dev", "binutils", "bazel-bootstrap",
    "generate-ninja", "ninja-build", "golang-go", "git", "curl", "sed", "grep", "findutils", "tar", "gzip",
    "util-linux", "openjdk-17-jdk-headless", "ca-certificates",
    "docker.io",  # the docker CLI (Debian ships it in docker.io): the images stage of an emulated build
)  # fmt: skip
_MERGED = ("/bin", "/sbin", "/lib", "/lib64")


def closure(packages: Iterable[str]) -> list[str]:
    """The installed packages `packages` depend on, recursively (themselves included)."""
    out = run(
        ["apt-cache", "depends", "--recurse", "--installed", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *packages],
        capture=True, what="apt-cache depends",
    ).stdout  # fmt: skip
    names = set()
    for raw in out.splitlines():
        line = raw.strip()
        kind, sep, rest = line.partition(":")
        name = rest.strip() if sep and kind in ("Depends", "PreDepends") else ("" if sep else line)
        if name and not name.startswith("<"):
            names.add(name.split(":")[0])
    installed = set(run(["dpkg-query", "-W", "-f=${Package}\n"], capture=True).stdout.split())
    missing = sorted(set(packages) - installed)
    if missing:
        raise ToolError(f"not installed here: {', '.join(missing)}", hint="apt-get install them first")
    return sorted(names & installed)


def _norm(path: str) -> str:
    top = "/" + path.split("/")[1]
    return os.path.realpath(top) + path[len(top) :] if top in _MERGED and os.path.islink(top) else path


def rootfs(packages: Iterable[str], dest: Path) -> int:
    """Write the root filesystem tar; returns the number of paths in it."""
    files: set[str] = set()
    native = run(["dpkg", "--print-architecture"], capture=True).stdout.strip()
    for name in closure(packages):
        # this machine's arch first: with foreign packages installed (libc6:arm64) a bare name is ambiguous
        found = run(["dpkg", "-L", f"{name}:{native}"], capture=True, check=False)
        if found.returncode != 0:  # Architecture: all
            found = run(["dpkg", "-L", name], capture=True, check=False)
        listed = found.stdout.splitlines()
        files.update(_norm(p) for p in listed if p and p != "/.")
    count = 0
    with tarfile.open(dest, "w") as tar:
        for link in _MERGED:
            if os.path.islink(link):
                tar.add(link, recursive=False)
        tar.add("/etc", recursive=True)
        tar.add("/tmp", recursive=False)
        for path in sorted(files):
            if path.startswith("/etc") or path == "/tmp" or not os.path.lexists(path):
                continue
            tar.add(path, recursive=False)
            count += 1
        for directory in ("/usr/bin", "/usr/sbin"):
            for entry in sorted(os.listdir(directory)):
                path = os.path.join(directory, entry)
                if path not in files and os.path.islink(path) and os.readlink(path).startswith("/etc/alternatives/"):
                    tar.add(path, recursive=False)
    return count


def make(image: str, scratch: Path, log: Path, packages: Iterable[str] = PACKAGES) -> None:
    scratch.mkdir(parents=True, exist_ok=True)
    tar = scratch / "host-builder.tar"
    rootfs(packages, tar)
    run(["docker", "import", str(tar), image], log=log, what=f"docker import {image}")
    tar.unlink()

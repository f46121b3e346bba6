"""Running build commands inside a builder container (`--in-container`).

istiobuild orchestrates on the host; each external command of the toolchain, proxy and istio stages
runs in the builder image for the target platform (natively, or under qemu-user through binfmt),
with the workdir and caches mounted at the same paths, as the caller's uid:gid, and with its
environment passed explicitly (nothing leaks in from the host).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from istiobuild.steps import Command, PlanInput


def wrap(
    argv: Sequence[str],
    *,
    image: str,
    platform: str,
    cwd: Path,
    env: Mapping[str, str],
    mounts: Sequence[Path],
    home: Path,
) -> list[str]:
    """`docker run` argv that runs `argv` in `image` as it would run on the host."""
    volumes: list[str] = []
    for path in sorted({m.resolve() for m in mounts}):
        volumes += ["-v", f"{path}:{path}"]
    variables: list[str] = []
    for key, value in sorted({"HOME": str(home), "USER": "istiobuild", **env}.items()):
        variables += ["-e", f"{key}={value}"]
    return [
        "docker",
        "run",
        "--rm",
        "--init",
        "--platform",
        platform,
        "--user",
        f"{os.getuid()}:{os.getgid()}",
        *volumes,
        "-w",
        str(cwd),
        *variables,
        image,
        *argv,
    ]


def command(p: PlanInput, argv: Sequence[str], cwd: Path, env: Mapping[str, str], description: str) -> Command:
    """A command of a containerized stage: as is on the host, or the `docker run` that runs it in the builder."""
    if not p.settings.in_container:
        return Command(argv=tuple(argv), cwd=cwd, env=dict(env), description=description)
    wrapped = wrap(
        argv,
        image=p.settings.builder,
        platform=p.arch.oci_platform,
        cwd=cwd,
        env=env,
        mounts=[p.settings.workdir, p.settings.cache],
        home=p.layout.builder_home,
    )
    return Command(argv=tuple(wrapped), cwd=cwd, description=f"{description} [in {p.settings.builder}]")

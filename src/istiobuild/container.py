"""Running build commands inside a builder container (`--in-container`).

istiobuild orchestrates on the host; each external command of the toolchain, proxy and istio stages
runs in the builder image for the target platform (natively, or under qemu-user through binfmt),
with the workdir and caches mounted at the same paths, as the caller's uid:gid, and with its
environment passed explicitly (nothing leaks in from the host). In emulated mode (a foreign target)
the images stage's make commands run there too, since `make docker` compiles the Go binaries again
(build-linux); they reach the host's docker daemon through its socket, with the caller's groups.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from istiobuild.modes import Mode
from istiobuild.steps import Command, PlanInput

DOCKER_SOCKET = Path("/var/run/docker.sock")


def wrap(
    argv: Sequence[str],
    *,
    image: str,
    platform: str,
    cwd: Path,
    env: Mapping[str, str],
    mounts: Sequence[Path],
    home: Path,
    docker: bool = False,
) -> list[str]:
    """`docker run` argv that runs `argv` in `image` as it would run on the host (with `docker`: able to
    drive the host's daemon through its socket, as the caller's supplementary groups allow)."""
    access: list[str] = []
    for path in sorted({m.resolve() for m in mounts}):
        access += ["-v", f"{path}:{path}"]
    if docker:
        access += ["-v", f"{DOCKER_SOCKET}:{DOCKER_SOCKET}"]
        for group in sorted(set(os.getgroups()) - {os.getgid()}):
            access += ["--group-add", str(group)]
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
        *access,
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
    return _in_builder(p, argv, cwd, env, description, docker=False)


def images_command(p: PlanInput, argv: Sequence[str], cwd: Path, env: Mapping[str, str], description: str) -> Command:
    """A make command of the images stage: on the host, except in emulated mode, where the host cannot
    build target code (`make docker` runs build-linux): then in the builder, with the docker socket."""
    if p.mode is not Mode.EMULATED:
        return Command(argv=tuple(argv), cwd=cwd, env=dict(env), description=description)
    return _in_builder(p, argv, cwd, env, description, docker=True)


def _in_builder(
    p: PlanInput, argv: Sequence[str], cwd: Path, env: Mapping[str, str], description: str, *, docker: bool
) -> Command:
    wrapped = wrap(
        argv,
        image=p.settings.builder,
        platform=p.arch.oci_platform,
        cwd=cwd,
        env=env,
        mounts=[p.settings.workdir, p.settings.cache],
        home=p.layout.builder_home,
        docker=docker,
    )
    return Command(argv=tuple(wrapped), cwd=cwd, description=f"{description} [in {p.settings.builder}]")

"""Docker access: the SDK client, image inspection, tagging, and rewriting an image's config.

The docker SDK does daemon checks, inspect, save/load, export, run and push; the CLI (through the
runner) does what the SDK cannot here: `docker import --platform` and `docker manifest`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from istiobuild.errors import ToolError, UsageError
from istiobuild.secrets import Redactor


class DockerError(ToolError):
    """The docker daemon cannot be used."""


def client() -> Any:
    """A docker SDK client for the daemon DOCKER_HOST names (default: the local socket)."""
    import docker

    try:
        cli = docker.from_env(timeout=300)
        cli.ping()
    except docker.errors.DockerException as exc:
        reason = str(exc)
        if "Permission denied" in reason:
            raise DockerError(
                "no permission to use the docker daemon",
                hint="add your user to the docker group (then log in again) or run as root",
            ) from None
        raise DockerError(
            "the docker daemon is not reachable",
            hint="start it (`dockerd &` or `systemctl start docker`); DOCKER_HOST selects another daemon",
        ) from None
    return cli


def has_image(cli: Any, name: str) -> bool:
    import docker

    try:
        cli.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def image_arch(cli: Any, name: str) -> tuple[str, str]:
    attrs = cli.images.get(name).attrs
    return attrs.get("Os", ""), attrs.get("Architecture", "")


def image_id(cli: Any, name: str) -> str:
    """The image's ID, or "" when it does not exist."""
    import docker

    try:
        return str(cli.images.get(name).id)
    except (docker.errors.ImageNotFound, docker.errors.APIError):
        return ""


def tag(cli: Any, source: str, target: str) -> None:
    repo, _, version = target.rpartition(":")
    cli.images.get(source).tag(repo, tag=version)


@contextlib.contextmanager
def name_lock(name: str) -> Iterator[None]:
    """Holds an exclusive lock on an image name for every istiobuild using this daemon on this machine."""
    import fcntl

    directory = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"istiobuild-{os.getuid()}" / "image-locks"  # noqa: S108
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if directory.is_symlink() or directory.stat().st_uid != os.getuid():
        raise UsageError(f"{directory} is not a directory of yours", hint="remove it; istiobuild recreates it")
    path = directory / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def labels(cli: Any, name: str) -> dict[str, str]:
    """The image's labels ({} when it has none); a missing image is one clear error."""
    import docker

    try:
        found = cli.images.get(name).attrs.get("Config", {}).get("Labels") or {}
    except docker.errors.ImageNotFound:
        raise UsageError(
            f"image {name} does not exist", hint="build or pull it first (`docker images` lists them)"
        ) from None
    return dict(found)


def short_name(name: str) -> str:
    """A reference as `docker images` lists it (no docker.io/ or docker.io/library/ prefix)."""
    for prefix in ("docker.io/library/", "docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def local_image_ids() -> dict[str, str]:
    """Every local image `repository:tag` with its ID, from one `docker images` (no SDK import)."""
    from istiobuild.run import run

    listed = run(
        ["docker", "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}}\t{{.ID}}"],
        capture=True,
        what="list the local docker images",
    ).stdout
    return dict(line.split("\t", 1) for line in listed.splitlines() if "\t" in line)


def registry_problem(reason: str) -> str:
    """What a registry error from the daemon means: "not authorized", "not reachable", or "" (something else)."""
    lowered = reason.lower()
    if "unauthorized" in lowered or "denied" in lowered or "authentication" in lowered:
        return "not authorized"
    if "connection refused" in lowered or "no such host" in lowered or "dial tcp" in lowered or "timeout" in lowered:
        return "not reachable"
    return ""


REGISTRY_TIMEOUT = 60  # seconds the registry check waits for the daemon's answer


def config_secrets() -> tuple[str, ...]:
    """The credentials the docker config holds (passwords, their base64 `auth`, tokens): a registry may echo them
    in an error, and an error is printed."""
    import docker

    try:
        auths = docker.auth.load_config().auths
    except (docker.errors.DockerException, OSError, ValueError):
        return ()
    found = []
    for entry in auths.values():
        user, password = entry.get("username") or "", entry.get("password") or ""
        found += [password, entry.get("identitytoken") or "", entry.get("registrytoken") or ""]
        if password:
            found.append(base64.b64encode(f"{user}:{password}".encode()).decode())
    return tuple(v for v in found if v)


def registry_answer(reference: str) -> tuple[bool, str]:
    """Ask the registry of `reference` for its manifest through the daemon, with the docker config's credentials
    (as a push goes): (usable, what happened). A missing manifest is fine: the registry answered. This proves the
    registry reachable and readable with those credentials; only the push itself proves the right to write."""
    import docker
    import requests

    try:
        cli = docker.from_env(timeout=REGISTRY_TIMEOUT)
        cli.api.inspect_distribution(reference)
    except docker.errors.NotFound:
        return True, "it answers (no such image yet)"
    except docker.errors.APIError as exc:
        reason = Redactor(config_secrets()).text(str(exc.explanation or exc))
        return False, registry_problem(reason) or f"an unexpected answer (HTTP {exc.status_code}: {reason[:160]})"
    except requests.exceptions.RequestException:
        return False, f"not reachable (no answer through the daemon within {REGISTRY_TIMEOUT} s)"
    except docker.errors.DockerException as exc:  # a credential helper the docker config names is missing
        reason = Redactor(config_secrets()).text(str(exc).splitlines()[0][:200])
        return False, f"the docker config's credentials could not be read ({reason})"
    return True, "it answers"

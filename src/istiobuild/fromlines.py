"""What the Dockerfiles of a release name in their FROM lines: the images of istio's docker targets at a commit
(tools/istio-docker.mk, or 1.14+ tools/docker.yaml), FROM lines resolved with the build args istio's make or
docker-builder passes. `invoke sync-releases` derives `external_images` from it, the upstream tests check them."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from istiobuild.errors import DataError
from istiobuild.git import git, scratch_index
from istiobuild.imagedefs import load as load_definitions
from istiobuild.imagedefs import make_defaults
from istiobuild.imagedefs import select as select_definitions
from istiobuild.imagedefs import variables as definition_variables
from istiobuild.linetables import BASE_TARGET, ISTIO_BASE, base_target
from istiobuild.patches import PatchSource

# istio's DOCKER_RULE runs `docker build --build-arg BASE_DISTRIBUTION=$(VARIANT)`, DOCKER_BUILD_VARIANTS ?= default
MAKE_BUILD_ARGS = {"BASE_DISTRIBUTION": "default"}
_FROM_IMAGE = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
ARG = re.compile(r"^\s*ARG\s+(\w+)(?:=(\S*))?\s*$", re.IGNORECASE)
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


def substitute(text: str, args: Mapping[str, str]) -> str:
    """`${VAR}`, `$VAR` and `${VAR:-default}` from args (as the builder does for FROM lines); unknown ones stay."""

    def one(v: re.Match[str]) -> str:
        name = v.group(1) or v.group(3)
        if args.get(name):
            return args[name]
        return v.group(2) if v.group(2) is not None else (args[name] if name in args else v.group(0))

    return _VARIABLE.sub(one, text)


def make_build_args(makefile: str) -> dict[str, str]:
    """The BASE_DISTRIBUTION istio-docker.mk's DOCKER_RULE passes for its default variant: DOCKER_BUILD_VARIANTS
    (`default`), through `normalize-tag` where it exists (1.12+: `$(subst default,debug,$(1))`, so `debug`)."""
    variants = re.search(r"^DOCKER_BUILD_VARIANTS\s*\?=\s*(\S+)", makefile, re.M)
    variant = variants.group(1) if variants else MAKE_BUILD_ARGS["BASE_DISTRIBUTION"]
    normalize = re.search(r"^define normalize-tag\n\$\(subst (\w+),(\w+),\$\(1\)\)\nendef", makefile, re.M)
    if normalize:
        variant = variant.replace(normalize.group(1), normalize.group(2))
    return {"BASE_DISTRIBUTION": variant}


def definition_args(makefile: str) -> dict[str, str]:
    try:
        return {"BASE_DISTRIBUTION": "debug", **make_defaults(makefile)}
    except ValueError as exc:
        raise DataError(f"Makefile.core.mk: {exc}") from None


# -- what the Dockerfiles name -------------------------------------------------------------------


def named_images(dockerfile: str, build_args: Mapping[str, str] = MAKE_BUILD_ARGS) -> list[str]:
    """The images a Dockerfile's FROM lines name, in order: not its own build stages, not `scratch`;
    variables take the build args, else the defaults of the ARGs before the first FROM."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []
    for line in dockerfile.splitlines():
        arg = ARG.match(line)
        if arg and not stages:  # only the ARGs before the first FROM reach FROM lines
            args[arg.group(1)] = build_args.get(arg.group(1), arg.group(2) or "")
        match = _FROM_IMAGE.match(line)
        if not match:
            continue
        image = substitute(match.group(1), args)
        if image.lower() not in stages and image != "scratch" and image not in found:
            found.append(image)
        stages.add((match.group(2) or f"#{len(stages)}").lower())
    return found


def dockerfile_for(makefile: str, target: str) -> str:
    """The Dockerfile a docker.* target of tools/istio-docker.mk builds (its prerequisite naming one)."""
    suffix = "." + target.partition(".")[2]
    found = []
    for line in makefile.splitlines():
        head, colon, prerequisites = line.partition(":")
        words = prerequisites.replace("$$(suffix $$@)", suffix).replace("$(suffix $@)", suffix).split()
        if head.strip() == target and colon and words and "=" not in words[0]:  # not a target-specific variable
            found += [word for word in words if "Dockerfile" in word]
    if len(found) != 1:
        raise DataError(f"tools/istio-docker.mk: {target} names {len(found)} Dockerfiles ({', '.join(found)})")
    return found[0]


def repository(image: str) -> str:
    """An image reference without its digest and tag."""
    name = image.partition("@")[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.partition(':')[0]}" if head else last.partition(":")[0]


def scan(
    repo: Path,
    commit: str,
    patches: Sequence[PatchSource],
    targets: Sequence[str],
    definitions: str = "",
    bases: Sequence[str] = (),
) -> dict[str, tuple[str, ...]]:
    """Every external image the Dockerfiles of `targets` name at `commit` with `patches` applied (in a throwaway
    index; bare mirrors work), mapped to the targets naming it. Images the same make builds
    (docker.io/istio/<target> of a docker target, and the line's istio `bases`, e.g. gcr.io/istio-release/base from
    docker.base: under no other name) are not external. With `definitions` (1.14+: tools/docker.yaml) the
    Dockerfiles come from it and FROM lines resolve with docker-builder's build args."""
    bases = tuple(bases) or (ISTIO_BASE,)
    own = set(map(base_target, bases))  # docker.base, docker.distroless: built as `bases`
    built = {f"{hub}{t.partition('.')[2]}" for t in targets if t not in own for hub in ("docker.io/istio/", "istio/")}
    built |= set(bases)
    found: dict[str, list[str]] = {}
    with scratch_index(repo) as env:
        git(repo, "read-tree", commit, env=env)
        for patch in patches:
            git(repo, "apply", "--cached", "--whitespace=nowarn", "--", str(patch.path), env=env)
        for target, dockerfile, args in _dockerfiles(repo, env, targets, definitions):
            for image in named_images(git(repo, "show", f":{dockerfile}", env=env).stdout, args):
                if repository(image) not in built:
                    found.setdefault(image, []).append(target)
    return {image: tuple(names) for image, names in found.items()}


def _dockerfiles(
    repo: Path, env: Mapping[str, str], targets: Sequence[str], definitions: str
) -> list[tuple[str, str, Mapping[str, str]]]:
    """(target, its Dockerfile, the build args FROM lines see) from istio-docker.mk or the definitions file."""
    if not definitions:
        makefile = git(repo, "show", ":tools/istio-docker.mk", env=env).stdout
        return [(t, dockerfile_for(makefile, t), make_build_args(makefile)) for t in targets]
    args = definition_args(git(repo, "show", ":Makefile.core.mk", env=env).stdout)
    with tempfile.TemporaryDirectory(prefix="istiobuild-defs-") as tmp:
        path = Path(tmp) / "docker.yaml"
        path.write_text(git(repo, "show", f":{definitions}", env=env).stdout)
        defs = load_definitions(path, definition_variables(Path("/istio"), "amd64"))
    wanted = [t for t in targets if t != BASE_TARGET]
    try:
        chosen = select_definitions(defs, wanted, where=definitions)
    except ValueError as exc:
        raise DataError(f"{definitions}: {exc}") from None
    return [(t, d.dockerfile, args) for t, d in zip(wanted, chosen, strict=True)]

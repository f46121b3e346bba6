"""Base images: a per-arch map from the images upstream Dockerfiles name to the ones to use, the
resolution of every base image for the target platform (before any work, and again before `make
docker`), and the example's base images, imported from a busybox-static rootfs for the target.

The map comes from config (`base_images.<arch>`); applying it is a patch generated from the
pinned commit, so it is checked, applied atomically and recorded like the shipped series. Which
images the Dockerfiles name is release data (`external_images`), read from the real trees
(`scan`, checked by tests/test_upstream.py). docs/base-images.md explains it all.
"""

from __future__ import annotations

import dataclasses
import difflib
import io
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from istiobuild import dockerapi, fsutil
from istiobuild.arch import Arch
from istiobuild.errors import DataError, ToolError
from istiobuild.git import git, out, scratch_index
from istiobuild.imagedefs import load as load_definitions
from istiobuild.imagedefs import make_defaults
from istiobuild.imagedefs import select as select_definitions
from istiobuild.imagedefs import variables as definition_variables
from istiobuild.linetables import BASE_TARGET
from istiobuild.normalize import layer_ids, normalize
from istiobuild.patches import PatchSource
from istiobuild.release import Release
from istiobuild.run import run, which

_FROM = re.compile(r"^(FROM\s+)(\S+)(.*)$")
GENERATED_NAME = "generated/base-images.patch"
EXAMPLE_BASE = "istiobuild/example-base"
DOCS = "docs/base-images.md"
# istio's DOCKER_RULE runs `docker build --build-arg BASE_DISTRIBUTION=$(VARIANT)`, DOCKER_BUILD_VARIANTS ?= default
MAKE_BUILD_ARGS = {"BASE_DISTRIBUTION": "default"}
_FROM_IMAGE = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?\s*$", re.IGNORECASE)
_ARG = re.compile(r"^\s*ARG\s+(\w+)(?:=(\S*))?\s*$", re.IGNORECASE)
_VARIABLE = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")
BUSYBOX_APPLETS = (
    "sh", "ash", "cat", "chmod", "chown", "cp", "echo", "env", "false", "grep", "id", "ln", "ls", "mkdir",
    "mv", "rm", "sed", "sleep", "test", "[", "touch", "true", "uname", "which",
)  # fmt: skip


def _substitute(text: str, args: Mapping[str, str]) -> str:
    """`${VAR}`, `$VAR` and `${VAR:-default}` from args (as the builder does for FROM lines); unknown ones stay."""

    def one(v: re.Match[str]) -> str:
        name = v.group(1) or v.group(3)
        if args.get(name):
            return args[name]
        return v.group(2) if v.group(2) is not None else (args[name] if name in args else v.group(0))

    return _VARIABLE.sub(one, text)


def rewrite(text: str, mapping: Mapping[str, str], build_args: Mapping[str, str] | None = None) -> str:
    """Replace the image of every FROM line that the map names: as written, or (given the build args the
    builder passes) as it resolves, `${ISTIO_BASE_REGISTRY}/base:${BASE_VERSION}` for instance."""
    args: dict[str, str] = {}
    stages = False
    lines = []
    for original in text.splitlines(keepends=True):
        line = original
        arg = _ARG.match(line)
        if arg and not stages and build_args is not None:
            args[arg.group(1)] = build_args.get(arg.group(1), arg.group(2) or "")
        match = _FROM.match(line)
        if match:
            stages = True
            image = match.group(2)
            resolved = _substitute(image, args) if args else image
            use = mapping.get(image) or mapping.get(resolved)
            if use:
                line = f"{match.group(1)}{use}{match.group(3)}" + ("\n" if line.endswith("\n") else "")
        lines.append(line)
    return "".join(lines)


def patch_for(
    repo: Path, mapping: Mapping[str, str], after: Sequence[PatchSource] = (), *, definitions: bool = False
) -> PatchSource | None:
    """A git-format patch rewriting FROM lines, written into .git/istiobuild/generated/.

    It is made against HEAD with the `after` patches applied (in a throwaway index), so it applies
    on top of them. With `definitions` (images from tools/docker.yaml) FROM lines are resolved with the build
    args docker-builder passes (BASE_VERSION and ISTIO_BASE_REGISTRY from Makefile.core.mk).
    """
    if not mapping:
        return None
    chunks = []
    with tempfile.TemporaryDirectory(prefix="istiobuild-base-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(repo, "read-tree", "HEAD", env=env)
        for patch in after:
            git(repo, "apply", "--cached", "--whitespace=nowarn", str(patch.path), env=env)
        files = out(repo, "ls-files", "--", "*Dockerfile*", env=env).splitlines()
        args = _definition_args(git(repo, "show", ":Makefile.core.mk", env=env).stdout) if definitions else None
        for name in sorted(files):
            before = git(repo, "show", f":{name}", env=env).stdout
            after_text = rewrite(before, mapping, args)
            if after_text == before:
                continue
            diff = difflib.unified_diff(
                before.splitlines(keepends=True), after_text.splitlines(keepends=True), f"a/{name}", f"b/{name}"
            )
            chunks.append(f"diff --git a/{name} b/{name}\n" + "".join(diff))
    if not chunks:
        return None
    gitdir = Path(out(repo, "rev-parse", "--absolute-git-dir"))
    path = gitdir / "istiobuild" / GENERATED_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "Generated by istiobuild from the base_images setting.\n" + "".join(
        f"  {k} -> {v}\n" for k, v in sorted(mapping.items())
    )
    fsutil.write_atomic(path, header + "\n" + "".join(chunks))  # replaces a symlink there, never writes through it
    return PatchSource(name=GENERATED_NAME, path=path)


def make_build_args(makefile: str) -> dict[str, str]:
    """The BASE_DISTRIBUTION istio-docker.mk's DOCKER_RULE passes for its default variant: DOCKER_BUILD_VARIANTS
    (`default`), through `normalize-tag` where it exists (1.12+: `$(subst default,debug,$(1))`, so `debug`)."""
    variants = re.search(r"^DOCKER_BUILD_VARIANTS\s*\?=\s*(\S+)", makefile, re.M)
    variant = variants.group(1) if variants else MAKE_BUILD_ARGS["BASE_DISTRIBUTION"]
    normalize = re.search(r"^define normalize-tag\n\$\(subst (\w+),(\w+),\$\(1\)\)\nendef", makefile, re.M)
    if normalize and "normalize-tag" in makefile.partition("define normalize-tag")[2].partition("endef")[2]:
        variant = variant.replace(normalize.group(1), normalize.group(2))
    return {"BASE_DISTRIBUTION": variant}


def _definition_args(makefile: str) -> dict[str, str]:
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
        arg = _ARG.match(line)
        if arg and not stages:  # only the ARGs before the first FROM reach FROM lines
            args[arg.group(1)] = build_args.get(arg.group(1), arg.group(2) or "")
        match = _FROM_IMAGE.match(line)
        if not match:
            continue
        image = _substitute(match.group(1), args)
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
    (docker.io/istio/<target>, and the line's istio `bases`, e.g. gcr.io/istio-release/base from docker.base) are
    not external. With `definitions` (1.14+: tools/docker.yaml) the Dockerfiles come from it and FROM lines
    resolve with docker-builder's build args."""
    built = {f"{hub}{t.partition('.')[2]}" for t in (BASE_TARGET, *targets) for hub in ("docker.io/istio/", "istio/")}
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
    args = _definition_args(git(repo, "show", ":Makefile.core.mk", env=env).stdout)
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


def busybox_deb(arch: Arch, debs: Path, log: Path) -> Path:
    """busybox-static for the arch, from Debian (apt verifies it against the signed index)."""
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"busybox-static_*_{arch.goarch}.deb"))
    if found:
        return found[-1]
    if which("apt-get") is None:
        raise ToolError(
            f"no busybox-static .deb for {arch} in {debs}, and no apt-get to fetch one",
            hint=f"put busybox-static_<version>_{arch.goarch}.deb from Debian in {debs}",
        )
    result = run(["apt-get", "download", f"busybox-static:{arch.goarch}"], cwd=debs, log=log, check=False)
    found = sorted(debs.glob(f"busybox-static_*_{arch.goarch}.deb"))
    if result.returncode != 0 or not found:
        raise ToolError(
            f"apt-get could not download busybox-static:{arch.goarch}",
            hint=f"as root: dpkg --add-architecture {arch.goarch} && apt-get update (bash ci/setup.sh does this)",
            log=log,
        )
    return found[-1]


def busybox_rootfs(deb: Path) -> bytes:
    """A minimal root filesystem (tar): busybox, its applets, /etc/passwd and group, /tmp."""
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as deb_tar:
        member = next(m for m in deb_tar.getmembers() if m.name.lstrip("./") == "bin/busybox")
        fh = deb_tar.extractfile(member)
        assert fh is not None
        busybox = fh.read()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, body: bytes = b"", mode: int = 0o644, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.mode, info.type, info.linkname, info.mtime = mode, kind, link, 0
            info.size = len(body) if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(body) if kind == tarfile.REGTYPE else None)

        for d in ("bin", "etc", "home", "root", "usr", "usr/bin", "usr/lib", "usr/local", "usr/local/bin", "var"):
            add(d, mode=0o755, kind=tarfile.DIRTYPE)
        add("tmp", mode=0o1777, kind=tarfile.DIRTYPE)
        add("bin/busybox", busybox, mode=0o755)
        for applet in BUSYBOX_APPLETS:
            add(f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        add("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
    return out.getvalue()


# -- resolving them for the target ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Base:
    """A base image a build for one arch needs: the name FROM lines use upstream, the image used for it
    (after the base_images map), the targets whose Dockerfile names it, and the pinned digest ("" = none)."""

    name: str
    use: str
    targets: tuple[str, ...] = ()
    pin: str = ""

    def mapped(self, arch: Arch) -> str:
        return f" (base_images.{arch.value} maps {self.name} to it)" if self.use != self.name else ""

    def describe(self, arch: Arch) -> str:
        return f"base image {self.use}{self.mapped(arch)}"


def bases_for(release: Release, arch: Arch, mapping: Mapping[str, str]) -> tuple[Base, ...]:
    """The base images a build of `release` for `arch` needs. A release's pin holds for the name upstream uses;
    a mapped image is the user's (pin it with name@sha256:... in the map). Without release data: the map."""
    if not release.external_images:
        return tuple(Base(name=k, use=v) for k, v in sorted(mapping.items()))
    bases = []
    for image in release.external_images_for(arch):
        use = mapping.get(image.name, image.name)
        pin = image.digests.get(arch, "") if use == image.name else ""
        bases.append(Base(name=image.name, use=use, targets=image.targets, pin=pin))
    return tuple(bases)


class _Unusable(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def resolve(
    cli: Any, bases: Sequence[Base], arch: Arch, *, debs: Path, rootfs: Path, log: Path
) -> list[dict[str, Any]]:
    """Every base image exists locally for the arch (imported for the example, else pulled with the platform),
    has the target's os/arch and the pinned digest; returns what each resolved to. All problems are one error."""
    resolved, problems = [], []
    for base in bases:
        try:
            resolved.append(_resolve_one(cli, base, arch, debs=debs, rootfs=rootfs, log=log))
        except _Unusable as exc:
            problems.append(exc.message)
    if problems:
        many = f"{len(problems)} base images cannot be used for {arch.oci_platform}: " if len(problems) > 1 else ""
        raise dockerapi.DockerError(
            many + "; ".join(problems),
            hint=f"nothing was built. {DOCS} shows how to map, pull, load and pin base images per arch",
        )
    return resolved


def _resolve_one(cli: Any, base: Base, arch: Arch, *, debs: Path, rootfs: Path, log: Path) -> dict[str, Any]:
    how = "local"
    with dockerapi.name_lock(base.use):
        if not dockerapi.has_image(cli, base.use):
            how = _obtain(cli, base, arch, debs=debs, rootfs=rootfs, log=log)
        attrs = cli.images.get(base.use).attrs
    os_, have = attrs.get("Os", ""), attrs.get("Architecture", "")
    if (os_, have) != ("linux", arch.goarch):
        pulled = f" pulled for {arch.oci_platform}" if how == "pulled" else ""
        raise _Unusable(f"{base.describe(arch)}{pulled} is {os_}/{have}, not {arch.oci_platform}: {_fix(base, arch)}")
    digests = tuple(attrs.get("RepoDigests") or ())
    image_id = str(attrs.get("Id", ""))
    if base.pin and base.pin != image_id and not any(d.endswith(f"@{base.pin}") for d in digests):
        have_digests = ", ".join(digests) or "none"
        raise _Unusable(
            f"{base.describe(arch)} for {arch.oci_platform} is {image_id} (repo digests: {have_digests}),"
            f" but the release pins {base.pin}: docker load (or pull by its manifest digest with --platform "
            f"{arch.oci_platform}) the pinned image and tag it {base.use}, "
            f"or map {base.name} under base_images.{arch.value}"
        )
    return {
        "name": base.name,
        "image": base.use,
        "targets": list(base.targets),
        "id": image_id,
        "repo_digests": list(digests),
        "os": os_,
        "architecture": have,
        "variant": attrs.get("Variant", ""),
        "pinned": base.pin,
        "how": how,
    }


def _fix(base: Base, arch: Arch) -> str:
    if base.use != base.name:
        return f"point base_images.{arch.value} {base.name!r} at a {arch.oci_platform} image"
    return (
        f"map it under base_images.{arch.value} to a {arch.oci_platform} image, or replace it with "
        f"`docker pull --platform {arch.oci_platform} {base.use}`"
    )


def _obtain(cli: Any, base: Base, arch: Arch, *, debs: Path, rootfs: Path, log: Path) -> str:
    """Make a missing base image: the example's from a busybox rootfs, anything else pulled for the platform."""
    if base.use.startswith(EXAMPLE_BASE + ":"):
        tar = rootfs / f"busybox-{arch.goarch}.tar"
        fsutil.write_atomic(tar, busybox_rootfs(busybox_deb(arch, debs, log)))
        run(
            ["docker", "import", "--platform", arch.oci_platform, str(tar), base.use],
            log=log,
            what=f"docker import {base.use}",
        )
        # this daemon ignores --platform, and `docker import` stamps the time: the same rootfs, the same ID
        normalize(
            cli, base.use, arch=arch, epoch=0, labels={}, keep=layer_ids(cli, [base.use]), scratch=rootfs / "scratch"
        )
        return "imported"
    try:
        cli.images.pull(base.use, platform=arch.oci_platform)
    except Exception as exc:
        reason = str(getattr(exc, "explanation", "") or exc).strip().splitlines()
        fix = (
            f"point base_images.{arch.value} {base.name!r} at an image you have for {arch.oci_platform}"
            if base.use != base.name
            else f"docker pull --platform {arch.oci_platform} {base.use} (air-gapped: docker load it, or map it "
            f"under base_images.{arch.value})"
        )
        raise _Unusable(
            f"base image {base.use} for {arch.oci_platform} is not available{base.mapped(arch)} "
            f"({type(exc).__name__}: {reason[0][:200] if reason else 'no reason given'}): {fix}"
        ) from None
    return "pulled"


def write_record(path: Path, arch: Arch, resolved: Sequence[Mapping[str, Any]]) -> None:
    """<out>/base-images.json: every base image with what it resolved to (ID, repo digests, os/arch)."""
    fsutil.write_json(path, {"arch": arch.value, "platform": arch.oci_platform, "images": list(resolved)})

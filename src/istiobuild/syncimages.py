"""`external_images` derived by `invoke sync-releases`: for a release of a buildable line, the images the
Dockerfiles of its docker targets name in FROM lines (fromlines.scan of the real tree at the pin, after the
line's patch series), as docker-builder or istio-docker.mk would build them.

An entry that has them is confirmed; one that lacks them (a line just made buildable, a tag just added) gets
them as one `external_images = { ... }` line at the end of its table; nothing else in the file changes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from istiobuild import fromlines, patches
from istiobuild.arch import Arch
from istiobuild.errors import DataError
from istiobuild.git import git
from istiobuild.imagedefs import make_defaults
from istiobuild.release import Component, Release

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Images = Mapping[str, tuple[str, ...]]
_HEADER = re.compile(r"^\[")
_ARCHES = ((Arch.AARCH64, "4k"), (Arch.AARCH64, "64k"), (Arch.X86_64, "4k"))


def wanted(rel: Release) -> bool:
    """A release whose images istiobuild builds: a buildable line of a real release with docker targets."""
    return rel.buildable and not rel.example and bool(rel.docker_targets)


def derive(rel: Release, istio: Path) -> Images:
    """The external images of `rel`, the same for every target arch (else a DataError naming the difference)."""
    definitions = rel.mechanism.definitions if rel.mechanism else ""
    targets = (*rel.base_targets, *rel.docker_targets)
    bases = rel.istio_bases
    found: dict[str, Images] = {}
    scanned: dict[tuple[Path, ...], Images] = {}  # the same series (none, for most lines) is scanned once
    for arch, page in _ARCHES:
        series = patches.from_shipped(patches.select(rel, Component.ISTIO, arch, page))
        key = tuple(p.path for p in series)
        if key not in scanned:
            scanned[key] = fromlines.scan(istio, rel.pins[Component.ISTIO].commit, series, targets, definitions, bases)
        found[f"{arch.value}/{page}"] = scanned[key]
    first, *others = found.items()
    for where, images in others:
        if images != first[1]:
            raise DataError(f"release {rel.version}: the Dockerfiles name other base images for {where} than for "
                            f"{first[0]}", hint="give this release external_images by hand")  # fmt: skip
    return first[1]


def mine(rel: Release) -> Images:
    return {image.name: image.targets for image in rel.external_images}


def render(images: Images, base_version: str = "") -> str:
    """One TOML line, as the shipped files write it."""
    body = ", ".join(
        f"{json.dumps(name)} = {{ targets = [{', '.join(json.dumps(t) for t in targets)}] }}"
        for name, targets in images.items()
    )
    comment = f"   # Makefile.core.mk BASE_VERSION {base_version}" if base_version else ""
    return f"external_images = {{ {body} }}{comment}\n"


def insert(text: str, version: str, line: str) -> str:
    """`line` at the end of the `[release."<version>"]` table (before the blank lines and comments ending it)."""
    lines = text.splitlines(keepends=True)
    header = f"[release.{json.dumps(version)}]"
    start = next((n for n, text_line in enumerate(lines) if text_line.strip() == header), None)
    if start is None:
        raise DataError(f"no {header} table to add external_images to")
    end = next((n for n in range(start + 1, len(lines)) if _HEADER.match(lines[n])), len(lines))
    while end > start + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
        end -= 1
    if lines[end - 1] and not lines[end - 1].endswith("\n"):
        lines[end - 1] += "\n"
    return "".join(lines[:end]) + line + "".join(lines[end:])


def only_images_added(name: str, before: str, after: str, derived: Sequence[str]) -> None:
    """The line-based insert changed nothing but the derived releases' external_images (a table that ends in a
    multi-line string, say, would have taken the line into the string)."""
    old, new = tomllib.loads(before).get("release", {}), tomllib.loads(after).get("release", {})
    for version, table in new.items():
        was = old.get(version, {})
        expected = {**was, "external_images": table.get("external_images")} if version in derived else was
        if table != expected or (version in derived and "external_images" not in table):
            raise DataError(
                f"{name}: adding external_images to release {version} would change its table otherwise",
                hint="nothing was written; add the line at the end of its table by hand, then run the sync again",
            )


def base_version(rel: Release, istio: Path) -> str:
    """Makefile.core.mk's BASE_VERSION at the pin (the tag the base images carry), for the comment."""
    shown = git(istio, "show", f"{rel.pins[Component.ISTIO].commit}:Makefile.core.mk", check=False)
    try:
        return make_defaults(shown.stdout)["BASE_VERSION"] if shown.returncode == 0 else ""
    except ValueError:
        return ""

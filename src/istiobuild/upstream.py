"""Check the shipped patch series against real upstream repositories (`git apply --check`).

Mirrors is a directory holding `proxy`, `envoy` and `istio` git repositories (bare or not, e.g.
fetched copies of istio/proxy, istio/envoy, istio/istio). Only the trees and the blobs of patched
files are read, so mirrors lacking some large blobs still work.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

from istiobuild import patches as patchmod
from istiobuild.arch import Arch
from istiobuild.errors import IstiobuildError
from istiobuild.git import has_commit
from istiobuild.release import Component, Release


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    release: str
    arch: Arch
    page_size: str
    component: Component
    series: tuple[str, ...]
    patches: int
    ok: bool
    detail: str = ""


def mirror_repo(mirrors: Path, component: Component) -> Path:
    for candidate in (mirrors / component.value, mirrors / f"{component.value}.git"):
        if candidate.exists():
            return candidate
    return mirrors / component.value


def check_release(release: Release, mirrors: Path, arches: Iterable[Arch] = tuple(Arch)) -> list[Outcome]:
    outcomes = []
    variants = [(arch, page) for arch in arches for page in (("4k", "64k") if arch is Arch.AARCH64 else ("4k",))]
    for arch, page in variants:
        for comp in Component:
            selected = patchmod.select(release, comp, arch, page)
            repo = mirror_repo(mirrors, comp)
            commit = release.pins[comp].commit
            ok, detail = True, ""
            if not selected:
                detail = "no patches"  # nothing to check (1.22's envoy is in no mirror here: envoyproxy/envoy)
            elif not has_commit(repo, commit):
                ok, detail = False, f"{commit[:12]} is not in {repo}"
            else:
                try:
                    patchmod.check(repo, commit, patchmod.from_shipped(selected))
                except IstiobuildError as exc:
                    ok, detail = False, exc.message
            outcomes.append(
                Outcome(
                    release=release.version,
                    arch=arch,
                    page_size=page,
                    component=comp,
                    series=release.series[comp],
                    patches=len(selected),
                    ok=ok,
                    detail=detail,
                )
            )
    return outcomes


@dataclasses.dataclass(frozen=True, kw_only=True)
class DefaultsOutcome:
    """The release defaults against the real istio tree: the generated patch, its files, the archive's sources."""

    release: str
    files: tuple[str, ...]  # the files the generated patch changes (rewritten and regenerated)
    patch_bytes: int
    missing_sources: tuple[str, ...]  # archive sources the tree does not have at the pin
    unlisted: tuple[str, ...] = ()  # files the archive takes that name the upstream hub but are not in `files`


def check_defaults(release: Release, mirrors: Path, arch: Arch, scratch: Path, log: Path) -> DefaultsOutcome:
    """Make the release-defaults patch on the real istio tree (after the arch's series; regenerating what istioctl
    embeds with istio's own script where the line says so) and `git apply --check` it with the series, in a scratch
    repository borrowing the mirror's objects; check every source of the archive layout exists at the pin."""
    from istiobuild import defaults
    from istiobuild.git import git, out

    if release.defaults is None:
        raise IstiobuildError(f"release {release.version} has no [line.defaults]")
    mirror = mirror_repo(mirrors, Component.ISTIO)
    repo = scratch / "istio.git"
    git(None, "init", "--quiet", "--bare", "--", str(repo))
    objects = out(mirror, "rev-parse", "--path-format=absolute", "--git-path", "objects")
    (repo / "objects" / "info" / "alternates").write_text(f"{objects}\n")
    commit = release.pins[Component.ISTIO].commit
    git(repo, "update-ref", "--no-deref", "HEAD", commit)
    wanted = patchmod.from_shipped(patchmod.select(release, Component.ISTIO, arch))
    generated = defaults.patch_for(repo, release.defaults, "registry.example/istio", release.version, wanted, log)
    patchmod.check(repo, commit, [*wanted, generated])
    text = generated.path.read_text()
    changed = tuple(line.split(" b/", 1)[1] for line in text.splitlines() if line.startswith("diff --git "))
    spec = release.archive
    sources = spec.sources if spec else ()
    missing = tuple(s for s in sources if git(repo, "cat-file", "-e", f"{commit}:{s}", check=False).returncode)
    unlisted = _unlisted_defaults(repo, commit, release) if spec and not missing else ()
    return DefaultsOutcome(
        release=release.version, files=changed, patch_bytes=len(text), missing_sources=missing, unlisted=unlisted
    )


def _unlisted_defaults(repo: Path, commit: str, release: Release) -> tuple[str, ...]:
    """The files the archive takes from the tree with a `hub: <upstream hub>` line (or its JSON form) that
    [line.defaults] leaves out: the archive would ship them naming upstream's images."""
    from istiobuild.git import out

    spec, wanted = release.archive, release.defaults
    assert spec is not None and wanted is not None
    hub = re.escape(wanted.hub)
    pattern = rf"^\s*(hub: *[\"']?{hub}[\"']? *(#.*)?|\"hub\": *\"{hub}\" *,?)$"
    named = out(repo, "grep", "-l", "-E", "-e", pattern, commit, "--", *spec.sources, check=False).split()
    paths = {n.split(":", 1)[1] for n in named}
    return tuple(sorted(p for p in paths if spec.archive_paths(p) and p not in wanted.files))

"""Check the shipped patch series against real upstream repositories (`git apply --check`).

Mirrors is a directory holding `proxy`, `envoy` and `istio` git repositories (bare or not, e.g.
fetched copies of istio/proxy, istio/envoy, istio/istio). Only the trees and the blobs of patched
files are read, so mirrors lacking some large blobs still work.
"""

from __future__ import annotations

import dataclasses
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
            if not has_commit(repo, commit):
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

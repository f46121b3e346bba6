"""Applying patch series with real git: atomic, idempotent, recorded, arch-conditional."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from istiobuild import baseimages, build, patches, release, sources
from istiobuild.arch import Arch
from istiobuild.console import Console
from istiobuild.errors import DataError, PatchError
from istiobuild.git import worktree_tree
from istiobuild.plan import make_plan
from istiobuild.release import Component
from istiobuild.toolchain import get as get_toolchain

EXAMPLE = "example"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def checked_out(settings_for, example_upstream: Path):  # type: ignore[no-untyped-def]
    settings = settings_for(mirror=str(example_upstream))
    rel = release.get(EXAMPLE)
    for src in sources.sources(rel, settings):
        sources.checkout(settings, src, force=False, note=lambda _: None)
    return settings, rel


def pristine(repo: Path) -> bool:
    return worktree_tree(repo) == git(repo, "rev-parse", "HEAD^{tree}")


def series(rel: release.Release, comp: Component, arch: Arch) -> list[patches.PatchSource]:
    return patches.from_shipped(patches.select(rel, comp, arch))


def test_apply_is_recorded_and_idempotent(checked_out) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    envoy = settings.workdir / EXAMPLE / "envoy"
    wanted = series(rel, Component.ENVOY, Arch.AARCH64)
    assert wanted
    state, changed = patches.apply(envoy, wanted)
    assert changed and not pristine(envoy)
    assert [n for n, _ in state.patches] == [p.name for p in wanted]
    recorded = json.loads((envoy / ".git" / "istiobuild" / "patches.json").read_text())
    assert recorded["commit"] == rel.pins[Component.ENVOY].commit
    assert [p["sha256"] for p in recorded["patches"]] == [p.sha256() for p in wanted]
    genrule = envoy / "bazel" / "external" / "wee8.genrule_cmd"
    before = genrule.stat().st_mtime_ns
    again, changed = patches.apply(envoy, wanted)
    assert not changed and again == state
    assert genrule.stat().st_mtime_ns == before  # a no-op really touches nothing


def test_all_or_nothing_and_the_conflict_names_patch_file_and_hunk(checked_out, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    envoy = settings.workdir / EXAMPLE / "envoy"
    good = series(rel, Component.ENVOY, Arch.AARCH64)
    target = "bazel/external/wee8.genrule_cmd"
    lines = (envoy / target).read_text().splitlines()
    bad = tmp_path / "9999-bad.patch"
    bad.write_text(
        f"diff --git a/{target} b/{target}\n--- a/{target}\n+++ b/{target}\n"
        f"@@ -3,2 +3,2 @@\n-this line is not there\n+replacement\n {lines[3] if len(lines) > 3 else ''}\n"
    )
    with pytest.raises(PatchError) as err:
        patches.apply(envoy, [*good, patches.PatchSource(name="patches/envoy/test/9999-bad.patch", path=bad)])
    msg = err.value.message
    assert "patches/envoy/test/9999-bad.patch" in msg and target in msg and "@@ -3,2 +3,2 @@" in msg
    assert "no patch was applied" in err.value.hint
    assert pristine(envoy)  # the good patches before it were not applied either
    assert not (envoy / ".git" / "istiobuild" / "patches.json").exists()


def test_missing_file_conflict(checked_out, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, _ = checked_out
    envoy = settings.workdir / EXAMPLE / "envoy"
    bad = tmp_path / "missing.patch"
    bad.write_text("diff --git a/nope.txt b/nope.txt\n--- a/nope.txt\n+++ b/nope.txt\n@@ -1 +1 @@\n-a\n+b\n")
    with pytest.raises(PatchError, match="nope.txt does not exist in the checkout"):
        patches.apply(envoy, [patches.PatchSource(name="x.patch", path=bad)])


def test_arch_conditional_patches_follow_the_target(checked_out) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    istio = settings.workdir / EXAMPLE / "istio"
    arm = series(rel, Component.ISTIO, Arch.AARCH64)
    x86 = series(rel, Component.ISTIO, Arch.X86_64)
    assert len(x86) < len(arm)
    patches.apply(istio, arm)
    assert "aarch64-linux-gnu" in (istio / "pilot" / "docker" / "Dockerfile.proxyv2").read_text()
    state, changed = patches.apply(istio, x86)  # switching arch reverts the aarch64-only patches
    assert changed
    assert "aarch64-linux-gnu" not in (istio / "pilot" / "docker" / "Dockerfile.proxyv2").read_text()
    assert [n for n, _ in state.patches] == [p.name for p in x86]
    patches.apply(istio, [])
    assert pristine(istio)


def test_user_changes_are_never_patched_over(checked_out) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    proxy = settings.workdir / EXAMPLE / "proxy"
    wanted = series(rel, Component.PROXY, Arch.AARCH64)
    patches.apply(proxy, wanted)
    (proxy / "user.bazelrc").write_text("build --jobs=1\n")
    with pytest.raises(PatchError, match="local changes that istiobuild did not make"):
        patches.apply(proxy, [])
    assert (proxy / "user.bazelrc").exists()
    assert [n for n, _ in patches.read_state(proxy).patches] == [p.name for p in wanted]  # type: ignore[union-attr]


def test_patch_stage_checks_every_component_before_changing_any(checked_out) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    plan = make_plan(rel, Arch.AARCH64, get_toolchain("gcc"), settings, host=Arch.AARCH64)
    istio = settings.workdir / EXAMPLE / "istio"
    (istio / "scratch.txt").write_text("user file\n")
    with pytest.raises(PatchError, match="istio has local changes"):
        build.do_patch(
            build.Context(
                plan=plan, release=rel, settings=settings, toolchain=get_toolchain("gcc"), console=Console(tty=False)
            )
        )
    for comp in ("proxy", "envoy"):
        assert pristine(settings.workdir / EXAMPLE / comp)
    (istio / "scratch.txt").unlink()
    record = build.do_patch(
        build.Context(
            plan=plan, release=rel, settings=settings, toolchain=get_toolchain("gcc"), console=Console(tty=False)
        )
    )
    assert set(record) == {"proxy", "envoy", "istio"}
    saved = json.loads((settings.workdir / "example-aarch64" / "patches.json").read_text())
    assert saved == record


def test_base_image_map_is_a_generated_recorded_patch(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    mapping = {"gcr.io/distroless/cc:latest": "registry.local/cc:arm64"}
    settings = settings_for(mirror=str(example_upstream), base_images={"aarch64": mapping})
    rel = release.get(EXAMPLE)
    for src in sources.sources(rel, settings):
        sources.checkout(settings, src, force=False, note=lambda _: None)
    plan = make_plan(rel, Arch.AARCH64, get_toolchain("clang"), settings, host=Arch.AARCH64)
    record = build.do_patch(
        build.Context(
            plan=plan, release=rel, settings=settings, toolchain=get_toolchain("gcc"), console=Console(tty=False)
        )
    )
    assert record["istio"][-1]["name"] == baseimages.GENERATED_NAME  # type: ignore[index]
    dockerfile = (settings.workdir / EXAMPLE / "istio" / "pilot" / "docker" / "Dockerfile.proxyv2").read_text()
    assert "FROM registry.local/cc:arm64 as distroless" in dockerfile
    assert "gcr.io/distroless/cc:latest" not in dockerfile


def test_rewrite_only_touches_mapped_from_lines() -> None:
    text = "FROM a:1 as x\nRUN echo FROM a:1\nFROM b:2\n"
    assert baseimages.rewrite(text, {"a:1": "c:3"}) == "FROM c:3 as x\nRUN echo FROM a:1\nFROM b:2\n"


def test_series_file_validation(tmp_path: Path) -> None:
    d = tmp_path / "envoy" / "s"
    d.mkdir(parents=True)
    (d / "a.patch").write_text("")
    (d / "series").write_text("a.patch arch=sparc\n")
    with pytest.raises(DataError, match="bad condition 'arch=sparc'"):
        patches.load_series(Component.ENVOY, "s", root=tmp_path)
    (d / "series").write_text("# comment\n\nb.patch\n")
    with pytest.raises(DataError, match="b.patch does not exist"):
        patches.load_series(Component.ENVOY, "s", root=tmp_path)
    (d / "series").write_text("a.patch   arch=aarch64 page_size=64k  # only there\n")
    (p,) = patches.load_series(Component.ENVOY, "s", root=tmp_path)
    assert p.conditions == {"arch": "aarch64", "page_size": "64k"}
    assert p.applies({"arch": "aarch64", "page_size": "64k"}) and not p.applies({"arch": "aarch64", "page_size": "4k"})

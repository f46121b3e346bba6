"""Applying patch series with real git: atomic, idempotent, recorded, arch-conditional."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from istiobuild import baseimages, defaults, patches, release, sources
from istiobuild.arch import Arch
from istiobuild.console import Console
from istiobuild.errors import DataError, PatchError
from istiobuild.executor import Executor
from istiobuild.fsutil import write_json
from istiobuild.git import worktree_tree
from istiobuild.plan import make_plan
from istiobuild.release import Component
from istiobuild.steps import StageName
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


def run_patch_stage(settings, rel: release.Release) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The planned patch stage, performed as a build performs it; returns its record."""
    plan = make_plan(rel, Arch.AARCH64, get_toolchain("gcc"), settings, host=Arch.AARCH64)
    ex = Executor(settings=settings, release=rel, layout=plan.layout, console=Console(tty=False))
    ex.stage = plan.stage(StageName.PATCH)
    for step in ex.stage.steps:
        ex.step(step)
    return json.loads(plan.layout.record("patches").read_text())  # type: ignore[no-any-return]


def test_patch_stage_checks_every_component_before_changing_any(checked_out) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    istio = settings.workdir / EXAMPLE / "istio"
    (istio / "scratch.txt").write_text("user file\n")
    with pytest.raises(PatchError, match="istio has local changes"):
        run_patch_stage(settings, rel)
    for comp in ("proxy", "envoy"):
        assert pristine(settings.workdir / EXAMPLE / comp)
    (istio / "scratch.txt").unlink()
    record = run_patch_stage(settings, rel)
    assert set(record) == {"proxy", "envoy", "istio"}
    for comp in Component:
        state = patches.read_state(settings.workdir / EXAMPLE / comp.value)
        assert state is not None and record[comp.value] == [{"name": n, "sha256": h} for n, h in state.patches]


def test_base_image_map_is_a_generated_recorded_patch(settings_for, example_upstream: Path) -> None:  # type: ignore[no-untyped-def]
    mapping = {"gcr.io/distroless/cc:latest": "registry.local/cc:arm64"}
    settings = settings_for(mirror=str(example_upstream), base_images={"aarch64": mapping})
    rel = release.get(EXAMPLE)
    for src in sources.sources(rel, settings):
        sources.checkout(settings, src, force=False, note=lambda _: None)
    record = run_patch_stage(settings, rel)
    # the base images' patch, then the release defaults' (generated against the tree with the other one applied)
    assert [p["name"] for p in record["istio"][-2:]] == [baseimages.GENERATED_NAME, defaults.GENERATED_NAME]  # type: ignore[index]
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


# ---------------------------------------------------------------------------------------------
# worktree_tree is read-only; applying survives SIGKILL at any point


def snapshot(directory: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `directory`: kind, content hash or link target, mode, mtime."""
    seen: dict[str, tuple[object, ...]] = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            what: object = os.readlink(path)
        elif path.is_dir():
            what = "dir"
        else:
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        seen[str(path.relative_to(directory))] = (what, st.st_mode, st.st_mtime_ns, st.st_size)
    seen["."] = ("dir", directory.stat().st_mtime_ns)
    return seen


def expected_tree(repo: Path, wanted: list[patches.PatchSource], tmp: Path) -> str:
    """HEAD + `wanted`, computed independently with plain git in a throwaway index."""
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp / "expected-index")}
    subprocess.run(["git", "-C", str(repo), "read-tree", "HEAD"], check=True, env=env)
    for p in wanted:
        subprocess.run(["git", "-C", str(repo), "apply", "--cached", str(p.path)], check=True, env=env)
    return subprocess.run(
        ["git", "-C", str(repo), "write-tree"], check=True, env=env, capture_output=True, text=True
    ).stdout.strip()


def test_worktree_tree_leaves_the_repository_byte_for_byte_unchanged(checked_out, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    envoy = settings.workdir / EXAMPLE / "envoy"
    patches.apply(envoy, series(rel, Component.ENVOY, Arch.AARCH64))
    (envoy / "BUILD").write_text((envoy / "BUILD").read_text() + "# edited\n")
    (envoy / "new-dir").mkdir()
    (envoy / "new-dir" / "untracked.txt").write_text("brand new content nobody hashed yet\n")
    (envoy / "bazel-out").symlink_to(tmp_path)  # ignored (/bazel-*)
    before = snapshot(envoy / ".git")
    tree = worktree_tree(envoy)
    assert worktree_tree(envoy) == tree
    patches.pristine_or_ours(envoy)
    assert snapshot(envoy / ".git") == before
    # the same tree plain git computes by staging everything
    git(envoy, "add", "-A")
    assert git(envoy, "write-tree") == tree
    assert "bazel-out" not in git(envoy, "ls-files")


def test_check_writes_nothing_into_the_repository(checked_out) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    istio = settings.workdir / EXAMPLE / "istio"
    before = snapshot(istio / ".git")
    patches.check(istio, git(istio, "rev-parse", "HEAD"), series(rel, Component.ISTIO, Arch.AARCH64))
    assert snapshot(istio / ".git") == before


CHILD = """
import os, sys
from pathlib import Path
from istiobuild import patches

mode, repo, *rest = sys.argv[1:]
wanted = [patches.PatchSource(name=n, path=Path(p)) for n, p in zip(rest[::2], rest[1::2])]
if mode == "after-apply":
    patches._write_state = lambda *a, **k: os.kill(os.getpid(), 9)
else:  # "mid-apply": git applied only the first patch when the process died
    real = patches.git
    def partial(repo, *args, **kwargs):
        if args[0] == "apply" and "--cached" not in args:
            first = args[args.index("--") + 1]
            real(repo, "apply", "--", first)
            os.kill(os.getpid(), 9)
        return real(repo, *args, **kwargs)
    patches.git = partial
patches.apply(Path(repo), wanted)
"""


def killed_apply(mode: str, repo: Path, wanted: list[patches.PatchSource]) -> None:
    src = str(Path(patches.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-c", CHILD, mode, str(repo), *[x for p in wanted for x in (p.name, str(p.path))]]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr


def new_file_patch(tmp_path: Path) -> patches.PatchSource:
    path = tmp_path / "0000-add-file.patch"
    path.write_text(
        "diff --git a/added/dir/new.txt b/added/dir/new.txt\nnew file mode 100644\n--- /dev/null\n"
        "+++ b/added/dir/new.txt\n@@ -0,0 +1 @@\n+created by a patch\n"
    )
    return patches.PatchSource(name="patches/envoy/test/0000-add-file.patch", path=path)


def test_killed_after_git_apply_the_next_run_finishes(checked_out, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    envoy = settings.workdir / EXAMPLE / "envoy"
    wanted = series(rel, Component.ENVOY, Arch.AARCH64)
    killed_apply("after-apply", envoy, wanted)
    assert (envoy / ".git" / "istiobuild" / "journal.json").is_file()
    assert patches.read_state(envoy) is None
    assert patches.pristine_or_ours(envoy)[0]  # what the next apply() repairs is not "your changes"
    state, _ = patches.apply(envoy, wanted)
    assert worktree_tree(envoy) == expected_tree(envoy, wanted, tmp_path) == state.tree
    assert [n for n, _ in state.patches] == [p.name for p in wanted]
    assert not (envoy / ".git" / "istiobuild" / "journal.json").exists()
    assert len(list((envoy / ".git" / "istiobuild" / "applied").glob("*.patch"))) == len(wanted)
    assert patches.apply(envoy, wanted) == (state, False)


def test_killed_mid_apply_the_next_run_restores_and_applies(checked_out, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    envoy = settings.workdir / EXAMPLE / "envoy"
    wanted = [new_file_patch(tmp_path), *series(rel, Component.ENVOY, Arch.AARCH64)]
    killed_apply("mid-apply", envoy, wanted)
    assert (envoy / "added" / "dir" / "new.txt").is_file()  # only the first patch got applied
    state, changed = patches.apply(envoy, wanted)
    assert changed
    assert worktree_tree(envoy) == expected_tree(envoy, wanted, tmp_path) == state.tree
    # and when the next run wants fewer patches, the half-applied file goes away completely
    killed_apply("mid-apply", envoy, series(rel, Component.ENVOY, Arch.AARCH64))
    patches.apply(envoy, [])
    assert pristine(envoy)
    assert not (envoy / "added").exists()


def test_killed_mid_apply_then_edited_elsewhere_is_refused(checked_out, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    envoy = settings.workdir / EXAMPLE / "envoy"
    wanted = [new_file_patch(tmp_path), *series(rel, Component.ENVOY, Arch.AARCH64)]
    killed_apply("mid-apply", envoy, wanted)
    (envoy / "README.md").write_text("my notes\n")
    with pytest.raises(PatchError, match="interrupted patch stage left changes .*README.md"):
        patches.apply(envoy, wanted)
    assert (envoy / "README.md").read_text() == "my notes\n"
    assert not patches.pristine_or_ours(envoy)[0]


def test_a_state_file_of_the_wrong_shape_counts_as_absent(checked_out) -> None:  # type: ignore[no-untyped-def]
    settings, rel = checked_out
    proxy = settings.workdir / EXAMPLE / "proxy"
    state_file = proxy / ".git" / "istiobuild" / "patches.json"
    state_file.parent.mkdir(parents=True, exist_ok=True)
    for bad in ([1, 2], {"commit": 5, "patches": [], "tree": "x"}, {"commit": "a", "patches": "xy", "tree": "t"},
                {"commit": "a", "patches": [{"name": 1}], "tree": "t"}, "text"):  # fmt: skip
        write_json(state_file, bad)
        assert patches.read_state(proxy) is None
    state_file.write_bytes(b"\xff garbage")
    assert patches.read_state(proxy) is None
    (proxy / ".git" / "istiobuild" / "journal.json").write_text("{truncated")
    state, changed = patches.apply(proxy, series(rel, Component.PROXY, Arch.AARCH64))
    assert changed and patches.read_state(proxy) == state

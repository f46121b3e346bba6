"""Every line's `[line.mechanism]` against the real upstream files, at the first and last GA tag of each line
and on both sides of every `since` change.

Needs ISTIOBUILD_UPSTREAM_MIRRORS naming a directory with proxy, envoy and istio git repositories
(fetched copies of istio/proxy, istio/envoy, istio/istio); skipped otherwise (CI has no network).
What is read (docs/lines.md): istio Makefile.core.mk, bin/init.sh, tools/istio-docker.mk, tools/docker.yaml,
istio.deps, bin/build_ztunnel.sh; proxy Makefile.core.mk, .bazelrc, envoy.bazelrc, WORKSPACE; envoy
bazel/external/wee8.genrule_cmd where the envoy mirror has the pinned commit (the istio/envoy fork stops at 1.9).
`aarch64_work` is prose and is not checked.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from istiobuild import release, sync
from istiobuild.mechanism import Mechanism
from istiobuild.release import Component, Release

MIRRORS = os.environ.get("ISTIOBUILD_UPSTREAM_MIRRORS", "")

pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not MIRRORS or not Path(MIRRORS).is_dir(), reason="ISTIOBUILD_UPSTREAM_MIRRORS not set"),
]


def show(component: Component, commit: str, path: str) -> str | None:
    """The file at the commit in the mirror, None when it does not exist there."""
    repo = Path(MIRRORS) / component.value
    done = subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:{path}", "--"], capture_output=True, text=True, check=False
    )
    return done.stdout if done.returncode == 0 else None


def tags_to_check() -> dict[str, list[Release]]:
    """Per line with a mechanism: its first and last release, and the releases on both sides of each `since`."""
    by_line: dict[str, list[Release]] = {}
    for rel in release.matrix().values():
        if rel.mechanism is not None and not rel.example:
            by_line.setdefault(rel.line, []).append(rel)
    picked = {}
    for line, rels in by_line.items():
        changes = [i for i in range(1, len(rels)) if rels[i].mechanism != rels[i - 1].mechanism]
        wanted = sorted({0, len(rels) - 1, *changes, *(i - 1 for i in changes)})
        picked[line] = [rels[i] for i in wanted]  # the matrix is in version order
    return picked


def local_envoy(istio: str) -> str:
    mk, init = (show(Component.ISTIO, istio, p) or "" for p in ("Makefile.core.mk", "bin/init.sh"))
    if "USE_LOCAL_PROXY" in mk:
        return "use_local_proxy_init" if "USE_LOCAL_PROXY" in init else "use_local_proxy_make"
    dmk = show(Component.ISTIO, istio, "tools/istio-docker.mk") or ""
    return "istio_envoy_local" if "ifdef ISTIO_ENVOY_LOCAL" in dmk else "preplace"


def images(istio: str, definitions: str) -> str:
    if show(Component.ISTIO, istio, definitions or "tools/docker.yaml") is not None:
        return "docker_builder_yaml"
    dmk = show(Component.ISTIO, istio, "tools/istio-docker.mk") or ""
    return "docker_builder_make" if re.search(r"^DOCKER_V2_BUILDER \?= true", dmk, re.M) else "make_docker"


def go_arch(istio: str) -> str:
    """The GOARCH values of the build-linux rules (what goes to out/linux_<arch>/)."""
    mk = show(Component.ISTIO, istio, "Makefile.core.mk") or ""
    rules = [ln for ln in mk.splitlines() if re.search(r"gobuild\.sh \$\((ISTIO|TARGET)_OUT_LINUX\)/", ln)]
    found = {m[1] for ln in rules for m in [re.search(r"GOARCH=(\S+)", ln)] if m}
    if found == {"amd64"}:
        return "target_arch_build_linux_amd64"
    return "target_arch_agent_binaries" if found == {"amd64", "$(GOARCH_LOCAL)"} else "goarch_local"


def envoy_target(proxy: str) -> tuple[str, str]:
    """proxy Makefile.core.mk build_envoy's target (a BAZEL_TARGETS override or its recipe), and where bazel puts it."""
    mk = show(Component.PROXY, proxy, "Makefile.core.mk") or ""
    block = re.search(r"^build_envoy:.*?(?=\n\n|\Z)", mk, re.M | re.S)
    text = block[0] if block else ""
    found = re.search(r"BAZEL_TARGETS = (//\S+)", text) or re.search(r"(//\S+)\s*$", text, re.M)
    target = found[1] if found else "?"
    package, _, name = target.removeprefix("//").partition(":")
    return target, "/".join(p for p in ("bazel-bin", package, name) if p)


def allocator(rel: Release) -> str:
    """Forced by the proxy .bazelrc (`build` 1.8-1.20, `build:linux` 1.21); else envoy's default, with a gperftools
    option when envoy has the `tcmalloc=gperftools` define (envoy bazel/BUILD, or the proxy's copy of envoy.bazelrc)."""
    proxy, envoy = rel.pins[Component.PROXY].commit, rel.pins[Component.ENVOY].commit
    rc = show(Component.PROXY, proxy, ".bazelrc") or ""
    if re.search(r"^build(:linux)? --define[= ]tcmalloc=gperftools", rc, re.M):
        return "gperftools_forced"
    build = show(Component.ENVOY, envoy, "bazel/BUILD")
    envoy_rc = show(Component.PROXY, proxy, "envoy.bazelrc") or ""
    option = "tcmalloc=gperftools" in (build if build is not None else envoy_rc)
    return "tcmalloc_default_gperftools_optin" if option else "default"


def preplaced(istio: str, mech: Mechanism) -> set[str]:
    """What init.sh / build_ztunnel.sh would download: the kinds of file that must be pre-placed."""
    init = show(Component.ISTIO, istio, "bin/init.sh") or ""
    kinds = {
        "envoy": not mech.local_envoy.startswith("use_local_proxy"),
        "centos": 'download_envoy_if_necessary "${ISTIO_ENVOY_CENTOS_RELEASE_URL}"' in init,
        "wasm": "FILTER_WASM_URL=" in init,
        "compiled wasm": ".compiled.wasm" in init,
        "ztunnel": show(Component.ISTIO, istio, "bin/build_ztunnel.sh") is not None,
    }
    return {k for k, v in kinds.items() if v}


def kinds(mech: Mechanism) -> set[str]:
    found = set()
    for path in mech.preplace:
        name = path.rsplit("/", 1)[-1]
        kind = "compiled wasm" if name.endswith(".compiled.wasm") else "wasm" if name.endswith(".wasm") else ""
        kind = kind or ("centos" if "envoy-centos" in name else "ztunnel" if "ztunnel" in name else "envoy")
        found.add(kind)
    return found


def derived(rel: Release, mech: Mechanism) -> dict[str, object]:
    """The mechanism's checkable facts as the real files at the release's pins say."""
    istio, proxy = rel.pins[Component.ISTIO].commit, rel.pins[Component.PROXY].commit
    deps = show(Component.ISTIO, istio, "istio.deps") or ""
    target, output = envoy_target(proxy)
    workspace = show(Component.PROXY, proxy, "WORKSPACE") or ""
    return {
        "local_envoy": local_envoy(istio),
        "images": images(istio, mech.definitions),
        "arch": go_arch(istio),
        "envoy_target": target,
        "envoy_output": output,
        "ztunnel": "download_or_build" if '"ZTUNNEL_REPO_SHA"' in deps else "none",
        "allocator": allocator(rel),
        "llvm": "toolchains_llvm" if "llvm_register_toolchains" in workspace else "local",
        "preplace": preplaced(istio, mech),
        "version_package": version_package(istio),
        **rc_facts(proxy),
    }


def rc_facts(proxy: str) -> dict[str, object]:
    """Whether the proxy's copy of envoy.bazelrc names the compiler (`build:clang[-common] --action_env=CC=clang`),
    and the actions' PATH its .bazelrc fixes for linux builds."""
    envoy_rc = show(Component.PROXY, proxy, "envoy.bazelrc") or ""
    rc = show(Component.PROXY, proxy, ".bazelrc") or ""
    path = re.search(r"^build:linux --action_env=PATH=(\S+)", rc, re.M)
    mk = show(Component.PROXY, proxy, "Makefile.core.mk") or ""
    return {
        "rc_compiler": bool(re.search(r"^build:clang(-common)? .*--action_env=CC=clang", envoy_rc, re.M)),
        "rc_path": path[1] if path else "",
        "v8_prerun": bool(re.search(r"^prerun_v8_build:", mk, re.M)),  # build_envoy's own bazel query (1.12, 1.13)
    }


def version_package(istio: str) -> str:
    """The package of the -X keys common/scripts/report_build_info.sh prints (BUILDINFO)."""
    script = show(Component.ISTIO, istio, "common/scripts/report_build_info.sh") or ""
    found = re.search(r"(istio\.io/[a-z/]*version)\.buildVersion=", script)
    return found[1] if found else "none"


def wee8(rel: Release) -> bool | None:
    """Whether the pinned envoy builds wee8 with its gn/ninja genrule; None when the envoy mirror lacks the commit."""
    envoy = rel.pins[Component.ENVOY].commit
    if show(Component.ENVOY, envoy, "WORKSPACE") is None:
        return None
    return show(Component.ENVOY, envoy, "bazel/external/wee8.genrule_cmd") is not None


def test_every_line_mechanism_is_what_the_real_files_say() -> None:
    picked = tags_to_check()
    wrong: list[str] = []
    wee8_checked: list[str] = []
    wee8_skipped: list[str] = []
    for rels in picked.values():
        for rel in rels:
            mech = rel.mechanism
            assert mech is not None
            mine = {k: getattr(mech, k) for k in derived(rel, mech) if k != "preplace"} | {"preplace": kinds(mech)}
            theirs = derived(rel, mech)
            wrong += [f"{rel.version} {k}: data {mine[k]!r}, files {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]
            found = wee8(rel)
            (wee8_skipped if found is None else wee8_checked).append(rel.version)
            if found is not None and found != mech.wee8:
                wrong.append(f"{rel.version} wee8: data {mech.wee8}, envoy {found}")
    confirmed = sum(1 for rels in picked.values() if not any(w.split()[0] in {r.version for r in rels} for w in wrong))
    print(
        f"{confirmed} of {len(picked)} lines confirmed ({sum(map(len, picked.values()))} tags); wee8 checked at "
        f"{len(wee8_checked)} tags, skipped at {len(wee8_skipped)} (the envoy mirror lacks their envoy commit)"
    )
    assert not wrong, "\n".join(wrong)
    assert len(picked) == 25 and wee8_checked


@pytest.mark.parametrize("line", ["1.7", "1.20"])
def test_sync_inserts_around_the_mechanism_table(line: str, tmp_path: Path) -> None:
    """Take the first and last release out of a shipped file: sync puts them back, byte for byte."""
    shipped = release.matrix()
    (tmp_path / f"{line}.toml").write_text((Path(__file__).parent.parent / "releases" / f"{line}.toml").read_text())
    original = (tmp_path / f"{line}.toml").read_text()
    blocks = re.split(r'(?m)^(?=\[release\.")', original)
    (tmp_path / f"{line}.toml").write_text(blocks[0] + "".join(blocks[2:-1]).rstrip("\n") + "\n")
    assert sync.command(MIRRORS, check=False, line=line, directory=tmp_path)
    assert (tmp_path / f"{line}.toml").read_text() == original
    loaded = release.load_file(tmp_path / f"{line}.toml")
    assert all(r.mechanism == shipped[v].mechanism for v, r in loaded.items())

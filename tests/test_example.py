"""The example release: deterministic miniature repositories, their pins, and their patch series.

Real git throughout, on throwaway directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from istiobuild import example

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
TOML = REPO / "releases" / "example.toml"
PATCHES = REPO / "patches"
ARCHES = ("aarch64", "x86_64")


def clean_env(tmp: Path) -> dict[str, str]:
    """An environment in which git reads no user config (independent of example.git_env)."""
    home = tmp / "git-home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, LC_ALL="C")
    env.pop("XDG_CONFIG_HOME", None)
    return env


def git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def pins(name: str = "example") -> dict[str, dict[str, str]]:
    data = tomllib.loads((TOML.parent / f"{name}.toml").read_text(encoding="utf-8"))
    release: dict[str, dict[str, str]] = data["release"][name]
    return {name: release[name] for name in ("envoy", "proxy", "istio")}


def parse_series(directory: Path) -> list[tuple[str, dict[str, str]]]:
    """`name key=value ...` lines; comments and blank lines ignored."""
    entries = []
    for raw in (directory / "series").read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, *conditions = line.split()
        entries.append((name, dict(c.split("=", 1) for c in conditions)))
    return entries


def selected(component: str, arch: str, page_size: str = "4k") -> list[Path]:
    directory = PATCHES / component / "example"
    facts = {"arch": arch, "page_size": page_size}
    return [
        directory / name
        for name, conditions in parse_series(directory)
        if all(facts.get(key) == value for key, value in conditions.items())
    ]


def pinned_checkout(source: Path, commit: str, dest: Path, env: dict[str, str]) -> Path:
    """A fresh repository holding only `commit`, fetched by SHA (it is not the tip)."""
    git("init", "--quiet", str(dest), env=env)
    git("fetch", "--quiet", "--depth=1", source.as_uri(), commit, cwd=dest, env=env)
    git("checkout", "--quiet", "--detach", "FETCH_HEAD", cwd=dest, env=env)
    assert git("rev-parse", "HEAD", cwd=dest, env=env) == commit
    return dest


def apply_series(checkout: Path, component: str, arch: str, env: dict[str, str], page_size: str = "4k") -> None:
    for patch in selected(component, arch, page_size):
        git("apply", "--check", str(patch), cwd=checkout, env=env)
        git("apply", str(patch), cwd=checkout, env=env)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, example.ExampleRepo]:
    return example.generate(tmp_path_factory.mktemp("example") / "repos")


# -- determinism and pins ------------------------------------------------------------------------


def test_generation_is_deterministic_and_matches_the_toml(
    generated: dict[str, example.ExampleRepo], tmp_path: Path
) -> None:
    again = example.generate(tmp_path / "other")
    assert list(generated) == list(again) == ["envoy", "proxy", "istio", "ztunnel", "proxy-next", "istio-next"]
    for name, repo in generated.items():
        other = again[name]
        assert (repo.commit, repo.head, repo.tag, repo.sha256) == (
            other.commit,
            other.head,
            other.tag,
            other.sha256,
        )
        assert repo.path != other.path
    toml = pins()
    for name in ("proxy", "istio"):
        assert toml[name] == {"tag": "0.1.0", "commit": generated[name].commit}
    # example-next: the same envoy, proxy-next (proxy with the 1.25+ bazel rc files), istio-next (istio with the
    # 1.18+ mechanisms on top), which pins proxy-next
    nxt = pins("example-next")
    assert nxt["istio"] == {"tag": "0.1.0", "commit": generated["istio-next"].commit}
    assert nxt["proxy"] == {"tag": "0.1.0", "commit": generated["proxy-next"].commit}
    # istio-next pins the ztunnel commit in istio.deps (ZTUNNEL_REPO_SHA), as 1.18+ pins istio/ztunnel
    nxt_repo = generated["istio-next"]
    deps = json.loads(
        git("--git-dir", str(nxt_repo.path / ".git"), "show", f"{nxt_repo.commit}:istio.deps", env=clean_env(tmp_path))
    )
    shas = {e["name"]: e["lastStableSHA"] for e in deps}
    assert (shas["ZTUNNEL_REPO_SHA"], shas["PROXY_REPO_SHA"]) == (generated["ztunnel"].commit, nxt["proxy"]["commit"])
    assert nxt["envoy"] == toml["envoy"]
    assert toml["envoy"] == {
        "repo": "example/envoy",
        "commit": generated["envoy"].commit,
        "sha256": generated["envoy"].sha256,
    }


def test_caller_environment_and_config_do_not_matter(
    generated: dict[str, example.ExampleRepo], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Someone Else\n\temail = else@example.org\n"
        "[core]\n\tautocrlf = true\n\tfileMode = false\n"
        "[init]\n\tdefaultBranch = trunk\n\ttemplateDir = /nonexistent\n"
        "[commit]\n\tgpgSign = true\n[tag]\n\tgpgSign = true\n[tar]\n\tumask = 077\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name, value in {
        "GIT_DIR": str(tmp_path / "nowhere"),
        "GIT_WORK_TREE": str(tmp_path),
        "GIT_AUTHOR_NAME": "Intruder",
        "GIT_AUTHOR_DATE": "2001-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2001-01-01T00:00:00Z",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.autocrlf",
        "GIT_CONFIG_VALUE_0": "true",
        "GIT_TEMPLATE_DIR": str(tmp_path / "templates"),
        "TZ": "Pacific/Kiritimati",
    }.items():
        monkeypatch.setenv(name, value)
    old_umask = os.umask(0o077)
    try:
        again = example.generate(tmp_path / "repos")
    finally:
        os.umask(old_umask)
    assert {n: (r.commit, r.head, r.sha256) for n, r in again.items()} == {
        n: (r.commit, r.head, r.sha256) for n, r in generated.items()
    }


def test_tags_peel_to_the_pinned_commits(generated: dict[str, example.ExampleRepo], tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    nxt = pins("example-next")
    toml = {
        **pins(),
        "istio-next": nxt["istio"],
        "proxy-next": nxt["proxy"],
        "ztunnel": {"commit": generated["ztunnel"].commit},
    }
    for name, repo in generated.items():
        gitdir = str(repo.path / ".git")
        assert git("--git-dir", gitdir, "rev-parse", "HEAD", env=env) == repo.head
        assert git("--git-dir", gitdir, "rev-parse", "HEAD^", env=env) == repo.commit
        assert repo.commit == toml[name]["commit"]
        assert repo.head != repo.commit
        assert git("--git-dir", gitdir, "symbolic-ref", "HEAD", env=env) == "refs/heads/main"
        tags = git("--git-dir", gitdir, "tag", "--list", env=env).split()
        if name in ("envoy", "ztunnel"):
            assert tags == []  # pinned by SHA only, like the real proxy pins envoy and istio.deps ztunnel
            continue
        assert tags == [toml[name]["tag"]] == ["0.1.0"]
        assert git("--git-dir", gitdir, "cat-file", "-t", "refs/tags/0.1.0", env=env) == "tag"
        peeled = git("--git-dir", gitdir, "rev-parse", "refs/tags/0.1.0^{commit}", env=env)
        assert peeled == toml[name]["commit"]


def test_source_date_epoch_is_the_istio_commit_time(generated: dict[str, example.ExampleRepo], tmp_path: Path) -> None:
    from istiobuild import release

    istio = generated["istio"]
    found = git(
        "--git-dir", str(istio.path / ".git"), "show", "-s", "--format=%ct", istio.commit, env=clean_env(tmp_path)
    )
    assert found == str(release.get("example").source_date_epoch)


def test_proxy_pins_envoy_and_istio_pins_proxy(generated: dict[str, example.ExampleRepo], tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    toml = pins()
    envoy_git = str(generated["envoy"].path / ".git")
    proxy_git = str(generated["proxy"].path / ".git")
    istio_git = str(generated["istio"].path / ".git")

    workspace = git("--git-dir", proxy_git, "show", f"{toml['proxy']['commit']}:WORKSPACE", env=env)
    assert re.findall(r'^ENVOY_SHA = "([0-9a-f]{40})"$', workspace, re.M) == [toml["envoy"]["commit"]]
    assert re.findall(r'^ENVOY_SHA256 = "([0-9a-f]{64})"$', workspace, re.M) == [toml["envoy"]["sha256"]]
    assert re.findall(r'^ENVOY_PROJECT = "(.*)"$', workspace, re.M) == ["example"]
    assert "--override_repository=envoy=/PATH/TO/ENVOY" in workspace

    # The sha256 is that of the git archive tarball, computed here independently.
    commit = toml["envoy"]["commit"]
    tarball = subprocess.run(
        ["git", "--git-dir", envoy_git, "archive", "--format=tar", f"--prefix=envoy-{commit}/", commit],
        env=env,
        capture_output=True,
        check=True,
    ).stdout
    assert hashlib.sha256(tarball).hexdigest() == toml["envoy"]["sha256"]

    deps = json.loads(git("--git-dir", istio_git, "show", f"{toml['istio']['commit']}:istio.deps", env=env))
    assert [d["lastStableSHA"] for d in deps if d["name"] == "PROXY_REPO_SHA"] == [toml["proxy"]["commit"]]

    # The next commits pin the next tips, so building a tip by mistake is visible.
    tip_workspace = git("--git-dir", proxy_git, "show", "HEAD:WORKSPACE", env=env)
    assert f'ENVOY_SHA = "{generated["envoy"].head}"' in tip_workspace


def test_template_shapes_at_the_pins(generated: dict[str, example.ExampleRepo], tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    toml = tomllib.loads(TOML.read_text(encoding="utf-8"))["line"]

    def show(name: str, path: str) -> str:
        repo = generated[name]
        return git("--git-dir", str(repo.path / ".git"), "show", f"{repo.commit}:{path}", env=env)

    assert show("proxy", ".bazelversion") == toml["bazel_version"] == show("envoy", ".bazelversion")
    assert f"go {toml['go']}" in show("istio", "go.mod").splitlines()
    assert f'#define WEE8_VERSION "{toml["wee8"]}"' in show("envoy", "third_party/wee8/include/wee8.h")
    assert "import %workspace%/envoy.bazelrc" in show("proxy", ".bazelrc")
    assert show("proxy", "envoy.bazelrc") == show("envoy", ".bazelrc")
    assert toml["envoy_target"] in show("proxy", "Makefile.core.mk")
    assert "../proxy/" + toml["envoy_output"] in show("istio", "Makefile.core.mk")
    docker_mk = show("istio", "tools/istio-docker.mk")
    targets = re.search(r"^DOCKER_TARGETS \?= (.*)$", docker_mk, re.M)
    assert targets is not None
    assert targets.group(1).split() == toml["docker_targets"]
    assert 'echo "ERROR: wee8 is currently supported only on Linux-x86_64 and macOS-x86_64."' in show(
        "envoy", "bazel/external/wee8.genrule_cmd"
    )
    assert "@" + "VERSION@" not in show("envoy", "source/exe/main.cc")
    assert '"0.1.0"' in show("istio", "pilot/cmd/pilot-agent/main.go")
    # bazel builds offline: Bazel's own tools load @rules_cc and @rules_java, declared by envoy
    repositories = show("envoy", "bazel/repositories.bzl")
    assert 'name = "rules_cc"' in repositories and 'name = "rules_java"' in repositories
    # envoy --version shows the proxy's commit: workspace status, stamped release builds
    bazelrc = show("proxy", ".bazelrc").splitlines()
    assert "build --workspace_status_command=bazel/bazel_get_workspace_status" in bazelrc
    assert "build:release --stamp" in bazelrc
    assert "linkstamp" in show("envoy", "source/common/version/BUILD")
    # build outputs are ignored, so a built checkout can be patched again
    assert "/bazel-*" in show("proxy", ".gitignore").splitlines()
    assert "/out/" in show("istio", ".gitignore").splitlines()


def test_file_modes_are_explicit(generated: dict[str, example.ExampleRepo], tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    modes = {}
    for name, repo in generated.items():
        listing = git("--git-dir", str(repo.path / ".git"), "ls-tree", "-r", repo.commit, env=env)
        for line in listing.splitlines():
            meta, path = line.split("\t", 1)
            modes[f"{name}/{path}"] = meta.split()[0]
    executables = {p for p, m in modes.items() if m == "100755"}
    assert executables == {
        "envoy/third_party/wee8/buildtools/linux64/gn",
        "envoy/third_party/wee8/third_party/depot_tools/ninja",
        "istio/bin/init.sh",
        "istio/common/scripts/gobuild.sh",
        "istio/operator/scripts/run_update_charts.sh",
        "proxy/bazel/bazel_get_workspace_status",
        "proxy-next/bazel/bazel_get_workspace_status",  # proxy-next keeps proxy's modes
        # istio-next keeps istio's modes and adds its own scripts
        "istio-next/bin/init.sh",
        "istio-next/common/scripts/gobuild.sh",
        "istio-next/operator/scripts/run_update_charts.sh",
        "istio-next/bin/build_ztunnel.sh",
        "istio-next/tools/docker-copy.sh",
        "istio-next/tools/docker",
        "istio-next/samples/httpbin/cleanup-httpbin.sh",  # an archive keeps its 0755
    }
    assert set(modes.values()) == {"100644", "100755"}


# -- patch series --------------------------------------------------------------------------------


@pytest.mark.parametrize("component", ["envoy", "proxy", "istio"])
def test_series_lists_every_patch_with_a_header(component: str) -> None:
    directory = PATCHES / component / "example"
    listed = [name for name, _ in parse_series(directory)]
    assert sorted(listed) == sorted(p.name for p in directory.glob("*.patch"))
    assert listed == sorted(listed)
    for name, conditions in parse_series(directory):
        assert set(conditions) <= {"arch", "page_size"}
        text = (directory / name).read_text(encoding="utf-8")
        header, _, body = text.partition("\ndiff --git a/")
        assert header.strip(), f"{name}: no header before the first diff"
        assert body, f"{name}: no diff --git"


@pytest.mark.parametrize("page_size", ["4k", "64k"])
@pytest.mark.parametrize("arch", ARCHES)
@pytest.mark.parametrize("component", ["envoy", "proxy", "istio"])
def test_series_applies_in_order_at_the_pin(
    generated: dict[str, example.ExampleRepo], tmp_path: Path, component: str, arch: str, page_size: str
) -> None:
    env = clean_env(tmp_path)
    commit = pins()[component]["commit"]
    checkout = pinned_checkout(generated[component].path, commit, tmp_path / component, env)
    apply_series(checkout, component, arch, env, page_size)
    if arch == "aarch64":
        assert selected(component, arch, page_size), "every component has aarch64 patches"
    changed = git("status", "--porcelain", cwd=checkout, env=env)
    assert bool(changed) == bool(selected(component, arch, page_size))


def test_64k_pages_add_the_linker_flag_to_wee8(generated: dict[str, example.ExampleRepo], tmp_path: Path) -> None:
    """envoy 0004 (arch=aarch64 page_size=64k): every binary linking wee8 is linked for 64K pages."""
    env = clean_env(tmp_path)
    commit = pins()["envoy"]["commit"]
    flag = '"-Wl,-z,max-page-size=0x10000"'
    for page_size in ("4k", "64k"):
        checkout = pinned_checkout(generated["envoy"].path, commit, tmp_path / page_size, env)
        apply_series(checkout, "envoy", "aarch64", env, page_size)
        build = (checkout / "bazel" / "external" / "wee8.BUILD").read_text(encoding="utf-8")
        assert (f"linkopts = [{flag}]" in build) == (page_size == "64k")
    assert [p.name for p in selected("envoy", "x86_64", "64k")] == []


def test_workspace_status_names_the_proxy_commit(generated: dict[str, example.ExampleRepo], tmp_path: Path) -> None:
    """What bazel --workspace_status_command sees, before and after the proxy series."""
    env = clean_env(tmp_path)
    commit = pins()["proxy"]["commit"]
    checkout = pinned_checkout(generated["proxy"].path, commit, tmp_path / "proxy", env)

    def status() -> list[str]:
        script = checkout / "bazel" / "bazel_get_workspace_status"
        proc = subprocess.run([str(script)], cwd=checkout, env=env, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.splitlines()

    assert status() == [f"BUILD_SCM_REVISION {commit}", "BUILD_SCM_STATUS Clean"]
    apply_series(checkout, "proxy", "aarch64", env)
    assert status() == [f"BUILD_SCM_REVISION {commit}", "BUILD_SCM_STATUS Modified"]


# -- the wee8 genrule, before and after the envoy series ------------------------------------------

_BAZEL_VARIABLE = re.compile(r"\$(\$|\((rootpath|execpath|location) [^)]*\)|@)")


def _genrule_sandbox(tmp: Path, envoy: Path, *, tools: dict[str, str]) -> tuple[Path, Path]:
    """An execroot with the wee8 sources and a bin dir holding only the named tools."""
    execroot = tmp / "execroot"
    shutil.copytree(envoy / "third_party" / "wee8", execroot / "external" / "v8" / "wee8", symlinks=True)
    (execroot / "bazel-out").mkdir()
    bindir = tmp / "bin"
    bindir.mkdir()
    for name in ("dirname", "rm", "mv", "mkdir"):
        found = shutil.which(name)
        assert found is not None
        (bindir / name).symlink_to(found)
    for name, body in tools.items():
        (bindir / name).write_text(f"#!{shutil.which('sh')}\n{body}\n", encoding="utf-8")
        (bindir / name).chmod(0o755)
    return execroot, bindir


_FAKE_UNAME = 'if [ "$1" = -m ]; then echo "$FAKE_MACHINE"; else echo Linux; fi'
_FAKE_GN = 'echo "gn $*" >> "$LOG"'
_FAKE_NINJA = 'echo "ninja $*" >> "$LOG"; mkdir -p out/wee8/obj; : > out/wee8/obj/libwee8.a'


def run_genrule(
    script: str,
    tmp: Path,
    envoy: Path,
    machine: str,
    *,
    tools: dict[str, str],
    bundled: bool = True,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run a wee8.genrule_cmd as Bazel would, on a pretend host. Returns (process, gn/ninja log)."""
    # Bazel expands $(rootpath ...), $(execpath ...) and $$; any other $ would be an error.
    assert _BAZEL_VARIABLE.sub("", script).count("$") == 0
    execroot, bindir = _genrule_sandbox(tmp, envoy, tools={"uname": _FAKE_UNAME, **tools})
    if not bundled:
        shutil.rmtree(execroot / "external" / "v8" / "wee8" / "buildtools")
        shutil.rmtree(execroot / "external" / "v8" / "wee8" / "third_party")
    command = (
        script.replace("$(rootpath wee8/BUILD.gn)", "external/v8/wee8/BUILD.gn")
        .replace("$(execpath libwee8.a)", "bazel-out/libwee8.a")
        .replace("$$", "$")
    )
    log = tmp / "tools.log"
    env = {"PATH": str(bindir), "FAKE_MACHINE": machine, "LOG": str(log), **(extra_env or {})}
    bash = shutil.which("bash")
    assert bash is not None
    proc = subprocess.run([bash, "-c", command], cwd=execroot, env=env, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        assert (execroot / "bazel-out" / "libwee8.a").is_file()
    return proc, log.read_text(encoding="utf-8") if log.exists() else ""


@pytest.fixture(scope="module")
def genrule_scripts(
    generated: dict[str, example.ExampleRepo], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("genrule")
    env = clean_env(tmp)
    commit = pins()["envoy"]["commit"]
    checkout = pinned_checkout(generated["envoy"].path, commit, tmp / "envoy", env)
    path = checkout / "bazel" / "external" / "wee8.genrule_cmd"
    scripts = {"upstream": path.read_text(encoding="utf-8")}
    apply_series(checkout, "envoy", "aarch64", env)
    scripts["aarch64"] = path.read_text(encoding="utf-8")
    return scripts


def test_upstream_genrule_refuses_aarch64(
    generated: dict[str, example.ExampleRepo], genrule_scripts: dict[str, str], tmp_path: Path
) -> None:
    tools = {"gn": _FAKE_GN, "ninja": _FAKE_NINJA}
    proc, log = run_genrule(genrule_scripts["upstream"], tmp_path, generated["envoy"].path, "aarch64", tools=tools)
    assert proc.returncode == 1
    assert "ERROR: wee8 is currently supported only on Linux-x86_64 and macOS-x86_64." in proc.stdout
    assert log == ""


def test_upstream_genrule_uses_the_bundled_tools_on_x86_64(
    generated: dict[str, example.ExampleRepo], genrule_scripts: dict[str, str], tmp_path: Path
) -> None:
    tools = {"gn": _FAKE_GN, "ninja": _FAKE_NINJA}
    proc, log = run_genrule(genrule_scripts["upstream"], tmp_path, generated["envoy"].path, "x86_64", tools=tools)
    assert proc.returncode == 0, proc.stderr
    gn, ninja = log.splitlines()
    assert gn.startswith("gn gen out/wee8 --args=") and "is_debug=false" in gn
    assert "target_cpu" not in gn
    assert ninja == "ninja -C out/wee8 wee8"


def test_patched_genrule_builds_arm64_with_host_tools(
    generated: dict[str, example.ExampleRepo], genrule_scripts: dict[str, str], tmp_path: Path
) -> None:
    tools = {"gn": _FAKE_GN, "ninja": _FAKE_NINJA}
    # No bundled tools at all: only the host's gn / ninja (on PATH) can be used.
    proc, log = run_genrule(
        genrule_scripts["aarch64"], tmp_path, generated["envoy"].path, "aarch64", tools=tools, bundled=False
    )
    assert proc.returncode == 0, proc.stderr
    gn, ninja = log.splitlines()
    assert gn.startswith("gn gen out/wee8 --args=") and 'target_cpu="arm64"' in gn
    assert ninja == "ninja -C out/wee8 wee8"


def test_patched_genrule_prefers_gn_and_ninja_from_the_environment(
    generated: dict[str, example.ExampleRepo], genrule_scripts: dict[str, str], tmp_path: Path
) -> None:
    tools = {
        "my-gn": 'echo "my-gn $*" >> "$LOG"',
        "my-ninja": _FAKE_NINJA.replace('"ninja ', '"my-ninja '),
    }
    proc, log = run_genrule(
        genrule_scripts["aarch64"],
        tmp_path,
        generated["envoy"].path,
        "aarch64",
        tools=tools,
        bundled=False,
        extra_env={"GN": str(tmp_path / "bin" / "my-gn"), "NINJA": str(tmp_path / "bin" / "my-ninja")},
    )
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in log.splitlines()] == ["my-gn", "my-ninja"]


def test_patched_genrule_explains_missing_tools(
    generated: dict[str, example.ExampleRepo], genrule_scripts: dict[str, str], tmp_path: Path
) -> None:
    proc, log = run_genrule(
        genrule_scripts["aarch64"], tmp_path, generated["envoy"].path, "aarch64", tools={}, bundled=False
    )
    assert proc.returncode == 1
    assert "needs gn and ninja" in proc.stderr
    assert log == ""


# -- what generate() does with an existing destination -------------------------------------------


def test_generate_refuses_unrelated_content(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine\n", encoding="utf-8")
    (dest / "proxy").mkdir()
    (dest / "proxy" / "work.c").write_text("int x;\n", encoding="utf-8")
    with pytest.raises(example.ExampleError):
        example.generate(dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        "notes.txt",
        "proxy",
        "proxy/work.c",
    ]
    assert (dest / "notes.txt").read_text(encoding="utf-8") == "mine\n"


def test_generate_refuses_other_repositories(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    dest = tmp_path / "dest"
    for name in ("envoy", "proxy", "istio"):
        repo = dest / name
        git("init", "--quiet", str(repo), env=env)
        (repo / "README").write_text(name, encoding="utf-8")
        git("add", "README", cwd=repo, env=env)
        git("-c", "user.name=x", "-c", "user.email=x@x", "commit", "-qm", "x", cwd=repo, env=env)
    before = {n: git("rev-parse", "HEAD", cwd=dest / n, env=env) for n in ("envoy", "proxy", "istio")}
    with pytest.raises(example.ExampleError, match="does not hold the example repositories"):
        example.generate(dest)
    assert before == {n: git("rev-parse", "HEAD", cwd=dest / n, env=env) for n in before}


def test_generate_is_idempotent(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    first = example.generate(dest)
    marker = dest / "proxy" / "user-file"
    marker.write_text("kept\n", encoding="utf-8")
    second = example.generate(dest)
    assert first == second
    assert marker.read_text(encoding="utf-8") == "kept\n"


def test_generate_fills_an_empty_directory(tmp_path: Path) -> None:
    dest = tmp_path / "empty"
    dest.mkdir()
    repos = example.generate(dest)
    assert sorted(p.name for p in dest.iterdir()) == ["envoy", "istio", "istio-next", "proxy", "proxy-next", "ztunnel"]
    assert all(r.path.parent == dest for r in repos.values())


def test_main_prints_the_repositories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert example.main([str(tmp_path / "repos")]) == 0
    out = capsys.readouterr().out
    toml = pins()
    for name in ("envoy", "proxy", "istio"):
        assert f"commit={toml[name]['commit']}" in out
        assert str(tmp_path / "repos" / name) in out
    assert example.main([str(tmp_path / "repos")]) == 0  # again: idempotent
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("", encoding="utf-8")
    assert example.main([str(tmp_path / "busy")]) != 0
    assert "does not hold the example repositories" in capsys.readouterr().err


def _older_version_of(
    dest: Path, tmp_path: Path, author: str = "istiobuild example <example@istiobuild.invalid>"
) -> None:
    """What another istiobuild version left: its repositories, one more commit on istio's HEAD (by `author`)."""
    example.generate(dest)
    name, _, email = author.partition(" <")
    env = {**clean_env(tmp_path), "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email.rstrip(">"),
           "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email.rstrip(">")}  # fmt: skip
    git("-C", str(dest / "istio"), "commit", "-q", "--allow-empty", "-m", "older template", env=env)


def test_generate_replaces_an_older_example_only_when_asked(tmp_path: Path) -> None:
    dest = tmp_path / "example-upstream"
    _older_version_of(dest, tmp_path)
    with pytest.raises(example.ExampleError, match="does not hold the example repositories"):
        example.generate(dest)  # `invoke example DEST` never replaces anything
    repos = example.generate(dest, replace_older=True)  # the checkout stage's workdir copy
    assert git("-C", str(dest / "istio"), "rev-parse", "HEAD") == repos["istio"].head
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".example-upstream")]  # nothing left aside


def test_generate_keeps_an_example_someone_committed_to(tmp_path: Path) -> None:
    dest = tmp_path / "example-upstream"
    _older_version_of(dest, tmp_path, author="Someone <someone@example.com>")
    head = git("-C", str(dest / "istio"), "rev-parse", "HEAD")
    with pytest.raises(example.ExampleError, match="does not hold the example repositories"):
        example.generate(dest, replace_older=True)
    assert git("-C", str(dest / "istio"), "rev-parse", "HEAD") == head  # their commit is still there
    shutil.rmtree(dest)  # and a file of theirs in an otherwise untouched older copy:
    _older_version_of(dest, tmp_path)
    (dest / "istio" / "notes.txt").write_text("mine\n")
    with pytest.raises(example.ExampleError):
        example.generate(dest, replace_older=True)
    assert (dest / "istio" / "notes.txt").read_text() == "mine\n"

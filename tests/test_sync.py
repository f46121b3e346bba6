"""`invoke sync-releases` against miniature upstream mirrors made here with real git: istio (go.mod, istio.deps),
proxy (WORKSPACE, .bazelversion) and envoy repositories, tags incl. an rc and a moved tag."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import invoke, one_error
from istiobuild import release, sync, upstreamfacts
from istiobuild.arch import Arch
from istiobuild.config import Settings
from istiobuild.errors import DataError, UsageError
from istiobuild.plan import make_plan
from istiobuild.release import Component
from istiobuild.toolchain import get as toolchain

SHA256 = "ab" * 32
REPOS = """
[line.repos]
proxy = "https://github.com/istio/proxy"
envoy = "https://github.com/{envoy_repo}"
istio = "https://github.com/istio/istio"
"""


def git(repo: Path, *args: str, when: int = 0) -> str:
    who = {f"GIT_{role}_{key}": value for role in ("AUTHOR", "COMMITTER")
           for key, value in (("NAME", "t"), ("EMAIL", "t@t"), ("DATE", f"{when} +0000"))}  # fmt: skip
    env = {**os.environ, **who}
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def workspace(envoy: str, *, org: str = "istio", style: str = "org", sha256: str = SHA256, patches: int = 0) -> str:
    """A proxy WORKSPACE as each era spells the envoy archive: literal URL (1.4), ENVOY_PROJECT (1.5), ENVOY_ORG."""
    head = f'ENVOY_SHA = "{envoy}"\n\nENVOY_SHA256 = "{sha256}"\n\n'
    url = {
        "literal": f'"https://github.com/{org}/envoy/archive/" + ENVOY_SHA + ".tar.gz"',
        "project": '"https://github.com/" + ENVOY_PROJECT + "/" + ENVOY_REPO + "/archive/" + ENVOY_SHA + ".tar.gz"',
        "org": '"https://github.com/" + ENVOY_ORG + "/" + ENVOY_REPO + "/archive/" + ENVOY_SHA + ".tar.gz"',
    }[style]
    names = {"literal": "", "project": f'ENVOY_PROJECT = "{org}"\n\nENVOY_REPO = "envoy"\n\n',
             "org": f'ENVOY_ORG = "{org}"\n\nENVOY_REPO = "envoy"\n\n'}[style]  # fmt: skip
    listed = "".join(f'        "@io_istio_proxy//bazel:{n}.patch",\n' for n in range(patches))
    patch_lines = f"    patches = [\n{listed}    ],\n" if patches else ""
    return (
        f'load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")\n\n{head}{names}'
        f'http_archive(\n    name = "envoy",\n{patch_lines}    sha256 = ENVOY_SHA256,\n'
        f'    strip_prefix = "envoy-" + ENVOY_SHA,\n    url = {url},\n)\n\n'
        'http_archive(\n    name = "other",\n    url = "https://example.com/x.tar.gz",\n)\n'
    )


class Upstream:
    """Miniature mirrors: `root/{istio,proxy,envoy}`, real git repositories."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = 1_700_000_000
        for name in ("istio", "proxy", "envoy"):
            (root / name).mkdir(parents=True)
            git(root / name, "init", "-q", "-b", "main")
        self.envoy = [self._commit("envoy", {"VERSION": f"{n}\n"}) for n in range(3)]
        self.proxy: dict[str, str] = {}
        self.istio: dict[str, str] = {}

    def _commit(self, name: str, files: dict[str, str]) -> str:
        repo = self.root / name
        for path, text in files.items():
            (repo / path).write_text(text)
        self.clock += 3600
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "--allow-empty", "-m", f"c{self.clock}", when=self.clock)
        return git(repo, "rev-parse", "HEAD")

    def proxy_commit(self, envoy: str, *, bazel: str = "6.3.2", **ws: object) -> str:
        return self._commit("proxy", {"WORKSPACE": workspace(envoy, **ws), ".bazelversion": f"{bazel}\n"})  # type: ignore[arg-type]

    def tag(self, version: str, *, proxy: str, go: str = "1.21", deps: bool = True, proxy_tag: bool = True) -> str:
        entries = f'[{{"name": "PROXY_REPO_SHA", "repoName": "proxy", "lastStableSHA": "{proxy}"}}]' if deps else "[]"
        commit = self._commit("istio", {"go.mod": f"module istio.io/istio\n\ngo {go}\n", "istio.deps": entries})
        git(self.root / "istio", "tag", "-a", "-m", version, version, commit, when=self.clock)
        if proxy_tag:
            git(self.root / "proxy", "tag", "-f", version, proxy)
        self.istio[version], self.proxy[version] = commit, proxy
        return commit


@pytest.fixture
def up(tmp_path: Path) -> Upstream:
    u = Upstream(tmp_path / "mirrors")
    p0 = u.proxy_commit(u.envoy[0], style="literal")
    u.tag("1.40.0", proxy=p0)
    u.tag("1.40.1", proxy=p0)  # reuses the proxy commit
    u.tag("1.40.2-rc.0", proxy=u.proxy_commit(u.envoy[1]))  # not GA: never synced
    u.tag("1.40.2", proxy=u.proxy_commit(u.envoy[0], style="project", bazel="6.5.0"))  # same envoy, new proxy
    u.tag("1.41.0", proxy=u.proxy_commit(u.envoy[1], org="envoyproxy", patches=2), go="1.22.0")
    u.tag("1.3.9", proxy=p0)  # before 1.4: never synced
    return u


def run(up: Upstream, releases: Path, *, check: bool = False, line: str = "") -> bool:
    releases.mkdir(exist_ok=True)
    return sync.command(str(up.root), check=check, line=line, directory=releases)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.toml"))}


def test_new_lines_are_written_pinned_with_every_ga_tag(up: Upstream, tmp_path: Path, capsys) -> None:
    releases = tmp_path / "releases"
    assert run(up, releases)
    assert sorted(snapshot(releases)) == ["1.40.toml", "1.41.toml"]
    out, err = capsys.readouterr()
    assert "--- /dev/null" in out and "+++ b/releases/1.40.toml" in out and '+[release."1.41.0"]' in out
    assert "4 GA tags of 2 lines (1.40 .. 1.41): 0 already pinned, added 4 to 2 files" in err
    loaded = {**release.load_file(releases / "1.40.toml"), **release.load_file(releases / "1.41.toml")}
    assert list(loaded) == ["1.40.0", "1.40.1", "1.40.2", "1.41.0"]
    for version, rel in loaded.items():
        assert not rel.buildable and rel.line == version.rsplit(".", 1)[0]
        assert rel.pins[Component.ISTIO].commit == up.istio[version]
        assert rel.pins[Component.PROXY].commit == up.proxy[version] and rel.pins[Component.PROXY].tag == version
        commit_time = git(up.root / "istio", "show", "-s", "--format=%ct", up.istio[version])
        assert rel.source_date_epoch == int(commit_time)
    assert loaded["1.40.0"].pins[Component.ENVOY].repo == "istio/envoy"  # literal URL (1.4 style)
    assert loaded["1.40.2"].pins[Component.ENVOY].repo == "istio/envoy"  # ENVOY_PROJECT (1.5 style)
    assert loaded["1.41.0"].pins[Component.ENVOY].repo == "envoyproxy/envoy"  # ENVOY_ORG
    assert loaded["1.41.0"].pins[Component.ENVOY].commit == up.envoy[1]
    assert (loaded["1.40.1"].bazel_version, loaded["1.40.2"].bazel_version) == ("6.3.2", "6.5.0")
    assert (loaded["1.40.2"].go, loaded["1.41.0"].go) == ("1.21", "1.22.0")
    text = (releases / "1.40.toml").read_text()
    assert 'name = "1.40"\nstatus = "pinned"' in text
    assert "# same proxy commit as 1.40.0" in text and "# same envoy commit as 1.40.1" in text
    assert "applies 2 patch(es) of its own" in (releases / "1.41.toml").read_text()


def test_same_mirrors_same_bytes_at_once_or_tag_by_tag(up: Upstream, tmp_path: Path) -> None:
    at_once, again = tmp_path / "a", tmp_path / "b"
    assert run(up, at_once) and run(up, again)
    assert snapshot(at_once) == snapshot(again)
    stepwise = tmp_path / "c"
    up.tag("1.40.3", proxy=up.proxy["1.40.2"])
    assert run(up, stepwise)
    up.tag("1.41.1", proxy=up.proxy["1.41.0"])
    assert run(up, stepwise)
    assert run(up, at_once)  # from the same earlier state, one step
    fresh = tmp_path / "d"
    assert run(up, fresh)
    assert snapshot(stepwise) == snapshot(fresh) == snapshot(at_once)


def test_existing_entries_are_kept_byte_for_byte(up: Upstream, tmp_path: Path, capsys) -> None:
    """A hand-written, buildable line file: its comments and entries stay; missing tags go in version order."""
    releases = tmp_path / "releases"
    releases.mkdir()
    hand = f'''# hand-written: comments everywhere
schema = 1

[line]
name = "1.40"
bazel_version = "6.3.2"   # line-level: inherited
go = "1.21"
wee8 = ""
envoy_target = "//:envoy"
envoy_output = "bazel-bin/envoy"
gopath = false
docker_targets = []
skip_docker_targets = {{}}
patches = {{}}
{REPOS}
[release."1.40.0"]
# checked by hand
proxy = {{ tag = "1.40.0", commit = "{up.proxy["1.40.0"]}" }}
istio = {{ tag = "1.40.0", commit = "{up.istio["1.40.0"]}" }}
source_date_epoch = {git(up.root / "istio", "show", "-s", "--format=%ct", up.istio["1.40.0"])}   # by hand
envoy = {{ repo = "istio/envoy", commit = "{up.envoy[0]}", sha256 = "{SHA256}" }}

[release."1.40.2"]
proxy = {{ tag = "1.40.2", commit = "{up.proxy["1.40.2"]}" }}
istio = {{ tag = "1.40.2", commit = "{up.istio["1.40.2"]}" }}
source_date_epoch = {git(up.root / "istio", "show", "-s", "--format=%ct", up.istio["1.40.2"])}
envoy = {{ repo = "istio/envoy", commit = "{up.envoy[0]}", sha256 = "{SHA256}" }}
bazel_version = "6.5.0"
'''
    (releases / "1.40.toml").write_text(hand)
    assert run(up, releases, line="1.40")
    new = (releases / "1.40.toml").read_text()
    out = capsys.readouterr().out
    changed = [ln for ln in out.splitlines()[2:] if ln[:1] in "+-" and not ln.startswith("@@")]
    assert changed and all(ln.startswith("+") for ln in changed)  # only additions
    assert new.replace(new[new.index('[release."1.40.1"]') : new.index('[release."1.40.2"]')], "") == hand
    entry = release.load_file(releases / "1.40.toml")["1.40.1"]
    assert entry.bazel_version == "6.3.2" and entry.buildable
    assert "bazel_version" not in new[new.index('[release."1.40.1"]') : new.index('[release."1.40.2"]')]
    assert sorted(snapshot(releases)) == ["1.40.toml"]  # --line: nothing else
    assert run(up, releases, check=True, line="1.40")


def test_a_moved_tag_is_refused_and_nothing_is_written(up: Upstream, tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    assert run(up, releases)
    before = snapshot(releases)
    old = up.istio["1.40.1"]
    moved = up._commit("istio", {"MOVED": "x\n"})
    git(up.root / "istio", "tag", "-f", "1.40.1", moved)
    up.tag("1.41.5", proxy=up.proxy["1.41.0"])  # a new tag in the same sync: not written either
    for check in (False, True):
        with pytest.raises(DataError) as caught:
            run(up, releases, check=check)
        assert caught.value.message == (
            f"istio tag 1.40.1 moved: 1.40.toml pins {old}, the istio mirror's tag names {moved}"
        )
        assert "nothing was written" in caught.value.hint
    assert snapshot(releases) == before


def test_a_pinned_release_missing_upstream_is_refused(up: Upstream, tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    assert run(up, releases)
    git(up.root / "istio", "tag", "-d", "1.40.2", "1.41.0")  # 1.41: a whole line the mirror does not have
    with pytest.raises(
        DataError, match=r"release 1\.40\.2 \(1\.40\.toml\) is not a GA tag of the istio mirror"
    ) as caught:
        run(up, releases)
    assert "also: release 1.41.0 (1.41.toml) is not a GA tag" in caught.value.hint


def test_check_writes_nothing_and_exits_1_on_a_change(up: Upstream, tmp_path: Path, capsys) -> None:
    releases = tmp_path / "releases"
    assert not run(up, releases, check=True)
    assert snapshot(releases) == {}
    out, err = capsys.readouterr()
    assert "+++ b/releases/1.41.toml" in out and "would add 4 to 2 files" in err
    assert run(up, releases)
    capsys.readouterr()
    assert run(up, releases, check=True)
    assert capsys.readouterr().out == ""
    up.tag("1.41.1", proxy=up.proxy["1.41.0"])
    assert not run(up, releases, check=True)
    assert '+[release."1.41.1"]' in capsys.readouterr().out


def test_underivable_facts_are_reported_by_name_never_guessed(up: Upstream, tmp_path: Path, capsys) -> None:
    up.tag("1.42.0", proxy=up.proxy["1.41.0"], deps=False)  # istio.deps without PROXY_REPO_SHA
    private = up.proxy_commit("0" * 40, org="istio-private")  # a commit no mirror has
    up.tag("1.42.1", proxy=private)
    public = up.proxy_commit(up.envoy[2], org="istio-private", style="project")  # a commit istio/envoy has
    up.tag("1.42.2", proxy=public)
    up.tag("1.42.3", proxy=up.proxy["1.41.0"], proxy_tag=False)
    releases = tmp_path / "releases"
    assert not run(up, releases)  # not every tag could be pinned
    err = capsys.readouterr().err.splitlines()
    assert (
        "1.42.0: not derived: proxy commit (istio.deps has no PROXY_REPO_SHA with a 40-hex lastStableSHA); "
        "release not written" in err
    )
    assert (
        "1.42.3: not derived: proxy tag (proxy tag 1.42.3 does not exist in the proxy mirror); "
        "release not written" in err
    )
    assert any(e.startswith("1.42.1: not derived: envoy public_repo (istio-private/envoy@000000000000 is not in")
               and "not written" not in e for e in err)  # fmt: skip
    assert "2 not written" in err[-1]
    loaded = release.load_file(releases / "1.42.toml")
    assert list(loaded) == ["1.42.1", "1.42.2"]
    assert loaded["1.42.1"].pins[Component.ENVOY].public_repo == "" and "not found" in loaded["1.42.1"].note
    envoy = loaded["1.42.2"].pins[Component.ENVOY]
    assert (envoy.repo, envoy.public_repo) == ("istio-private/envoy", "istio/envoy")
    assert loaded["1.42.2"].urls[Component.ENVOY] == "https://github.com/istio/envoy"


def test_the_mirrors_are_checked_before_reading(up: Upstream, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        upstreamfacts.open_mirrors(str(tmp_path / "none"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is not a directory"):
        upstreamfacts.open_mirrors(str(tmp_path / "file"))
    partial = tmp_path / "partial"
    (partial / "envoy").mkdir(parents=True)  # a plain directory inside no repository of its own
    git(tmp_path, "init", "-q")  # ... but inside a work tree: still not a repository itself
    git(partial, "init", "-q", "--bare", "istio")
    with pytest.raises(UsageError, match="holds no git repository proxy, envoy$"):
        upstreamfacts.open_mirrors(str(partial))
    assert upstreamfacts.open_mirrors(str(up.root)).repos[Component.PROXY] == up.root / "proxy"


def test_envoy_archive_of_each_era() -> None:
    sha = "1" * 40
    for style, org in (("literal", "istio"), ("project", "istio-private"), ("org", "envoyproxy")):
        missing: list[upstreamfacts.Missing] = []
        found = upstreamfacts.envoy_archive(workspace(sha, org=org, style=style), missing)
        assert found == upstreamfacts.EnvoyArchive(repo=f"{org}/envoy", commit=sha, sha256=SHA256) and not missing
    twice = workspace(sha).replace('ENVOY_ORG = "istio"', 'ENVOY_ORG = "istio"\nENVOY_ORG = "other"')
    missing = []
    assert upstreamfacts.envoy_archive(twice, missing) is None
    assert missing[0].fact == "envoy repo"  # an ambiguous variable is never guessed
    missing = []
    assert upstreamfacts.envoy_archive(workspace(sha, sha256="x"), missing) is None
    assert missing[0].fact == "envoy sha256"


def test_sync_task_on_the_command_line(up: Upstream) -> None:
    """The task: --check against the shipped releases/ for a line it does not have, and bad input."""
    proc = invoke("sync-releases", "--mirrors", str(up.root), "--check", "--line", "1.41")
    assert proc.returncode == 1, proc.stderr
    assert "+++ b/releases/1.41.toml" in proc.stdout and "Traceback" not in proc.stderr
    assert not (Path(release.__file__).parents[2] / "releases" / "1.41.toml").exists()
    for args, expect in (
        ((), "sync-releases needs --mirrors DIR"),
        (("--mirrors", str(up.root / "istio" / "go.mod")), "is not a directory"),
        (("--mirrors", str(up.root), "--line", "1.3"), "is not a release line 1.4 or later"),
        (("--mirrors", str(up.root), "--line", "1.77"), "has no GA tag 1.77.N"),
    ):
        assert expect in one_error(invoke("sync-releases", *args))


def test_a_pinned_line_loads_without_a_mechanism_and_is_refused_for_planning(up: Upstream, tmp_path: Path) -> None:
    releases = tmp_path / "releases"
    assert run(up, releases)
    rel = release.load_file(releases / "1.41.toml")["1.41.0"]
    assert not rel.buildable and rel.docker_targets == () and rel.series[Component.ENVOY] == ()
    with pytest.raises(UsageError, match=r"^release 1\.41\.0 is pinned: istiobuild cannot build line 1\.41 yet$"):
        make_plan(rel, Arch.X86_64, toolchain("clang"), Settings(), host=Arch.X86_64)
    text = (releases / "1.41.toml").read_text()
    (releases / "1.41.toml").write_text(text.replace('bazel_version = "6.3.2"\n', "", 1))
    with pytest.raises(DataError, match="missing 'bazel_version'"):
        release.load_file(releases / "1.41.toml")
    (releases / "1.41.toml").write_text(text.replace('status = "pinned"', 'status = "maybe"'))
    with pytest.raises(DataError, match="status"):
        release.load_file(releases / "1.41.toml")


def test_shipped_pinned_releases_are_listed_but_not_built() -> None:
    """The shipped matrix: every GA tag 1.4.0 .. newest; plan refuses a pinned one; the CI matrix leaves them out."""
    from istiobuild import matrix

    known = release.matrix()
    pinned = [r for r in known.values() if not r.buildable]
    assert pinned and all(r.line not in ("1.4", "1.5", "example") for r in pinned)
    # 1.6.11 is pins only: its envoy is in istio-private, with no public copy
    assert [r.version for r in matrix.select_releases("", known)] == [
        v
        for v, r in known.items()
        if r.line in (f"1.{n}" for n in range(4, 29)) and not r.pinned_release and v != "1.6.11"
    ]
    stderr = one_error(invoke("plan", "--release", "1.29.1"))
    assert stderr == "error: release 1.29.1 is pinned: istiobuild cannot build line 1.29 yet"
    rows = {r["release"]: r for r in json.loads(invoke("releases", "--json").stdout)}
    assert rows["1.29.1"]["buildable"] is False and rows["1.5.10"]["buildable"] is True
    assert rows["1.13.3"]["buildable"] is True and rows["1.13.5"]["buildable"] is False
    assert rows["1.20.3"]["envoy"]["repo"] == "istio/envoy" and rows["1.6.0"]["bazel"] == "2.0.0"

"""The cache every workdir shares (src/istiobuild/cache.py, docs/cache.md).

Real builds of the example: a second workdir reuses the first one's git objects and bazel disk cache,
two builds at once share one cache (and `invoke cache --prune` is refused while they run), `invoke
cache --size` agrees with du, `--prune --max-size` trims least recently used first and a build after it
works. Without a build: the pruning rules on made-up caches (never through a symlink, never git or Go
modules), the locks, the refusals of a symlinked or foreign cache root.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import invoke, one_error, until
from istiobuild import cache, procs
from istiobuild.config import Layer, resolve
from istiobuild.errors import IstiobuildError, UsageError

HOLD = """
import sys, time
from pathlib import Path
from istiobuild import cache
with cache.{how}:
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


# -- helpers -----------------------------------------------------------------------------------


def build_args(work: Path) -> list[str]:
    """The example's build up to the last stage that uses the cache (istio: Go); the images stages use the
    docker daemon, not the cache, and other test sessions on this daemon may remove images they did not make."""
    return ["build", "--release", "example", "--arch", "x86_64", "--workdir", str(work), "--to", "istio"]


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def processes(work: Path) -> dict[str, int]:
    """bazel's summary of the proxy stage: {'remote cache hit': 4, 'internal': 9, ...} (the disk cache
    counts as a remote cache in bazel 4)."""
    text = (work / "logs" / "example-x86_64-proxy.log").read_text(errors="replace")
    line = re.findall(r"INFO: \d+ processes?: (.*)\.", text)[-1]
    return {kind: int(n) for n, kind in (part.split(" ", 1) for part in line.split(", "))}


def du(path: Path) -> int:
    if not path.exists():
        return 0
    return int(
        subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    )


def hold(how: str, seconds: float) -> subprocess.Popen[str]:
    """A child process holding a lock of the cache (`how`) for `seconds`, once it printed "held"."""
    child = subprocess.Popen([sys.executable, "-c", HOLD.format(how=how), "", str(seconds)], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    assert child.stdout is not None and child.stdout.readline().strip() == "held"
    return child


def age(path: Path, seconds_ago: float, *, atime_ago: float | None = None) -> None:
    now = time.time()
    os.utime(path, (now - (seconds_ago if atime_ago is None else atime_ago), now - seconds_ago))


def fill(path: Path, size: int = 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


# -- two workdirs, one cache -------------------------------------------------------------------


Shared = tuple[Path, list[Path], list[subprocess.CompletedProcess[str]]]  # cache root, workdirs A and B, their builds


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """The example built in workdir A, then in workdir B, with one default cache ($XDG_CACHE_HOME/istiobuild)."""
    base = tmp_path_factory.mktemp("shared")
    env = {"XDG_CACHE_HOME": str(base / "xdg")}
    works, runs, seconds = [base / "A", base / "B"], [], []
    try:
        for work in works:
            began = time.monotonic()
            runs.append(ok(invoke(*build_args(work), env=env)))
            seconds.append(time.monotonic() - began)
        print(f"example build: first workdir {seconds[0]:.1f} s, second workdir {seconds[1]:.1f} s")
        yield base / "xdg" / "istiobuild", works, runs
    finally:
        for work in [*works, base / "C"]:
            procs.stop_bazel_servers(work / "cache" / "bazel-root")


@pytest.mark.slow
def test_a_second_workdir_reuses_git_objects_and_the_disk_cache(shared: Shared) -> None:
    root, (first, second), (run_a, run_b) = shared
    for component in ("proxy", "envoy", "istio"):
        assert f"{component}: fetching " in run_a.stderr, run_a.stderr
        assert re.search(rf"{component}: [0-9a-f]{{12}} already in the cache", run_b.stderr), run_b.stderr
        alternates = (second / "example" / component / ".git" / "objects" / "info" / "alternates").read_text()
        assert str(root / "git" / f"{component}.git" / "objects") in alternates  # borrowed, not copied
    built, reused = processes(first), processes(second)
    assert "remote cache hit" not in built and sum(v for k, v in built.items() if k != "internal") > 0, built
    assert set(reused) == {"remote cache hit", "internal"} and reused["remote cache hit"] > 0, reused  # all hits
    assert sorted(p.name for p in (root / "bazel-disk").iterdir()) >= ["ac", "cas"]
    assert (root / "go" / "build").is_dir() and not (root / "bazel-root").exists()
    for work in (first, second):  # what belongs to one workdir stays there
        assert (work / "cache" / "bazel-root").is_dir() and (work / "cache" / "home").is_dir()


@pytest.mark.slow
def test_cache_size_matches_du(shared: Shared) -> None:
    root = shared[0]
    shown = json.loads(ok(invoke("cache", "--size", "--json", env={"XDG_CACHE_HOME": str(root.parent)})).stdout)
    assert shown["root"] == str(root) and shown["total"]["bytes"] == du(root)
    parts = {p["part"]: p for p in shown["parts"]}
    assert set(parts) >= {"git", "bazel-disk", "bazel-repo", "go-build", "go-mod", "downloads"}
    for part in parts.values():
        path = Path(part["path"])
        files = sum(1 for p in path.rglob("*") if p.is_file() and not p.is_symlink()) if path.is_dir() else 0
        assert (part["bytes"], part["files"]) == (du(path), files), part
    assert parts["git"]["bytes"] > 0 and parts["bazel-disk"]["bytes"] > 0 and parts["go-build"]["bytes"] > 0
    plain = ok(invoke("cache", env={"XDG_CACHE_HOME": str(root.parent)})).stdout.splitlines()  # no TTY: lines
    assert [line.split()[0] for line in plain] == [*parts, "total"]


@pytest.mark.slow
def test_prune_trims_least_recently_used_first_and_the_cache_stays_usable(shared: Shared) -> None:
    root, (_, second), _ = shared
    files = sorted(p for p in (root / "bazel-disk").rglob("*") if p.is_file())
    for n, path in enumerate(files):  # a known order of use: files[0] the least recently used
        age(path, 3600 * (len(files) - n))
    sizes = [p.stat().st_blocks * 512 for p in files]
    keep = len(files) // 2
    limit = sum(sizes[-keep:])
    env = {"XDG_CACHE_HOME": str(root.parent)}
    proc = ok(invoke("cache", "--prune", "--max-size", str(limit), "--json", env=env))
    pruned = {p["part"]: p for p in json.loads(proc.stdout)["pruned"]}
    assert (pruned["bazel-disk"]["entries"], pruned["bazel-disk"]["bytes"]) == (len(files) - keep, sum(sizes[:-keep]))
    assert [p.exists() for p in files] == [False] * (len(files) - keep) + [True] * keep  # the oldest went
    assert (root / "git" / "proxy.git" / "HEAD").is_file()  # git objects are never pruned
    third = root.parent.parent / "C"  # a build after the prune: hits for what is left, builds the rest
    ok(invoke(*build_args(third), env=env))
    after = processes(third)
    assert after.get("remote cache hit", 0) < processes(second)["remote cache hit"], after
    assert (third / "example-x86_64" / "artifacts" / "envoy").is_file()


@pytest.mark.slow
def test_two_builds_at_once_share_one_cache(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    root = tmp_path / "xdg" / "istiobuild"
    works = [tmp_path / "A", tmp_path / "B"]
    builds = [
        subprocess.Popen([sys.executable, "-m", "istiobuild", *build_args(work)], env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for work in works
    ]  # fmt: skip
    try:
        lock = root / cache.LOCK_NAME
        assert until(lambda: len(cache.holders(lock)) == 2, timeout=120), "the builds never both held the cache"
        refused = one_error(invoke("cache", "--prune", env={"XDG_CACHE_HOME": str(tmp_path / "xdg")}))
        assert refused.startswith(f"error: the cache {root} is in use by pid ")
        assert {int(p) for p in re.findall(r"\d+", refused.split("pid ", 1)[1])} == {b.pid for b in builds}
        outputs = [b.communicate(timeout=600) for b in builds]
    finally:
        for b in builds:
            b.kill()
        for work in works:
            procs.stop_bazel_servers(work / "cache" / "bazel-root")
    for b, (out, err) in zip(builds, outputs, strict=True):
        assert b.returncode == 0, out[-2000:] + err[-2000:]
    for component in ("proxy", "envoy", "istio"):  # one cache, not corrupted by two fetches at once
        repo = root / "git" / f"{component}.git"
        subprocess.run(["git", "-C", str(repo), "fsck", "--no-dangling"], check=True, capture_output=True)
        for work in works:
            head = subprocess.run(["git", "-C", str(work / "example" / component), "rev-parse", "HEAD"],
                                  capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
            subprocess.run(["git", "-C", str(repo), "cat-file", "-e", head], check=True)


# -- refusals ----------------------------------------------------------------------------------


def test_a_symlinked_cache_root_is_refused(tmp_path: Path) -> None:
    elsewhere, xdg = tmp_path / "elsewhere", tmp_path / "xdg"
    elsewhere.mkdir()
    xdg.mkdir()
    (xdg / "istiobuild").symlink_to(elsewhere)
    work = tmp_path / "work"
    for args, env in (
        (build_args(work), {"XDG_CACHE_HOME": str(xdg)}),
        (["cache", "--size"], {"XDG_CACHE_HOME": str(xdg)}),
        (["cache", "--prune"], {"ISTIOBUILD_CACHE_DIR": str(xdg / "istiobuild")}),
    ):
        line = one_error(invoke(*args, env=env))
        assert line == f"error: the cache directory {xdg / 'istiobuild'} is a symlink; istiobuild does not follow it"
    assert not list(elsewhere.iterdir()) and not (work / "example").exists()  # nothing written, no stage ran


def _give_away(path: Path, uid: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    else:  # CI runners: passwordless sudo
        subprocess.run(["sudo", "-n", "chown", f"{uid}:{uid}", str(path)], check=True)


def test_a_cache_of_another_user_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    _give_away(foreign, 4242)
    line = one_error(invoke("cache", "--prune", env={"ISTIOBUILD_CACHE_DIR": str(foreign)}))
    assert line.startswith(f"error: the cache directory {foreign} belongs to uid 4242, not to you")
    with pytest.raises(UsageError, match="belongs to uid 4242"):
        cache.check_root(foreign, create=True)


def test_prune_is_refused_while_a_build_holds_the_cache(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    old = fill(root / "downloads" / "old.tar.gz")
    age(old, 90 * 86400)
    child = hold(f"shared(Path({str(root)!r}))", 30)
    try:
        proc = invoke("cache", "--prune", env={"ISTIOBUILD_CACHE_DIR": str(root)})
        assert proc.returncode == 1
        assert one_error(proc) == f"error: the cache {root} is in use by pid {child.pid} (a build); nothing was pruned"
        assert old.exists()
    finally:
        child.kill()
        child.wait()
    assert "downloads" in ok(invoke("cache", "--prune", env={"ISTIOBUILD_CACHE_DIR": str(root)})).stdout
    assert not old.exists()


def test_a_fetch_waits_for_another_fetch_into_the_same_repository(tmp_path: Path) -> None:
    repo = tmp_path / "cache" / "git" / "proxy.git"
    child = hold(f"fetch_lock(Path({str(repo)!r}), print)", 1.5)
    notes: list[str] = []
    with cache.fetch_lock(repo, notes.append):
        assert child.wait(timeout=10) == 0  # it had the lock; it let go of it by exiting
    assert notes == [f"waiting for pid {child.pid}, which is fetching into {repo}"]


# -- pruning rules, without a build ------------------------------------------------------------


def test_lru_goes_by_the_last_use_atime_or_mtime_down_to_the_size(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    files = [fill(root / "bazel-disk" / "cas" / f"{n:02x}" / f"blob{n}") for n in range(6)]
    for n, path in enumerate(files):
        age(path, 3600 * (10 - n))
    age(files[0], 3600 * 20, atime_ago=60)  # written long ago, read a minute ago: a bazel 4 cache hit
    size = files[0].stat().st_blocks * 512
    (pruned,) = [p for p in cache.prune(root, max_size=3 * size, older_than=86400) if p.part == "bazel-disk"]
    assert (pruned.entries, pruned.bytes) == (3, 3 * size)
    assert [p.exists() for p in files] == [True, False, False, False, True, True]


def test_older_than_removes_whole_entries_and_never_git_or_go_modules(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    entry = root / "bazel-repo" / "content_addressable" / "sha256" / ("a" * 64)
    paths = {
        "repo-old": fill(entry / "file"),
        "repo-new": fill(root / "bazel-repo" / "content_addressable" / "sha256" / ("b" * 64) / "file"),
        "go-old": fill(root / "go" / "build" / "ab" / "ab12-a"),
        "go-trim": fill(root / "go" / "build" / "trim.txt"),
        "download-old": fill(root / "downloads" / "helm.tar.gz"),
        "git-old": fill(root / "git" / "proxy.git" / "objects" / "pack" / "x.pack"),
        "mod-old": fill(root / "go" / "mod" / "cache" / "download" / "x.zip"),
    }
    for name, path in paths.items():
        if name != "repo-new":
            age(path, 40 * 86400)
    pruned = {p.part: p.entries for p in cache.prune(root, max_size=1 << 40, older_than=30 * 86400)}
    assert pruned == {"bazel-repo": 1, "go-build": 1, "downloads": 1}  # a part that is not there is skipped
    assert not entry.exists() and not paths["go-old"].exists() and not paths["download-old"].exists()
    assert all(paths[k].exists() for k in ("repo-new", "go-trim", "git-old", "mod-old"))


def test_pruning_never_follows_a_symlink(tmp_path: Path) -> None:
    root, outside = tmp_path / "cache", tmp_path / "outside"
    victims = [fill(outside / "disk" / "cas" / "aa" / "blob"), fill(outside / "build" / "ab" / "x-a"),
               fill(outside / "dl" / "file.tar.gz")]  # fmt: skip
    for path in victims:
        age(path, 400 * 86400)
    mine = fill(root / "bazel-disk" / "cas" / "bb" / "blob")
    age(mine, 400 * 86400)
    (root / "bazel-disk" / "ac").symlink_to(outside / "disk" / "cas")  # a directory link inside a part
    (root / "go").mkdir()
    (root / "go" / "build").symlink_to(outside / "build")  # a whole part as a link
    (root / "downloads").mkdir()
    (root / "downloads" / "file.tar.gz").symlink_to(victims[2])  # a file link
    cache.prune(root, max_size=0, older_than=0)
    assert all(v.exists() for v in victims) and not mine.exists()
    assert (root / "bazel-disk" / "ac").is_symlink() and (root / "downloads" / "file.tar.gz").is_symlink()
    rows, _ = cache.usage(root)  # a link's target is never counted
    assert {r.part: r.files for r in rows}["go-build"] == 0 and {r.part: r.files for r in rows}["downloads"] == 0


def test_usage_counts_like_du(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    big = fill(root / "bazel-disk" / "cas" / "aa" / "big", 1 << 20)
    (root / "bazel-disk" / "cas" / "aa" / "hardlink").hardlink_to(big)  # counted once, as du does
    fill(root / "git" / "proxy.git" / "objects" / "x", 10)
    (root / "downloads").mkdir()
    (root / "downloads" / "link").symlink_to(big)
    rows, total = cache.usage(root)
    assert total.bytes == du(root) and total.path == root
    for row in rows:
        assert row.bytes == du(row.path), row


@pytest.mark.parametrize(
    ("text", "size"), [("20G", 20 << 30), ("512M", 512 << 20), ("1.5T", int(1.5 * (1 << 40))), ("1000", 1000),
                       ("4KiB", 4096), ("2gb", 2 << 30)],
)  # fmt: skip
def test_sizes(text: str, size: int) -> None:
    assert cache.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-1G", "20X", "G", "1e9", "30 days"])
def test_bad_sizes_and_ages(text: str) -> None:
    with pytest.raises(UsageError, match="is not a size"):
        cache.parse_size(text)
    with pytest.raises(UsageError, match="is not an age"):
        cache.parse_age(text)


def test_bad_flags_are_one_line(tmp_path: Path) -> None:
    env = {"ISTIOBUILD_CACHE_DIR": str(tmp_path / "c")}
    assert one_error(invoke("cache", "--prune", "--older-than", "30 days", env=env)) == (
        "error: --older-than '30 days' is not an age"
    )
    assert (
        one_error(invoke("cache", "--prune", "--max-size", "lots", env=env)) == "error: --max-size 'lots' is not a size"
    )
    assert "--max-size is empty" in one_error(invoke("cache", "--max-size=", env=env))


def test_ages() -> None:
    assert [cache.parse_age(t) for t in ("30d", "12h", "2w", "90m", "45s")] == [2592000, 43200, 1209600, 5400, 45]


# -- where the cache is ------------------------------------------------------------------------


def test_the_default_cache_is_the_users_and_cache_dir_overrides_it(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    settings, _ = resolve([Layer("test", {"workdir": str(tmp_path / "w")})], base=tmp_path)
    assert settings.cache == tmp_path / "xdg" / "istiobuild"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings.cache == tmp_path / "home" / ".cache" / "istiobuild"
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    chosen, _ = resolve([Layer("test", {"cache_dir": "link"})], base=tmp_path)
    assert chosen.cache == tmp_path / "link"  # kept as written, so that the build refuses it


def test_the_plan_shares_the_caches_and_keeps_bazel_state_in_the_workdir(tmp_path: Path) -> None:
    work, xdg = tmp_path / "w", tmp_path / "xdg"
    plan = json.loads(ok(invoke("plan", "--release", "example", "--arch", "x86_64", "--workdir", str(work), "--json",
                                env={"XDG_CACHE_HOME": str(xdg)})).stdout)  # fmt: skip
    make = next(s for st in plan["stages"] if st["name"] == "proxy" for s in st["steps"]
                if s.get("argv", [])[:2] == ["make", "build_envoy"])  # fmt: skip
    args = " ".join(make["argv"])
    root = xdg / "istiobuild"
    for wanted in (f"--disk_cache={root}/bazel-disk", f"--repository_cache={root}/bazel-repo",
                   f"--output_user_root={work}/cache/bazel-root", f"PATH:={root}/toolchain/x86_64/bin:"):  # fmt: skip
        assert wanted in args, (wanted, args)
    istio = next(
        s for st in plan["stages"] if st["name"] == "istio" for s in st["steps"] if s.get("env", {}).get("GOCACHE")
    )
    assert (istio["env"]["GOCACHE"], istio["env"]["HOME"]) == (f"{root}/go/build", f"{work}/cache/home")


def test_an_unusable_cache_path_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="contains a space"):
        cache.check_root(tmp_path / "a b", create=True)
    with pytest.raises(UsageError, match="not an absolute path"):
        cache.check_root(Path("relative"), create=True)
    assert not cache.check_root(tmp_path / "missing", create=False) and not (tmp_path / "missing").exists()
    with pytest.raises(IstiobuildError, match="contains a space"):
        cache.prune(tmp_path / "a b", max_size=0, older_than=0)

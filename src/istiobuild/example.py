"""Miniature envoy, proxy and istio git repositories for the `example` release.

`generate(dest)` turns the templates in examples/miniature/{envoy,proxy,istio,ztunnel,proxy-next,istio-next}/ into git
repositories shaped like istio/envoy, istio/proxy and istio/istio (same file names, same
mechanisms: the wee8 genrule, the proxy WORKSPACE pin, USE_LOCAL_PROXY, ...). Each gets:

- a pinned commit (the template rendered with VERSION=0.1.0), annotated tag 0.1.0 on it for
  proxy and istio (envoy is pinned by SHA only, like the real proxy pins envoy);
- one more commit on top (VERSION=0.2.0-dev, and proxy/istio pin the next envoy/proxy tip), so
  a checkout of the pinned commit has to fetch a non-tip commit by SHA.

The proxy WORKSPACE pins the envoy commit and the sha256 of its `git archive` tarball; istio.deps
pins the proxy commit. Everything is deterministic (fixed identities and dates, explicit file
modes, git run with no user or system config), so releases/example.toml can pin the SHAs.

Template files may use @NAME@ placeholders: VERSION, ENVOY_SHA, ENVOY_SHA256, PROXY_SHA, ZTUNNEL_SHA, VERSION_PKG.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from istiobuild.errors import IstiobuildError
from istiobuild.resources import data_dir

COMPONENTS = ("envoy", "proxy", "istio", "ztunnel", "proxy-next", "istio-next")
# istio-next is istio with these templates on top: the mechanisms of the 1.18+ lines (pre-placed envoy and
# ztunnel, images from tools/docker.yaml); proxy-next is proxy with the bazel rc files of 1.25-1.28 (the compiler
# named by name, a fixed action PATH). Overlays keep their base's modes unless executables.txt names them.
OVERLAYS = {"istio-next": "istio", "proxy-next": "proxy"}
# @VERSION_PKG@: where istio's binaries keep their build information (istio.io/istio/pkg/version from 1.19).
VERSION_PKG = {"istio-next": "istio.io/istio/pkg/version"}
TAG = "0.1.0"
VERSION = "0.1.0"  # rendered into the pinned (tagged) commits
NEXT_VERSION = "0.2.0-dev"  # rendered into the commit after them
TAGGED = frozenset({"proxy", "istio", "proxy-next", "istio-next"})

_NAME = "istiobuild example"
_EMAIL = "example@istiobuild.invalid"
# Raw git dates (seconds since the epoch, UTC): the pinned commits and tags, then the next commits.
_PINNED_DATE = "1704067200 +0000"  # 2024-01-01T00:00:00Z
_NEXT_DATE = "1704153600 +0000"  # 2024-01-02T00:00:00Z

# Passed to every git command: nothing here may depend on the caller's configuration.
_GIT_CONFIG = (
    "init.defaultBranch=main",
    "core.autocrlf=false",
    "core.safecrlf=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "tar.umask=002",
    "gc.auto=0",
    "maintenance.auto=false",
)

_PLACEHOLDER = re.compile(r"@([A-Z][A-Z0-9_]*)@")


class ExampleError(IstiobuildError):
    """The example repositories could not be generated, or dest holds something else."""


@dataclass(frozen=True, kw_only=True)
class ExampleRepo:
    """One generated repository."""

    name: str  # "envoy", "proxy" or "istio"
    path: Path  # the repository (a normal checkout of `head`)
    commit: str  # the pinned commit, what releases/example.toml pins
    head: str  # the branch tip: one commit after `commit`
    tag: str | None  # annotated tag on `commit` (None for envoy)
    sha256: str  # sha256 of `git archive --format=tar --prefix=<name>-<commit>/ <commit>`

    @property
    def url(self) -> str:
        """A URL git can clone and fetch from."""
        return self.path.resolve().as_uri()


def _examples_root() -> Path:
    """examples/ of the checkout, or of the installed package's data."""
    return data_dir("examples")


def _miniature_root() -> Path:
    return _examples_root() / "miniature"


def git_env(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for git built from scratch: only PATH is taken from `environ`.

    No GIT_* variable, no user or system config, no XDG dirs, a fixed identity, locale and zone.
    """
    source = os.environ if environ is None else environ
    return {
        "PATH": source.get("PATH", os.defpath),
        "HOME": str(home),
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": _NAME,
        "GIT_AUTHOR_EMAIL": _EMAIL,
        "GIT_COMMITTER_NAME": _NAME,
        "GIT_COMMITTER_EMAIL": _EMAIL,
        "GIT_AUTHOR_DATE": _PINNED_DATE,
        "GIT_COMMITTER_DATE": _PINNED_DATE,
    }


def _git_bytes(args: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None) -> bytes:
    argv = ["git"]
    for item in _GIT_CONFIG:
        argv += ["-c", item]
    argv += args
    try:
        proc = subprocess.run(argv, cwd=cwd, env=dict(env), capture_output=True, check=False)
    except OSError as e:
        raise ExampleError(f"cannot run git: {e}", hint="install git") from e
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise ExampleError(f"{' '.join(argv)} failed (exit {proc.returncode}): {stderr}")
    return proc.stdout


def _git(args: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None) -> str:
    return _git_bytes(args, env=env, cwd=cwd).decode().strip()


def git_archive(repo: Path, commit: str, prefix: str, *, env: Mapping[str, str]) -> bytes:
    """`git archive --format=tar --prefix=PREFIX COMMIT` of `repo`, with a git_env() env."""
    return _git_bytes(
        ["--git-dir", str(repo / ".git"), "archive", "--format=tar", f"--prefix={prefix}", commit],
        env=env,
    )


def _archive_sha256(repo: Path, name: str, commit: str, env: Mapping[str, str]) -> str:
    return hashlib.sha256(git_archive(repo, commit, f"{name}-{commit}/", env=env)).hexdigest()


def _executables() -> frozenset[str]:
    manifest = _miniature_root() / "executables.txt"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    return frozenset(s for line in lines if (s := line.strip()) and not s.startswith("#"))


def _templates(name: str) -> dict[str, bytes]:
    """The template files of one repository (an overlay on top of its base's): path relative to its root ->
    content."""
    base = _templates(OVERLAYS[name]) if name in OVERLAYS else {}
    return {**base, **_own_templates(name)}


def _own_templates(name: str) -> dict[str, bytes]:
    root = _miniature_root() / name
    if not root.is_dir():
        raise ExampleError(f"example templates missing: {root}")
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise ExampleError(f"symlink in the example templates: {path}")
        if path.is_file():
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _render(name: str, relpath: str, content: bytes, values: Mapping[str, str]) -> bytes:
    text = content.decode("utf-8")

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise ExampleError(f"examples/miniature/{name}/{relpath}: unknown placeholder @{key}@")
        return values[key]

    return _PLACEHOLDER.sub(substitute, text).encode("utf-8")


def _write_commit(
    repo: Path,
    name: str,
    values: Mapping[str, str],
    message: str,
    date: str,
    env: Mapping[str, str],
) -> str:
    """Write the rendered templates into the work tree and commit them; return the commit."""
    executables = _executables()
    modes: dict[str, bool] = {}
    for relpath, content in _templates(name).items():
        target = repo / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        rendered = {**values, "VERSION_PKG": VERSION_PKG.get(name, "istio.io/pkg/version")}
        target.write_bytes(_render(name, relpath, content, rendered))
        executable = f"{name}/{relpath}" in executables or (
            name in OVERLAYS and f"{OVERLAYS[name]}/{relpath}" in executables
        )
        target.chmod(0o755 if executable else 0o644)
        modes[relpath] = executable
    missing = {p for p in executables if p.startswith(f"{name}/")} - {f"{name}/{p}" for p in modes}
    if missing:
        raise ExampleError(f"examples/miniature/executables.txt names missing files: {sorted(missing)}")

    dated = {**env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
    _git(["add", "--all", "--", "."], env=dated, cwd=repo)
    # Record the modes explicitly, whatever the file system says.
    for flag, executable in (("+x", True), ("-x", False)):
        paths = sorted(p for p, x in modes.items() if x is executable)
        if paths:
            _git(["update-index", f"--chmod={flag}", "--", *paths], env=dated, cwd=repo)
    _git(["commit", "--quiet", "--no-verify", "--allow-empty-message", "-m", message], env=dated, cwd=repo)
    return _git(["rev-parse", "HEAD"], env=dated, cwd=repo)


def _make_repo(
    repo: Path,
    name: str,
    pinned_values: Mapping[str, str],
    next_values: Mapping[str, str],
    env: Mapping[str, str],
) -> tuple[str, str]:
    """Create one repository: pinned commit (+ tag), then the next commit. Return both SHAs."""
    _git(["init", "--quiet", "--template=", "--object-format=sha1", str(repo)], env=env)
    commit = _write_commit(repo, name, pinned_values, f"{name} {VERSION}\n", _PINNED_DATE, env)
    if name in TAGGED:
        _git(["tag", "-a", "-m", f"{name} {TAG}\n", TAG, commit], env=env, cwd=repo)
    head = _write_commit(repo, name, next_values, f"{name}: start {NEXT_VERSION}\n", _NEXT_DATE, env)
    return commit, head


def _build(root: Path, env: Mapping[str, str]) -> dict[str, ExampleRepo]:
    """Generate the repositories under `root` (which must not hold them yet)."""
    repos: dict[str, ExampleRepo] = {}
    pinned = {"VERSION": VERSION}
    following = {"VERSION": NEXT_VERSION}
    for name in COMPONENTS:
        path = root / name
        commit, head = _make_repo(path, name, pinned, following, env)
        sha256 = _archive_sha256(path, name, commit, env)
        next_sha256 = _archive_sha256(path, name, head, env)
        repos[name] = ExampleRepo(
            name=name,
            path=path,
            commit=commit,
            head=head,
            tag=TAG if name in TAGGED else None,
            sha256=sha256,
        )
        # What the next repository pins: proxy pins envoy, istio pins proxy.
        if name == "envoy":
            pinned = {**pinned, "ENVOY_SHA": commit, "ENVOY_SHA256": sha256}
            following = {**following, "ENVOY_SHA": head, "ENVOY_SHA256": next_sha256}
        elif name in ("proxy", "proxy-next"):  # istio-next pins proxy-next (generated after istio)
            pinned = {**pinned, "PROXY_SHA": commit}
            following = {**following, "PROXY_SHA": head}
        elif name == "ztunnel":  # istio-next's istio.deps pins it (ZTUNNEL_REPO_SHA), as 1.18+ pins istio/ztunnel
            pinned = {**pinned, "ZTUNNEL_SHA": commit}
            following = {**following, "ZTUNNEL_SHA": head}
    return repos


def _existing(dest: Path, expected: Mapping[str, ExampleRepo], env: Mapping[str, str]) -> list[str]:
    """Why `dest` does not hold the expected repositories (empty when it does)."""
    problems = []
    for name, want in expected.items():
        gitdir = dest / name / ".git"
        if not gitdir.is_dir():
            problems.append(f"{dest / name} is not a git repository")
            continue
        expect = {"HEAD": want.head, f"{want.commit}^{{commit}}": want.commit}
        if want.tag is not None:
            expect[f"refs/tags/{want.tag}^{{commit}}"] = want.commit
        for ref, sha in expect.items():
            try:
                got = _git(["--git-dir", str(gitdir), "rev-parse", "--verify", ref], env=env)
            except ExampleError:
                got = ""
            if got != sha:
                problems.append(f"{dest / name}: {ref} is {got or 'missing'}, expected {sha}")
                break
    return problems


def _older_example(dest: Path, env: Mapping[str, str]) -> bool:
    """dest holds only repositories made by this generator (only its identity in any commit of
    any ref) with clean working trees: the example of another istiobuild version, nobody's work."""
    names = sorted(p.name for p in dest.iterdir())
    if not names or not set(names) <= set(COMPONENTS):
        return False
    for name in names:
        gitdir, tree = dest / name / ".git", dest / name
        try:
            people = _git(["--git-dir", str(gitdir), "log", "--all", "--format=%an <%ae>%n%cn <%ce>"], env=env)
            dirty = _git(["--git-dir", str(gitdir), "--work-tree", str(tree), "status", "--porcelain"], env=env)
        except ExampleError:
            return False
        if set(people.splitlines()) != {f"{_NAME} <{_EMAIL}>"} or dirty:
            return False
    return True


def generate(dest: Path, *, replace_older: bool = False) -> dict[str, ExampleRepo]:
    """Create dest/envoy, dest/proxy and dest/istio; return them by name.

    dest may be missing or an empty directory. If it already holds the expected repositories
    (same HEAD, pinned commit and tag) they are returned untouched. With `replace_older`, the repositories
    of another version of this generator (nothing else in dest, no commit by anyone else, clean trees) are
    replaced; anything else in dest raises ExampleError and is left as it is.
    """
    dest = Path(dest).absolute()
    with tempfile.TemporaryDirectory(prefix="istiobuild-example-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = git_env(home)
        staging = Path(tmp) / "repos"
        staging.mkdir()
        built = _build(staging, env)

        def at(root: Path) -> dict[str, ExampleRepo]:
            return {
                name: ExampleRepo(
                    name=name,
                    path=root / name,
                    commit=r.commit,
                    head=r.head,
                    tag=r.tag,
                    sha256=r.sha256,
                )
                for name, r in built.items()
            }

        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            problems = _existing(dest, built, env)
            if problems and replace_older and dest.is_dir() and _older_example(dest, env):
                older = dest.with_name(f".{dest.name}.older-{os.getpid()}")
                dest.rename(older)  # aside first: a stop in between leaves dest missing, made again next time
                _install(staging, dest)
                shutil.rmtree(older)
                return at(dest)
            if problems:
                raise ExampleError(
                    f"{dest} exists and does not hold the example repositories",
                    hint="\n".join([*problems, "choose another directory, or remove this one"]),
                )
            return at(dest)
        _install(staging, dest)
        return at(dest)


def _install(staging: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in COMPONENTS:
        shutil.move(str(staging / name), str(dest / name))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m istiobuild.example",
        description="Generate the miniature envoy, proxy and istio repositories of the `example` release.",
    )
    parser.add_argument("dest", type=Path, help="directory to create (missing or empty)")
    args = parser.parse_args(argv)
    try:
        repos = generate(args.dest)
    except IstiobuildError as e:
        print(e.render(), file=sys.stderr)
        return e.exit_code
    for repo in repos.values():
        tag = f"tag={repo.tag}" if repo.tag else "tag=-"
        print(f"{repo.name:<5}  {repo.path}  commit={repo.commit}  {tag}  head={repo.head}  sha256={repo.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

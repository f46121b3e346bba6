"""The pins of every Istio GA release, read from mirrors of istio/istio, istio/proxy and istio/envoy.

For a GA tag `1.N.P` of the istio mirror: the istio commit (the tag, peeled) and its committer time,
the `go` directive of go.mod, the proxy commit (istio.deps PROXY_REPO_SHA `lastStableSHA`), whether the
proxy's tag of the same name names that commit, the proxy's .bazelversion, and from the proxy WORKSPACE
the envoy http_archive: its URL (github.com/<org>/<repo>/archive/<commit>.tar.gz, spelled with ENVOY_ORG,
ENVOY_PROJECT, ENVOY_REPO, ENVOY_SHA or literally, as each era does), its sha256 and its own patches.
A fact that cannot be read is a `Missing` naming it and why; nothing is guessed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from istiobuild import validate
from istiobuild.errors import UsageError
from istiobuild.git import git
from istiobuild.release import Component
from istiobuild.upstream import mirror_repo

GA_TAG = re.compile(r"^1\.(\d+)\.(\d+)$")
FIRST_MINOR = 4  # 1.4.0 is the first GA release istiobuild covers
ENVOY_MIRROR_REPO = "istio/envoy"  # the envoy mirror is a copy of this repository (upstream.py)
_SHA1 = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_GO_VERSION = re.compile(r"^[0-9]+\.[0-9]+(?:\.[0-9]+)?(?:(?:rc|beta)[0-9]+)?$")
_BAZEL_VERSION = re.compile(r"^[0-9]+(?:\.[0-9]+){0,2}(?:-[A-Za-z0-9.]+)?$")
_ARCHIVE_URL = re.compile(r"^https://github\.com/([^/]+)/([^/]+)/archive/([0-9a-f]{40})\.tar\.gz$")
_ASSIGNMENT = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"([^"\\\n]*)"\s*(?:#.*)?$', re.M)
_ARCHIVE = re.compile(r"^http_archive\($(.*?)^\)", re.M | re.S)
_ATTRIBUTE = re.compile(r"^\s+(name|sha256|url|urls)\s*=\s*(.+?),?\s*$", re.M)
_TERM = re.compile(r'\s*(?:"([^"\\]*)"|([A-Za-z_][A-Za-z0-9_]*))\s*(\+|$)')
_PATCHES = re.compile(r"^\s+patches\s*=\s*\[(.*?)\]", re.M | re.S)


def version_key(version: str) -> tuple[int, ...]:
    """1.10.2 -> (1, 10, 2); names that are not all digits sort first."""
    parts = version.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (-1,)


def line_of(version: str) -> str:
    return ".".join(version.split(".")[:2])


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mirrors:
    """A directory holding the three mirrors (git repositories, bare or not)."""

    root: Path
    repos: Mapping[Component, Path]


def open_mirrors(text: str) -> Mirrors:
    """`--mirrors DIR`, checked: a directory holding proxy, envoy and istio git repositories."""
    validate.check_path_text(text, "--mirrors")
    root = Path(text).expanduser()
    hint = "pass --mirrors DIR naming a directory with git repositories proxy, envoy and istio (bare or not)"
    if not root.exists():
        raise UsageError(f"--mirrors {text}: no such directory", hint=hint)
    if not root.is_dir():
        raise UsageError(f"--mirrors {text} is not a directory", hint=hint)
    repos = {comp: mirror_repo(root, comp) for comp in Component}
    missing = [comp.value for comp, repo in repos.items() if not _is_repository(repo)]
    if missing:
        raise UsageError(f"--mirrors {text} holds no git repository {', '.join(missing)}", hint=hint)
    return Mirrors(root=root, repos=repos)


def _is_repository(path: Path) -> bool:
    """`path` is itself a git repository (not a directory inside another one)."""
    if not path.is_dir():
        return False
    found = git(path, "rev-parse", "--absolute-git-dir", check=False, what="check a mirror")
    where = Path(found.stdout.strip())
    return found.returncode == 0 and where in (path.resolve(), path.resolve() / ".git")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Missing:
    """A fact that could not be derived for a tag. Without a `required` one the release cannot be pinned."""

    fact: str
    why: str
    required: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvoyArchive:
    """The envoy http_archive of a proxy WORKSPACE."""

    repo: str  # owner/name of the archive URL
    commit: str
    sha256: str
    patches: int = 0  # patches the proxy applies to the archive itself (http_archive patches)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Facts:
    """Everything the mirrors say about one GA tag; "" / 0 / None where `missing` names the fact."""

    version: str
    istio_commit: str
    source_date_epoch: int = 0
    go: str = ""
    proxy_commit: str = ""
    proxy_tag: str = ""  # the proxy tag of the same name, when it names proxy_commit
    bazel_version: str = ""
    envoy: EnvoyArchive | None = None
    public_repo: str = ""  # for an envoy pinned in a private repository: where the same commit is public
    missing: tuple[Missing, ...] = ()

    @property
    def line(self) -> str:
        return line_of(self.version)

    @property
    def complete(self) -> bool:
        return not any(m.required for m in self.missing)


def ga_tags(repo: Path) -> dict[str, str]:
    """GA tags of 1.4 and later (`1.N.P`, no alpha/beta/rc) -> the commit each names, in version order."""
    tags = peeled_tags(repo)
    found = {t: c for t, c in tags.items() if (m := GA_TAG.match(t)) and int(m[1]) >= FIRST_MINOR}
    return dict(sorted(found.items(), key=lambda item: version_key(item[0])))


def peeled_tags(repo: Path) -> dict[str, str]:
    """Every tag named like a version -> the commit it names (annotated tags peeled)."""
    fmt = "%(refname:strip=2) %(objecttype) %(objectname) %(*objecttype) %(*objectname)"
    listed = git(repo, "for-each-ref", f"--format={fmt}", "--", "refs/tags/", what="list the tags").stdout
    tags: dict[str, str] = {}
    for row in listed.splitlines():
        name, kind, oid, *peeled = row.split()
        if not re.fullmatch(r"[0-9][0-9A-Za-z.-]*", name):
            continue
        if kind == "commit":
            tags[name] = oid
        elif peeled and peeled[0] == "commit":
            tags[name] = peeled[1]
        elif kind == "tag":  # a tag of a tag: let git peel it
            found = git(repo, "rev-parse", "--verify", "--end-of-options", f"{oid}^{{commit}}", check=False)
            if found.returncode == 0:
                tags[name] = found.stdout.strip()
    return tags


def committer_times(repo: Path, commits: Iterable[str]) -> dict[str, int]:
    """commit -> its committer time (seconds), for commits that exist."""
    wanted = sorted({c for c in commits if _SHA1.match(c)})
    if not wanted:
        return {}
    shown = git(repo, "log", "--no-walk=unsorted", "--format=%H %ct", *wanted, "--", what="read commit times")
    return {sha: int(when) for sha, when in (row.split() for row in shown.stdout.splitlines())}


class _Blobs:
    """File contents at commits, read once each."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._seen: dict[tuple[str, str], str | None] = {}

    def read(self, commit: str, path: str) -> str | None:
        key = (commit, path)
        if key not in self._seen:
            shown = git(self.repo, "show", f"{commit}:{path}", "--", check=False, what=f"read {path}")
            self._seen[key] = shown.stdout if shown.returncode == 0 else None
        return self._seen[key]

    def has_commit(self, commit: str) -> bool:
        key = (commit, "")
        if key not in self._seen:
            argv = ("rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}")
            found = git(self.repo, *argv, check=False, what="look up a commit")
            self._seen[key] = "" if found.returncode == 0 else None
        return self._seen[key] is not None


def read_facts(mirrors: Mirrors, versions: Sequence[str]) -> list[Facts]:
    """The facts of each GA tag in `versions` (tags of the istio mirror), in the order given."""
    istio_tags = ga_tags(mirrors.repos[Component.ISTIO])
    proxy_tags = peeled_tags(mirrors.repos[Component.PROXY])
    times = committer_times(mirrors.repos[Component.ISTIO], (istio_tags[v] for v in versions))
    reader = _Reader(
        istio=_Blobs(mirrors.repos[Component.ISTIO]),
        proxy=_Blobs(mirrors.repos[Component.PROXY]),
        envoy=_Blobs(mirrors.repos[Component.ENVOY]),
        proxy_tags=proxy_tags,
    )
    return [reader.facts(v, istio_tags[v], times.get(istio_tags[v], 0)) for v in versions]


@dataclasses.dataclass
class _Reader:
    istio: _Blobs
    proxy: _Blobs
    envoy: _Blobs
    proxy_tags: Mapping[str, str]

    def facts(self, version: str, commit: str, epoch: int) -> Facts:
        missing: list[Missing] = []
        if epoch <= 0:
            missing.append(Missing(fact="source_date_epoch", why=f"no committer time for istio {commit[:12]}"))
        go = _go_directive(self.istio.read(commit, "go.mod"), missing)
        proxy = _proxy_commit(self.istio.read(commit, "istio.deps"), missing)
        found = Facts(version=version, istio_commit=commit, source_date_epoch=epoch, go=go, proxy_commit=proxy)
        if proxy:
            found = self._proxy_facts(found, missing)
        return dataclasses.replace(found, missing=tuple(missing))

    def _proxy_facts(self, found: Facts, missing: list[Missing]) -> Facts:
        proxy, version = found.proxy_commit, found.version
        if not self.proxy.has_commit(proxy):
            missing.append(Missing(fact="proxy commit", why=f"istio.deps names {proxy}, not in the proxy mirror"))
            return found
        tag = self.proxy_tags.get(version)
        if tag != proxy:
            why = f"names {tag}, not {proxy} (istio.deps)" if tag else "does not exist in the proxy mirror"
            missing.append(Missing(fact="proxy tag", why=f"proxy tag {version} {why}"))
        bazel = (self.proxy.read(proxy, ".bazelversion") or "").strip()
        if not _BAZEL_VERSION.match(bazel):
            why = f"holds {bazel[:40]!r}, not a bazel version" if bazel else "is missing or empty"
            missing.append(Missing(fact="bazel_version", why=f"proxy .bazelversion at {proxy[:12]} {why}"))
            bazel = ""
        envoy = envoy_archive(self.proxy.read(proxy, "WORKSPACE") or "", missing)
        public = self._public_repo(envoy, missing) if envoy else ""
        return dataclasses.replace(
            found, proxy_tag=version if tag == proxy else "", bazel_version=bazel, envoy=envoy, public_repo=public
        )

    def _public_repo(self, envoy: EnvoyArchive, missing: list[Missing]) -> str:
        """For an archive in a private repository (`<org>-private/...`): the envoy mirror, if it has the commit."""
        if not envoy.repo.split("/")[0].endswith("-private"):
            return ""
        if self.envoy.has_commit(envoy.commit):
            return ENVOY_MIRROR_REPO
        why = f"{envoy.repo}@{envoy.commit[:12]} is not in the envoy mirror (a copy of {ENVOY_MIRROR_REPO})"
        missing.append(Missing(fact="envoy public_repo", why=why, required=False))
        return ""


def _go_directive(gomod: str | None, missing: list[Missing]) -> str:
    if gomod is None:
        missing.append(Missing(fact="go", why="istio has no go.mod at the tag"))
        return ""
    found = re.search(r"^go\s+(\S+)\s*(?://.*)?$", gomod, re.M)
    if not found or not _GO_VERSION.match(found[1]):
        missing.append(Missing(fact="go", why="istio go.mod has no `go` directive with a version"))
        return ""
    return found[1]


def _proxy_commit(deps: str | None, missing: list[Missing]) -> str:
    try:
        entries = json.loads(deps) if deps is not None else None
    except ValueError:
        entries = None
    if not isinstance(entries, list):
        missing.append(Missing(fact="proxy commit", why="istio has no readable istio.deps (a JSON list) at the tag"))
        return ""
    shas = [e.get("lastStableSHA") for e in entries if isinstance(e, dict) and e.get("name") == "PROXY_REPO_SHA"]
    if len(shas) != 1 or not isinstance(shas[0], str) or not _SHA1.match(shas[0]):
        missing.append(Missing(fact="proxy commit", why="istio.deps has no PROXY_REPO_SHA with a 40-hex lastStableSHA"))
        return ""
    return shas[0]


def envoy_archive(workspace: str, missing: list[Missing]) -> EnvoyArchive | None:
    """The `http_archive(name = "envoy", ...)` of a proxy WORKSPACE, its string expressions evaluated."""
    if not workspace:
        missing.append(Missing(fact="envoy", why="the proxy has no WORKSPACE at the commit"))
        return None
    variables = _variables(workspace)
    archives = []
    for block in _ARCHIVE.findall(workspace):
        attributes = {key: _evaluate(expr.strip(), variables) for key, expr in _ATTRIBUTE.findall(block)}
        if attributes.get("name") == "envoy":
            listed = _PATCHES.search(block)
            archives.append((attributes, len(re.findall(r'"[^"]*"', listed[1])) if listed else 0))
    if len(archives) != 1:
        missing.append(Missing(fact="envoy", why=f"the proxy WORKSPACE has {len(archives)} envoy http_archives"))
        return None
    attributes, patches = archives[0]
    url = attributes.get("url") or attributes.get("urls") or ""
    parsed = _ARCHIVE_URL.match(url)
    if not parsed or not all(_OWNER_NAME.match(p) for p in parsed.groups()[:2]):
        why = f"envoy url {url[:100]!r} is not https://github.com/<org>/<repo>/archive/<commit>.tar.gz"
        missing.append(Missing(fact="envoy repo", why=why))
        return None
    sha256 = attributes.get("sha256") or ""
    if not _SHA256.match(sha256):
        missing.append(Missing(fact="envoy sha256", why="the envoy http_archive has no 64-hex sha256 (ENVOY_SHA256)"))
        return None
    return EnvoyArchive(repo=f"{parsed[1]}/{parsed[2]}", commit=parsed[3], sha256=sha256, patches=patches)


def _variables(workspace: str) -> dict[str, str | None]:
    """Top-level `NAME = "value"` assignments; a name assigned two different values is None (ambiguous)."""
    found: dict[str, str | None] = {}
    for name, value in _ASSIGNMENT.findall(workspace):
        found[name] = value if found.get(name, value) == value else None
    return found


def _evaluate(expr: str, variables: Mapping[str, str | None]) -> str | None:
    """`"https://github.com/" + ENVOY_ORG + "/archive/"` -> the string; None for anything else.

    A list (`urls = [...]`) of one such expression is that expression."""
    if expr.startswith("[") and expr.endswith("]"):
        expr = expr[1:-1].strip().rstrip(",")
    parts: list[str] = []
    position = 0
    while position < len(expr):
        term = _TERM.match(expr, position)
        if not term or term.end() == position:
            return None
        value = term[1] if term[1] is not None else variables.get(term[2])
        if value is None:
            return None
        parts.append(value)
        position = term.end()
    return "".join(parts) if parts else None

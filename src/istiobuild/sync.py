"""`invoke sync-releases`: releases/*.toml kept in step with every GA tag upstream (1.4.0 to the newest).

The facts of each tag come from the mirrors (upstreamfacts.py). An entry already in a file is never
rewritten (it may carry comments): it is confirmed against the mirrors, and a tag whose commit moved
(or any pin that differs) stops the sync before anything is written. Missing tags are inserted in
version order into their line's file, `releases/<line>.toml`, created for a new line with
`status = "pinned"` (listed and checked, not buildable yet). Every file is validated by the loader
before the first write, written atomically, and shown as a unified diff; the same mirrors give the
same bytes, whether the entries are added at once or tag by tag.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from istiobuild import release, syncimages
from istiobuild.errors import DataError, UsageError
from istiobuild.fsutil import write_atomic
from istiobuild.release import Component, Release
from istiobuild.resources import data_dir
from istiobuild.upstreamfacts import (
    FIRST_MINOR,
    Facts,
    Mirrors,
    ga_tags,
    line_of,
    open_mirrors,
    read_facts,
    version_key,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_RELEASE_HEADER = re.compile(r'^\[release\."([^"]+)"\]')
_LINE_NAME = re.compile(r"^1\.(\d+)$")
_HEADER = """\
# Istio {line}.x: the pins of every GA release, written by `invoke sync-releases --mirrors DIR` from the
# upstream repositories at each tag: the istio commit and its committer time (source_date_epoch), the `go`
# directive of istio's go.mod; the proxy commit (istio.deps PROXY_REPO_SHA) and its .bazelversion; the envoy
# http_archive of the proxy WORKSPACE (repo from its URL: ENVOY_ORG / ENVOY_REPO, commit ENVOY_SHA, sha256
# ENVOY_SHA256). Running it again inserts later tags; it never rewrites an entry. status = "pinned": istiobuild
# lists and checks these releases but cannot build them until the line has a build mechanism (docs/formats.md).
schema = 1

[line]
name = "{line}"
status = "pinned"

[line.repos]
proxy = "https://github.com/istio/proxy"
envoy = "https://github.com/{{envoy_repo}}"
istio = "https://github.com/istio/istio"
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileChange:
    """One releases file before and after the sync ("" before: a new file)."""

    path: Path
    old: str
    new: str
    added: tuple[str, ...]
    derived: tuple[str, ...] = ()  # releases given the external_images they lacked

    def diff(self) -> str:
        label = f"{self.path.parent.name}/{self.path.name}"
        lines = difflib.unified_diff(
            self.old.splitlines(keepends=True),
            self.new.splitlines(keepends=True),
            fromfile=f"a/{label}" if self.old else "/dev/null",
            tofile=f"b/{label}",
        )
        return "".join(lines)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a sync found and would write."""

    facts: tuple[Facts, ...]  # every GA tag in scope, in version order
    kept: tuple[str, ...]  # releases already in the files, confirmed
    changes: tuple[FileChange, ...]

    @property
    def not_written(self) -> tuple[str, ...]:
        kept = set(self.kept)
        return tuple(f.version for f in self.facts if not f.complete and f.version not in kept)

    def reports(self) -> list[str]:
        """One line per tag with a fact that could not be derived."""
        lines = []
        for f in self.facts:
            if f.missing:
                facts = "; ".join(f"{m.fact} ({m.why})" for m in f.missing)
                tail = "; release not written" if f.version in self.not_written else ""
                lines.append(f"{f.version}: not derived: {facts}{tail}")
        return lines


def pins_of(facts: Facts) -> dict[str, str | None]:
    """The facts as the values a release entry holds; None where the mirrors could not tell."""
    envoy = facts.envoy
    missing = {m.fact for m in facts.missing}
    return {
        "istio commit": facts.istio_commit,
        "istio tag": facts.version,
        "source_date_epoch": str(facts.source_date_epoch) if facts.source_date_epoch else None,
        "go": facts.go or None,
        "proxy commit": facts.proxy_commit or None,
        "proxy tag": facts.proxy_tag or None,
        "bazel_version": facts.bazel_version or None,
        "envoy repo": envoy.repo if envoy else None,
        "envoy commit": envoy.commit if envoy else None,
        "envoy sha256": envoy.sha256 if envoy else None,
        "envoy public_repo": None if envoy is None or "envoy public_repo" in missing else facts.public_repo,
    }


def differences(rel: Release, facts: Facts) -> list[tuple[str, str, str]]:
    """(what, the release's value, the mirrors' value) wherever they disagree; unknown facts are skipped."""
    proxy, istio, envoy = (rel.pins[c] for c in (Component.PROXY, Component.ISTIO, Component.ENVOY))
    mine = {
        "istio commit": istio.commit,
        "istio tag": istio.tag,
        "source_date_epoch": str(rel.source_date_epoch),
        "go": rel.go,
        "proxy commit": proxy.commit,
        "proxy tag": proxy.tag,
        "bazel_version": rel.bazel_version,
        "envoy repo": envoy.repo,
        "envoy commit": envoy.commit,
        "envoy sha256": envoy.sha256,
        "envoy public_repo": envoy.public_repo,
    }
    theirs = pins_of(facts)
    return [(k, v, str(theirs[k])) for k, v in mine.items() if theirs[k] is not None and theirs[k] != v]


def _q(text: str) -> str:
    return json.dumps(text)  # a TOML basic string


def render_entry(facts: Facts, previous: Facts | None, inherited: Mapping[str, object]) -> str:
    """The `[release."<version>"]` table of a complete tag; line-level values it equals are left out."""
    envoy = facts.envoy
    assert envoy is not None, facts.version  # only complete facts are rendered
    lines = [f"[release.{_q(facts.version)}]"]
    if previous is not None and previous.proxy_commit == facts.proxy_commit:
        lines.append(f"# same proxy commit as {previous.version} ({facts.proxy_commit[:8]}), hence the same envoy pin")
    elif previous is not None and previous.envoy is not None and previous.envoy.commit == envoy.commit:
        lines.append(
            f"# same envoy commit as {previous.version} ({envoy.commit[:8]}), although the proxy commit is new"
        )
    if envoy.patches:
        lines.append(f"# the proxy WORKSPACE applies {envoy.patches} patch(es) of its own to this envoy (http_archive)")
    public = f"public_repo = {_q(facts.public_repo)}, " if facts.public_repo else ""
    lines += [
        f"proxy = {{ tag = {_q(facts.proxy_tag)}, commit = {_q(facts.proxy_commit)} }}",
        f"istio = {{ tag = {_q(facts.version)}, commit = {_q(facts.istio_commit)} }}",
        f"source_date_epoch = {facts.source_date_epoch}",
        f"envoy = {{ repo = {_q(envoy.repo)}, {public}commit = {_q(envoy.commit)}, sha256 = {_q(envoy.sha256)} }}",
    ]
    lines += [f"{key} = {_q(value)}" for key, value in _own_values(facts, inherited)]
    note = _private_note(facts)
    if note:
        lines.append(f"note = {_q(note)}")
    return "\n".join(lines) + "\n"


def _own_values(facts: Facts, inherited: Mapping[str, object]) -> list[tuple[str, str]]:
    values = (("bazel_version", facts.bazel_version), ("go", facts.go))
    return [(key, value) for key, value in values if inherited.get(key) != value]


def _private_note(facts: Facts) -> str:
    if facts.envoy is None or not facts.envoy.repo.split("/")[0].endswith("-private"):
        return ""
    pinned = f"proxy WORKSPACE pins {facts.envoy.repo}"
    if facts.public_repo:
        return f"{pinned}; the same commit is public in {facts.public_repo}"
    return f"{pinned}; the commit was not found in a public repository (the envoy mirror)"


def insert_entry(text: str, version: str, entry: str) -> str:
    """`entry` before the first release table of a later version (and the comments just above it), else at the end."""
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines):
        header = _RELEASE_HEADER.match(line)
        if header and version_key(header[1]) > version_key(version):
            start = number
            while start > 0 and lines[start - 1].lstrip().startswith("#"):
                start -= 1
            return "".join(lines[:start]) + entry + "\n" + "".join(lines[start:])
    body = text if text.endswith("\n") else text + "\n"
    return body + ("" if body.endswith("\n\n") else "\n") + entry


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Files:
    """The releases files as they are: every release, and the file of each line."""

    releases: Mapping[str, tuple[Release, Path]]
    files: Mapping[str, Path]  # line name -> file


def _read_files(directory: Path) -> _Files:
    releases: dict[str, tuple[Release, Path]] = {}
    files: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        loaded = release.load_file(path)
        for version, rel in loaded.items():
            releases[version] = (rel, path)
            files[rel.line] = path
    return _Files(releases=releases, files=files)


def _scope(tags: Mapping[str, str], line: str) -> list[str]:
    if not line:
        return list(tags)
    wanted = _LINE_NAME.match(line)
    if not wanted or int(wanted[1]) < FIRST_MINOR:
        raise UsageError(f"--line {line!r} is not a release line 1.{FIRST_MINOR} or later", hint="e.g. --line 1.20")
    found = [v for v in tags if line_of(v) == line]
    if not found:
        raise UsageError(f"--line {line}: the istio mirror has no GA tag {line}.N", hint="fetch the mirror again?")
    return found


def _in_scope(version: str, rel: Release, line: str) -> bool:
    """A GA release of a line sync covers (every 1.N from 1.4, or the one `--line` names)."""
    real = bool(_LINE_NAME.match(rel.line)) and version_key(version) >= (1, FIRST_MINOR)
    return real and rel.line == (line or rel.line)


def _conflicts(files: _Files, facts: Sequence[Facts], tags: Mapping[str, str], line: str) -> list[str]:
    """Moved tags, pins that differ from the mirrors, and pinned releases the mirror has no tag for."""
    problems = []
    for f in facts:
        if f.version not in files.releases:
            continue
        rel, path = files.releases[f.version]
        for what, old, new in differences(rel, f):
            if what == "istio commit":
                problems.append(
                    f"istio tag {f.version} moved: {path.name} pins {old}, the istio mirror's tag names {new}"
                )
            else:
                problems.append(f"release {f.version}: {path.name} has {what} {old}, the mirrors say {new}")
    for version, (rel, path) in files.releases.items():
        if _in_scope(version, rel, line) and version not in tags:
            problems.append(f"release {version} ({path.name}) is not a GA tag of the istio mirror (stale mirror?)")
    return problems


def plan(mirrors: Mirrors, directory: Path, *, line: str = "") -> Outcome:
    """Read the mirrors and the files; what the files would become. Raises DataError on a conflict."""
    files = _read_files(directory)
    tags = ga_tags(mirrors.repos[Component.ISTIO])
    facts = read_facts(mirrors, _scope(tags, line))
    problems = _conflicts(files, facts, tags, line)
    if problems:
        more = [f"also: {p}" for p in problems[1:6]] + ([f"... {len(problems) - 6} more"] if len(problems) > 6 else [])
        raise DataError(
            problems[0],
            hint="\n".join([*more, "nothing was written: sync never rewrites a release; check upstream, "
                            "then fix the file by hand if the change is real"]),
        )  # fmt: skip
    by_version = {f.version: f for f in facts}
    new: dict[str, list[str]] = {}
    for f in facts:
        if f.version not in files.releases and f.complete:
            new.setdefault(f.line, []).append(f.version)
    derive = {rel.line for v, (rel, _) in files.releases.items() if _in_scope(v, rel, line) and syncimages.wanted(rel)}
    istio = mirrors.repos[Component.ISTIO]
    changes = [
        _change(files.files.get(name, directory / f"{name}.toml"), name, new.get(name, []), by_version, istio)
        for name in sorted(set(new) | derive, key=version_key)
    ]
    kept = tuple(f.version for f in facts if f.version in files.releases)
    return Outcome(facts=tuple(facts), kept=kept, changes=tuple(c for c in changes if c.new != c.old))


def _change(path: Path, line_name: str, versions: Sequence[str], facts: Mapping[str, Facts], istio: Path) -> FileChange:
    """The file with the entries of `versions` inserted, rendered against its [line] values and validated, and the
    external images of every release of a buildable line that lacks them."""
    if path.exists():
        old = path.read_text()
        inherited = tomllib.loads(old).get("line", {})
        if inherited.get("name") != line_name:
            raise DataError(f"{path.name} is not the file of line {line_name}", hint=f"rename or fix {path}")
    else:
        old, inherited = "", {}
    new = old or _HEADER.format(line=line_name)
    for version in versions:
        new = insert_entry(new, version, render_entry(facts[version], _previous(version, facts), inherited))
    _validate(path.name, new, {v: facts[v] for v in versions})
    new, derived = _with_images(path.name, new, istio)
    return FileChange(path=path, old=old, new=new, added=tuple(versions), derived=derived)


def _with_images(name: str, text: str, istio: Path) -> tuple[str, tuple[str, ...]]:
    """`text` with external_images added where a release of a buildable line lacks them; those it has confirmed."""
    derived: list[str] = []
    before = text
    for version, rel in _load_text(name, text).items():
        if not syncimages.wanted(rel):
            continue
        images = syncimages.derive(rel, istio)
        if not rel.external_images:
            line = syncimages.render(images, syncimages.base_version(rel, istio))
            text = syncimages.insert(text, version, line)
            derived.append(version)
        elif syncimages.mine(rel) != images:
            theirs = ", ".join(sorted(images))
            raise DataError(
                f"release {version}: {name} has external_images {sorted(syncimages.mine(rel))}, the mirrors' "
                f"Dockerfiles name {theirs}",
                hint="nothing was written: sync never rewrites a release; fix the file by hand if the change is real",
            )
    if derived:
        syncimages.only_images_added(name, before, text, derived)
        _load_text(name, text)  # and the loader takes it
    return text, tuple(derived)


def _previous(version: str, facts: Mapping[str, Facts]) -> Facts | None:
    earlier = [v for v in facts if line_of(v) == line_of(version) and version_key(v) < version_key(version)]
    return facts[max(earlier, key=version_key)] if earlier else None


def _load_text(name: str, text: str) -> Mapping[str, Release]:
    with tempfile.TemporaryDirectory(prefix="istiobuild-sync-") as tmp:
        candidate = Path(tmp) / name
        candidate.write_text(text)
        return release.load_file(candidate)


def _validate(name: str, text: str, added: Mapping[str, Facts]) -> None:
    """The loader accepts the new text, and reads back exactly the facts of every added release."""
    loaded = _load_text(name, text)
    for version, facts in added.items():
        wrong = differences(loaded[version], facts)
        if wrong:
            raise DataError(f"{name}: release {version} would read back {wrong[0][0]} {wrong[0][1]}, not {wrong[0][2]}")


def write(outcome: Outcome) -> None:
    for change in outcome.changes:
        write_atomic(change.path, change.new)


def command(mirrors: str, *, check: bool, line: str = "", directory: Path | None = None) -> bool:
    """Print the diff (stdout) and what could not be derived (stderr); write unless `check`.

    True when nothing is left to do: with `check`, no change; always, every tag derived."""
    started = time.monotonic()
    found = open_mirrors(mirrors)
    outcome = plan(found, directory or data_dir("releases"), line=line)
    for change in outcome.changes:
        print(change.diff(), end="")
    if not check:
        write(outcome)
    for report in outcome.reports():
        print(report, file=sys.stderr)
    lines = sorted({f.line for f in outcome.facts}, key=version_key)
    added = sum(len(c.added) for c in outcome.changes)
    derived = sum(len(c.derived) for c in outcome.changes)
    images = f", external images derived for {derived}" if derived else ""
    verb = "would add" if check else "added"
    skipped = f", {len(outcome.not_written)} not written" if outcome.not_written else ""
    print(
        f"sync: {len(outcome.facts)} GA tags of {len(lines)} lines ({lines[0]} .. {lines[-1]}): "
        f"{len(outcome.kept)} already pinned, {verb} {added} to {len(outcome.changes)} files{skipped}{images} "
        f"({time.monotonic() - started:.1f} s)",
        file=sys.stderr,
    )
    return not outcome.not_written and not (check and outcome.changes)

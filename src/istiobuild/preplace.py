"""What istio's init scripts would download, pre-placed from this build (1.8+ lines, docs/lines.md).

From 1.14 istio has no knob for a local envoy: bin/init.sh downloads `envoy-<PROXY_REPO_SHA>` into
out/linux_<arch>/release unless the file is there, and copies it to `release/envoy` only after a download;
bin/build_ztunnel.sh (1.18+) does the same for `release/ztunnel-<ZTUNNEL_REPO_SHA>` and `out/linux_<arch>/ztunnel`.
The release line's `[line.mechanism] preplace` names every such path; this step fills the envoy and ztunnel ones
(the wasm ones come from the release's `downloads`), so nothing for another arch is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import json
import string
import struct
from pathlib import Path

from istiobuild import fsutil
from istiobuild.arch import Arch
from istiobuild.downloads import sha256_file
from istiobuild.elf import read as read_elf
from istiobuild.errors import StepFailed, UsageError
from istiobuild.executor import Executor
from istiobuild.mechanism import source_of
from istiobuild.steps import Action

ZTUNNEL_DEPS = "ZTUNNEL_REPO_SHA"


def deps_sha(istio: Path, name: str) -> str:
    """`lastStableSHA` of `name` in istio.deps ("" when it has no such entry); ValueError if it is malformed."""
    try:
        entries = json.loads((istio / "istio.deps").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{istio / 'istio.deps'} is not readable JSON: {exc}") from None
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and entry.get("name") == name:
            sha = entry.get("lastStableSHA")
            if not isinstance(sha, str) or not sha.isalnum():
                raise ValueError(f"istio.deps: {name} has no commit in lastStableSHA")
            return sha
    return ""


def check_ztunnel(path: Path, sha256: str, arch: Arch, *, what: str) -> None:
    """The supplied ztunnel is the file the user named by its sha256, and an ELF for the target arch."""
    if not path.is_file():
        raise UsageError(f"{what}: {path} is not a file", hint="give the ztunnel binary built for the target")
    found = sha256_file(path)
    if found != sha256:
        raise UsageError(
            f"{what}: {path} has sha256 {found}, not {sha256}",
            hint="give the ztunnel you checked, with its sha256 (--ztunnel-sha256); nothing was changed",
        )
    try:
        machine = read_elf(path)
    except (ValueError, struct.error) as exc:
        raise UsageError(f"{what}: {path} is not an ELF binary ({exc})", hint="give the ztunnel binary") from None
    if machine.arch is not arch:
        raise UsageError(
            f"{what}: {path} is a {machine.machine_name} binary, but the target is {arch}",
            hint=f"build ztunnel for {arch} (cargo build --target {arch.value}-unknown-linux-gnu) or take its "
            f"{arch.goarch} release binary",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlaceBuilt(Action):
    istio: Path
    envoy: Path  # the proxy stage's checked envoy
    paths: tuple[str, ...]  # preplace templates of source envoy or ztunnel, {goarch}/{proxy_sha}/{envoy_dir} known
    values: dict[str, str]
    ztunnel: Path | None
    ztunnel_sha256: str  # "" for a ztunnel this build makes with cargo (ztunnel.py): checked when it exists
    arch: Arch
    record: Path

    def render(self) -> str:
        shown = {**self.values, "ztunnel_sha": f"<{ZTUNNEL_DEPS} of istio.deps>"}
        parts = []
        for template in self.paths:
            dest = self.istio / string.Formatter().vformat(template, (), shown)
            src = (
                f"{self.envoy}"
                if source_of(template) == "envoy"
                else f"{self.ztunnel} ({f'sha256 {self.ztunnel_sha256}' if self.ztunnel_sha256 else 'built above'})"
                if self.ztunnel is not None
                else "(no ztunnel given: refused before any stage)"
            )
            parts.append(f"{src} -> {dest}")
        return f"pre-place (mode 0755, sha256 recorded in {self.record}): " + "; ".join(parts)

    def check(self) -> None:
        """Before any stage: a release with ztunnel paths has a valid supplied ztunnel."""
        needs = any(source_of(t) == "ztunnel" for t in self.paths)
        if needs and self.ztunnel is None:
            raise UsageError(
                "this release line's istio downloads ztunnel for amd64 unless it is pre-placed, and no ztunnel "
                "was given",
                hint=f"pass --ztunnel FILE --ztunnel-sha256 HEX (a ztunnel for {self.arch}), or --ztunnel-repo DIR "
                f"(a checkout of istio/ztunnel at istio.deps' {ZTUNNEL_DEPS}, built here with cargo)",
            )
        if self.ztunnel is not None and not needs:
            raise UsageError(
                "--ztunnel was given, but this release line's istio has no ztunnel",
                hint="leave --ztunnel out (ztunnel arrives in 1.18)",
            )
        if self.ztunnel is not None and self.ztunnel_sha256:
            check_ztunnel(self.ztunnel, self.ztunnel_sha256, self.arch, what="--ztunnel")

    def perform(self, ex: Executor) -> None:
        values = dict(self.values)
        sources: dict[str, Path] = {"envoy": self.envoy}
        if any(source_of(t) == "ztunnel" for t in self.paths):
            self.check()
            sources["ztunnel"] = self._staged_ztunnel()
            try:
                values["ztunnel_sha"] = deps_sha(self.istio, ZTUNNEL_DEPS)
            except ValueError as exc:
                raise StepFailed(str(exc), log=ex.log) from None
            if not values["ztunnel_sha"]:
                raise StepFailed(f"istio.deps pins no {ZTUNNEL_DEPS}, but the release line pre-places ztunnel")
        record = {}
        for template in self.paths:
            src = sources[source_of(template)]
            dest = self.istio / string.Formatter().vformat(template, (), values)
            if dest.parent.is_symlink() or not _inside(dest.parent, self.istio):
                raise StepFailed(f"{dest.parent} leads outside {self.istio}: nothing is written through it", log=ex.log)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fsutil.copy_atomic(src, dest, mode=0o755)
            record[str(dest)] = {
                "source": source_of(template),
                "from": str(self.ztunnel if source_of(template) == "ztunnel" else src),
                "sha256": sha256_file(dest),
                **({"built": True} if source_of(template) == "ztunnel" and not self.ztunnel_sha256 else {}),
            }
        fsutil.write_json(self.record, record)
        ex.console.info(f"pre-placed {len(record)} files: {', '.join(Path(p).name for p in record)}")

    def _staged_ztunnel(self) -> Path:
        """One private copy of the ztunnel, checked (its sha256, its ELF) and then copied to every path: a file
        swapped while the build runs cannot reach one path and not the other."""
        assert self.ztunnel is not None
        staged = self.record.parent / "ztunnel.staged"
        fsutil.copy_atomic(self.ztunnel, staged, mode=0o755)
        what = "--ztunnel" if self.ztunnel_sha256 else "the built ztunnel"
        check_ztunnel(staged, self.ztunnel_sha256 or sha256_file(staged), self.arch, what=what)
        return staged


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckPlaced(Action):
    """After istio's make: every pre-placed file is still the one placed (its sha256 in the record). istio's
    scripts overwrite them when the environment asks (build_ztunnel.sh copies its own cargo build over
    out/linux_<arch>/ztunnel when BUILD_ZTUNNEL_REPO is set, say): such a build is refused, not packed."""

    record: Path

    def render(self) -> str:
        return f"check that every file {self.record} lists still has the sha256 it was placed with"

    def perform(self, ex: Executor) -> None:
        placed = json.loads(self.record.read_text())
        for path, entry in placed.items():
            now = sha256_file(Path(path)) if Path(path).is_file() else "(missing)"
            if now != entry["sha256"]:
                raise StepFailed(
                    f"{path} changed during istio's make: placed with sha256 {entry['sha256']}, now {now} "
                    "(istio's scripts replaced it; BUILD_ZTUNNEL_REPO or a similar variable in your environment?)",
                    log=ex.log,
                )


def _inside(path: Path, root: Path) -> bool:
    """`path` (as it resolves, symlinks followed) is `root` or under it."""
    return path.resolve().is_relative_to(root.resolve())

"""ztunnel built with cargo from the commit istio pins, for the target (`--ztunnel-repo DIR`, 1.18+ lines).

istio's bin/build_ztunnel.sh builds ztunnel when BUILD_ZTUNNEL_REPO names a checkout (`cargo build
--profile=<p> --target=<BUILD_ZTUNNEL_TARGET>`, output out/rust/<target>/<profile>/ztunnel), but then still
downloads the amd64 release binary unless release/ztunnel-<ZTUNNEL_REPO_SHA> exists. So istiobuild runs that
cargo build itself, on an export of istio.deps' ZTUNNEL_REPO_SHA from the user's repository (`git archive`, no
replace refs, no fsmonitor: nothing of its working tree, untracked files or build output reaches the build; the
repository is never changed) in the workdir, with the caller's Rust flags and wrappers cleared, and the result is
pre-placed like a supplied ztunnel (preplace.py).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tarfile
from pathlib import Path

from istiobuild import fsutil
from istiobuild.arch import Arch
from istiobuild.downloads import sha256_file
from istiobuild.elf import read as read_elf
from istiobuild.errors import StepFailed, ToolError, UsageError
from istiobuild.executor import Executor
from istiobuild.git import git
from istiobuild.preplace import ZTUNNEL_DEPS, deps_sha
from istiobuild.run import run, which
from istiobuild.steps import Action, Command

PROFILE = "release"
# Nothing of the caller's Rust configuration reaches the build (as GOFLAGS for Go): recorded inputs only.
CLEARED = ("RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RUSTDOCFLAGS", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER",
           "CARGO_BUILD_RUSTFLAGS", "CARGO_BUILD_TARGET_DIR", "RUSTUP_TOOLCHAIN", "CARGO_INCREMENTAL")  # fmt: skip
_SAFE_GIT = ("core.fsmonitor=false", "core.hooksPath=/dev/null")
# How cargo fetches and prints, not what it builds: left to the caller.
_CARGO_HARMLESS = ("CARGO_HOME", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_", "CARGO_REGISTRY_", "CARGO_TERM_")
CROSS_LINKER = {Arch.AARCH64: "aarch64-linux-gnu-gcc", Arch.X86_64: "x86_64-linux-gnu-gcc"}


def rust_triple(arch: Arch) -> str:
    return f"{arch.value}-unknown-linux-gnu"


def output(src: Path, arch: Arch) -> Path:
    """Where cargo writes the binary in the exported tree (ztunnel's layout: target-dir out/rust)."""
    return src / "out" / "rust" / rust_triple(arch) / PROFILE / "ztunnel"


def rustc_beside(cargo: str) -> str:
    """The rustc next to `cargo` (Debian's /usr/bin pair, a rustup toolchain's bin), else the one on PATH."""
    found = which(cargo)
    sibling = Path(found).parent / "rustc" if found else None
    return str(sibling) if sibling is not None and sibling.is_file() else "rustc"


def ancestor_configs(src: Path) -> list[Path]:
    """The cargo configuration files cargo applies from the directories above the export (it searches every parent;
    CARGO_HOME is ours). Not ours to remove: the build records them with their sha256, and says so."""
    return [
        config
        for parent in src.resolve().parents
        for config in (parent / ".cargo" / "config", parent / ".cargo" / "config.toml")
        if config.is_file()
    ]


def pinned_sha(istio: Path, ex: Executor) -> str:
    """istio.deps' ZTUNNEL_REPO_SHA ("" when it pins none); an unreadable istio.deps fails the step."""
    try:
        return deps_sha(istio, ZTUNNEL_DEPS)
    except ValueError as exc:
        raise StepFailed(str(exc), log=ex.log) from None


def require_commit(repo: Path, sha: str) -> None:
    """The user's ztunnel repository has the commit istio pins (read only, no replace refs)."""
    env = {"GIT_NO_REPLACE_OBJECTS": "1"}
    found = git(repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False, env=env, config=_SAFE_GIT)
    if found.returncode != 0:
        raise UsageError(
            f"--ztunnel-repo {repo} does not have the ztunnel commit istio pins ({sha})",
            hint=f"git -C {repo} fetch origin {sha} (istiobuild only reads the repository); nothing was built yet",
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckZtunnelSource(Action):
    """Right after the checkout, before the long envoy build: the commit istio.deps pins is in --ztunnel-repo."""

    repo: Path
    istio: Path

    def render(self) -> str:
        return f"check that {self.repo} has istio.deps' {ZTUNNEL_DEPS} (read only), before envoy is built"

    def perform(self, ex: Executor) -> None:
        sha = pinned_sha(self.istio, ex)
        if sha:
            require_commit(self.repo, sha)
            ex.console.info(f"ztunnel {sha[:12]} is in {self.repo}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BuildZtunnel(Action):
    repo: Path  # the user's repository: only read (git archive of the pinned commit)
    src: Path  # the export, in the workdir, rebuilt from scratch every time
    istio: Path
    arch: Arch
    host: Arch
    cargo: str
    cargo_home: Path
    epoch: int
    record: Path

    def env(self) -> dict[str, str]:
        env = {
            **dict.fromkeys(CLEARED, ""),
            "CARGO_HOME": str(self.cargo_home),
            "CARGO_TARGET_DIR": str(self.src / "out" / "rust"),
            "RUSTC": rustc_beside(self.cargo),
            "SOURCE_DATE_EPOCH": str(self.epoch),
        }
        if self.arch != self.host:
            env[f"CARGO_TARGET_{rust_triple(self.arch).upper().replace('-', '_')}_LINKER"] = CROSS_LINKER[self.arch]
        return env

    def argv(self) -> list[str]:
        return [self.cargo, "build", "--locked", "--profile", PROFILE, "--target", rust_triple(self.arch)]

    def render(self) -> str:
        settings = " ".join(f"{k}={v}" for k, v in sorted(self.env().items()))
        return (
            f"export istio.deps {ZTUNNEL_DEPS} from {self.repo} (git archive, no replace refs; the repository is "
            f"only read) into a fresh {self.src}; run ({settings}) {' '.join(self.argv())} there; "
            f"{output(self.src, self.arch)} must be an ELF for {self.arch}; record the commit, cargo and rustc "
            f"versions and its sha256 in {self.record}"
        )

    def check(self) -> None:
        """Before any stage: cargo runs, its rustc has the target's standard library, and no CARGO_* variable of the
        caller would change what it builds."""
        changing = sorted(
            name
            for name in os.environ
            if name.startswith("CARGO_") and name not in self.env() and not name.startswith(_CARGO_HARMLESS)
        )
        if changing:
            raise UsageError(
                f"{', '.join(changing)} in your environment would change the ztunnel cargo builds (--ztunnel-repo)",
                hint="unset it for the build; the build sets what it needs itself (docs/lines.md)",
            )
        if which(self.cargo) is None:
            raise ToolError(
                f"cargo ({self.cargo}) not found: --ztunnel-repo builds ztunnel with it",
                hint="install Rust (Debian: apt-get install cargo rustc) or pass --cargo PATH",
            )
        rustc = rustc_beside(self.cargo)
        sysroot = run([rustc, "--print", "sysroot"], capture=True, check=False, what="rustc's sysroot")
        triple = rust_triple(self.arch)
        if sysroot.returncode != 0 or not (Path(sysroot.stdout.strip()) / "lib" / "rustlib" / triple).is_dir():
            raise ToolError(
                f"{rustc} has no standard library for {triple}: ztunnel cannot be built for {self.arch}",
                hint=f"rustup target add {triple}, or (Debian) apt-get install libstd-rust-dev:{self.arch.goarch} "
                "and pass --cargo /usr/bin/cargo",
            )

    def perform(self, ex: Executor) -> None:
        sha = pinned_sha(self.istio, ex)
        if not sha:
            raise StepFailed(f"istio.deps pins no {ZTUNNEL_DEPS}: this istio has no ztunnel to build", log=ex.log)
        self._export(sha, ex)
        ex.command(Command(argv=tuple(self.argv()), cwd=self.src, env=self.env(), description="ztunnel"))
        binary = output(self.src, self.arch)
        if not binary.is_file() or read_elf(binary).arch is not self.arch:
            raise StepFailed(f"cargo finished but {binary} is not an ELF for {self.arch}", log=ex.log)
        tools = (which(self.cargo) or self.cargo, rustc_beside(self.cargo))
        versions = {
            tool: run([tool, "--version"], capture=True, what=f"{tool} --version").stdout.strip() for tool in tools
        }
        configs = {str(c): sha256_file(c) for c in ancestor_configs(self.src)}
        for config in configs:
            ex.console.warning(f"cargo applied {config} (a directory above the workdir) to the ztunnel build; recorded")
        fsutil.write_json(
            self.record,
            {
                "commit": sha,
                "binary": str(binary),
                "sha256": sha256_file(binary),
                "versions": versions,
                "cargo_configs": configs,
            },
        )
        ex.console.info(f"ztunnel {sha[:12]} built for {self.arch} ({', '.join(versions.values())})")

    def _export(self, sha: str, ex: Executor) -> None:
        env = {"GIT_NO_REPLACE_OBJECTS": "1"}
        require_commit(self.repo, sha)
        shutil.rmtree(self.src, ignore_errors=True)
        self.src.mkdir(parents=True)
        tar = self.src.parent / f"{self.src.name}.tar"
        git(self.repo, "archive", "--format=tar", "-o", str(tar), sha, env=env, config=_SAFE_GIT, log=ex.log)
        with tarfile.open(tar) as archive:
            archive.extractall(self.src, filter="data")
        tar.unlink()

"""Every path istiobuild reads or writes, derived in one place from the workdir, cache, release and arch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from istiobuild.arch import Arch
from istiobuild.release import Component


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    workdir: Path
    cache: Path
    release: str
    arch: Arch

    # -- shared by every build in the workdir
    @property
    def lock(self) -> Path:
        return self.workdir / ".istiobuild.lock"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def example_upstream(self) -> Path:
        """Where the miniature example repositories are generated."""
        return self.workdir / "example-upstream"

    def git_cache(self, component: Component) -> Path:
        return self.cache / "git" / f"{component.value}.git"

    @property
    def bazel_root(self) -> Path:
        return self.cache / "bazel-root"

    @property
    def bazel_disk(self) -> Path:
        return self.cache / "bazel-disk"

    @property
    def bazel_logging(self) -> Path:
        """java.util.logging config for the bazel server: keeps its command lines out of java.log."""
        return self.cache / "bazel-logging.properties"

    @property
    def secrets(self) -> Path:
        return self.cache / "secrets"

    @property
    def downloads(self) -> Path:
        return self.cache / "downloads"

    @property
    def debs(self) -> Path:
        return self.cache / "debs"

    @property
    def rootfs(self) -> Path:
        return self.cache / "rootfs"

    @property
    def builder_home(self) -> Path:
        return self.cache / "builder-home"

    @property
    def cross_bin(self) -> Path:
        return self.cache / "toolchain" / self.arch.value / "bin"

    # -- per release
    @property
    def release_dir(self) -> Path:
        return self.workdir / self.release

    def checkout(self, component: Component) -> Path:
        return self.release_dir / component.value

    # -- per release and arch
    @property
    def out_dir(self) -> Path:
        return self.workdir / f"{self.release}-{self.arch.value}"

    @property
    def artifacts(self) -> Path:
        return self.out_dir / "artifacts"

    @property
    def stamps(self) -> Path:
        return self.out_dir / "stamps"

    @property
    def probe(self) -> Path:
        return self.out_dir / "toolchain-probe"

    @property
    def scratch(self) -> Path:
        return self.out_dir / "image-scratch"

    @property
    def bazel_rc(self) -> Path:
        """The 0600 rc file holding the remote cache secrets for this build."""
        return self.secrets / f"bazel-{self.release}-{self.arch.value}.rc"

    def record(self, name: str) -> Path:
        """A JSON record of this build: patches, toolchain, envoy, istio, downloads, verify, pushed, build-record."""
        folder = self.artifacts if name in ("envoy", "istio", "downloads") else self.out_dir
        return folder / f"{name}.json"

    def log(self, stage: str) -> Path:
        return self.logs / f"{self.release}-{self.arch.value}-{stage}.log"

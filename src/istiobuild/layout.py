"""Every path istiobuild reads or writes, derived in one place from the workdir, cache, release and arch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from istiobuild.arch import Arch
from istiobuild.cache import part_dir
from istiobuild.release import Component


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    workdir: Path
    cache: Path  # shared by every workdir (cache.py): git objects, bazel disk/repository caches, Go caches, downloads
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

    @property
    def workdir_cache(self) -> Path:
        """What belongs to this workdir alone (bazel's output root, the children's HOME, secret files, scratch):
        no other build sees it, and removing the workdir frees it."""
        return self.workdir / "cache"

    def git_cache(self, component: Component) -> Path:
        return part_dir(self.cache, "git") / f"{component.value}.git"

    @property
    def bazel_root(self) -> Path:
        """--output_user_root: the output bases (keyed by the checkout's path) and the servers of this workdir."""
        return self.workdir_cache / "bazel-root"

    @property
    def bazel_disk(self) -> Path:
        return part_dir(self.cache, "bazel-disk")

    @property
    def bazel_repo(self) -> Path:
        """--repository_cache: the archives bazel downloads (http_archive ...), by sha256."""
        return part_dir(self.cache, "bazel-repo")

    @property
    def bazel_logging(self) -> Path:
        """java.util.logging config for the bazel server: keeps its command lines out of java.log."""
        return self.workdir_cache / "bazel-logging.properties"

    @property
    def secrets(self) -> Path:
        return self.workdir_cache / "secrets"

    @property
    def downloads(self) -> Path:
        return part_dir(self.cache, "downloads")

    @property
    def debs(self) -> Path:
        return self.workdir_cache / "debs"

    @property
    def rootfs(self) -> Path:
        return self.workdir_cache / "rootfs"

    @property
    def builder_home(self) -> Path:
        return self.workdir_cache / "builder-home"

    @property
    def toolchain_bin(self) -> Path:
        """Links to the profile's CC/CXX/AR/NM (named for the target in a cross build), first on the build's PATH."""
        return part_dir(self.cache, "toolchain") / self.arch.value / "bin"

    @property
    def cross_bin(self) -> Path:
        return self.toolchain_bin

    @property
    def home(self) -> Path:
        """The private HOME of the build's make children: ~/.cache/bazel, ~/.bazelrc, Go's and git's user
        configuration resolve here, never in the caller's home."""
        return self.workdir_cache / "home"

    @property
    def home_env(self) -> dict[str, str]:
        """HOME and the XDG directories derived from it, for the make children of the proxy and istio stages."""
        return {
            "HOME": str(self.home),
            "XDG_CACHE_HOME": str(self.home / ".cache"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
        }

    @property
    def bazelisk_home(self) -> Path:
        return part_dir(self.cache, "bazelisk")

    @property
    def go_build_cache(self) -> Path:
        """GOCACHE: content-addressed, safe to share between builds."""
        return part_dir(self.cache, "go-build")

    @property
    def go_mod_cache(self) -> Path:
        """GOMODCACHE (Go >= 1.15; older Go keeps modules in $GOPATH/pkg/mod, also in the workdir)."""
        return part_dir(self.cache, "go-mod")

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
    def gopath(self) -> Path:
        """GOPATH of istio's make (1.4.x puts its out/ and bin/ there; 1.5.x its bin/ and -pkgdir)."""
        return self.out_dir / "gopath"

    @property
    def buildinfo(self) -> Path:
        """The BUILDINFO file istio's common/scripts/gobuild.sh turns into -X ldflags."""
        return self.out_dir / "istio-buildinfo"

    @property
    def workspace_status(self) -> Path:
        """bazel's --workspace_status_command for the proxy build (the stamped revision and status)."""
        return self.out_dir / "proxy-workspace-status"

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

"""Stage proxy: envoy built with bazel through the proxy's own `make build_envoy`, collected and checked."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from istiobuild import container, fsutil, procs, secrets
from istiobuild.arch import Arch
from istiobuild.downloads import sha256_file
from istiobuild.elf import is_elf
from istiobuild.elf import read as read_elf
from istiobuild.errors import StepFailed, ToolError
from istiobuild.executor import Executor
from istiobuild.release import Component
from istiobuild.run import which
from istiobuild.steps import Action, PlanInput, Stage, StageName, Step
from istiobuild.targets import run_target
from istiobuild.toolchain import Family

# The bazel server logs every command line it receives (rc file options and the client's environment
# included) at INFO in java.log; this keeps that one logger at WARNING so no secret lands there.
LOGGING = """handlers=com.google.devtools.build.lib.util.SimpleLogHandler
.level=INFO
com.google.devtools.build.lib.server.GrpcServerImpl.level=WARNING
com.google.devtools.build.lib.util.SimpleLogHandler.level=INFO
com.google.devtools.build.lib.util.SimpleLogHandler.prefix={root}/java.log
com.google.devtools.build.lib.util.SimpleLogHandler.limit=1024000
com.google.devtools.build.lib.util.SimpleLogHandler.total_limit=20971520
com.google.devtools.build.lib.util.SimpleLogHandler.formatter=com.google.devtools.build.lib.util.SingleLineFormatter
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrossLinks(Action):
    """CC/CXX for the target as links named for it, in a directory of their own (bazel's autoconfig)."""

    bindir: Path
    links: tuple[tuple[str, str], ...]  # (link name, compiler)

    def render(self) -> str:
        pairs = ", ".join(f"{self.bindir / link} -> {name}" for link, name in self.links)
        return f"link the compilers under target-named names: {pairs}"

    def perform(self, ex: Executor) -> None:
        self.bindir.mkdir(parents=True, exist_ok=True)
        for link, name in self.links:
            target = which(name)
            if target is None:
                raise ToolError(f"{name} is not installed", hint="`invoke doctor` lists the tools the build needs")
            tmp = self.bindir / f".{link}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            tmp.replace(self.bindir / link)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BazelFiles(Action):
    """The bazel server's logging config, and (with secrets) the 0600 rc file holding them."""

    logging: Path
    root: Path
    rc: Path | None

    def render(self) -> str:
        text = f"write {self.logging} (the bazel server logs no command lines, so no secret reaches java.log)"
        if self.rc is not None:
            text += f"; write {self.rc} (0600: the remote cache URL/header, secrets; removed after the stage)"
        return text

    def perform(self, ex: Executor) -> None:
        fsutil.write_atomic(self.logging, LOGGING.format(root=self.root))
        if self.rc is not None:
            # bazel splits rc lines like a shell: quote each flag so a value with spaces stays one flag
            secrets.write_secret_file(self.rc, "".join(f"build {shlex.quote(f)}\n" for f in secret_flags(ex)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CollectEnvoy(Action):
    built: Path
    dest: Path
    record: Path
    arch: Arch
    host: Arch

    def render(self) -> str:
        return (
            f"copy {self.built} to {self.dest} with its sha256, check it is an ELF for {self.arch}, "
            f"run it with --version" + (" under qemu-user" if self.arch != self.host else "")
        )

    def perform(self, ex: Executor) -> None:
        if not self.built.exists():
            raise StepFailed(f"the proxy build finished but {self.built} does not exist", log=ex.log)
        real = self.built.resolve()
        info = read_elf(real) if is_elf(real) else None
        if info is None or info.arch is not self.arch:
            what = "not an ELF binary" if info is None else f"a {info.machine_name} binary"
            raise StepFailed(f"{self.built} is {what}, but the target is {self.arch}", log=ex.log)
        fsutil.copy_atomic(real, self.dest, 0o755)
        digest = sha256_file(self.dest)
        fsutil.write_atomic(self.dest.with_name(self.dest.name + ".sha256"), f"{digest}  {self.dest.name}\n")
        version = run_target(self.dest, "--version", arch=self.arch, host=self.host, log=ex.log)
        fsutil.write_json(
            self.record,
            {
                "path": str(self.dest),
                "sha256": digest,
                "arch": self.arch.value,
                "compiler": info.compiler,
                "comment": "; ".join(info.comment),
                "version": version,
            },
        )
        first = version.splitlines()[0] if version else ""
        ex.console.info(f"envoy {digest[:16]} ({self.arch}, {info.compiler}): {first}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportRemoteCache(Action):
    """bazel builds on without a remote cache it cannot use (down, refusing the header or the
    credentials) and only warns in its output: say so on screen, once."""

    log: Path

    def render(self) -> str:
        return f"count bazel's remote cache warnings in {self.log} and report them"

    def perform(self, ex: Executor) -> None:
        count = 0
        with self.log.open("rb") as fh:
            for line in fh:
                count += b"WARNING: Reading from Remote Cache" in line or b"WARNING: Writing to Remote Cache" in line
        if count:
            ex.console.info(
                f"warning: bazel could not use the remote cache ({count} warnings: refused, unreachable or failing); "
                f"it built without it. Details in {self.log}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class StopBazel(Action):
    root: Path

    def render(self) -> str:
        return f"stop the bazel servers under {self.root} (CI: no idle server keeps its memory)"

    def perform(self, ex: Executor) -> None:
        procs.stop_bazel_servers(self.root)


def secret_flags(ex: Executor) -> list[str]:
    """The bazel flags that carry secrets: a cache URL with credentials, the remote header."""
    flags = []
    if ex.settings.remote_cache and secrets.split_credentials(ex.settings.remote_cache)[1]:
        flags.append(f"--remote_cache={ex.settings.remote_cache}")
    if ex.settings.remote_header:
        flags.append(f"--remote_header={ex.settings.remote_header}")
    return flags


def _has_secrets(p: PlanInput) -> bool:
    return bool(p.settings.remote_header or secrets.split_credentials(p.settings.remote_cache)[1])


def _bazel_args(p: PlanInput, envoy_dir: Path) -> list[str]:
    args = [
        f"--override_repository=envoy={envoy_dir}",
        "--action_env=GN",
        "--action_env=NINJA",
        f"--disk_cache={p.layout.bazel_disk}",
        "--verbose_failures",
    ]
    if p.settings.jobs:
        args.append(f"--jobs={p.settings.jobs}")
    if p.settings.remote_cache and not secrets.split_credentials(p.settings.remote_cache)[1]:
        args.append(f"--remote_cache={p.settings.remote_cache}")
    if p.toolchain.family is Family.GCC:
        args.append("--action_env=BAZEL_COMPILER")
    if p.arch != p.host and p.toolchain.family is Family.CLANG:
        # clang cross-compiles with --target; a gcc cross compiler is named by CC itself.
        args += [f"--copt=--target={p.arch.triple}", f"--linkopt=--target={p.arch.triple}"]
    return args


def _startup_args(p: PlanInput) -> str:
    rc = p.layout.bazel_rc if _has_secrets(p) else Path("/dev/null")
    return " ".join(
        (
            f"--output_user_root={p.layout.bazel_root}",
            f"--bazelrc={rc}",
            f"--host_jvm_args=-Xmx{p.settings.jvm_heap}",
            f"--host_jvm_args=-Djava.util.logging.config.file={p.layout.bazel_logging}",
            f"--max_idle_secs={60 if p.ci else 600}",
        )
    )


def _cross(p: PlanInput, env: dict[str, str], configs: list[str]) -> tuple[list[Step], list[str]]:
    """Cross builds: bazel's autoconfigured C++ toolchain probes CC and links with -B<dir of CC>, so CC and
    CXX must name the target themselves and live in a directory of their own (not /usr/bin and its ld)."""
    if p.arch == p.host:
        return [], configs
    links = []
    for var in ("CC", "CXX"):
        name = env[var]
        link = name if name.startswith(f"{p.arch.triple}-") else f"{p.arch.triple}-{name}"
        links.append((link, name))
        env[var] = str(p.layout.cross_bin / link)
    if "libc++" in configs:
        # Debian's libc++ for another arch cannot be installed beside the host's: link libstdc++ instead.
        configs = ["clang" if c == "libc++" else c for c in configs]
        env.update(BAZEL_CXXOPTS="-std=c++17", BAZEL_LINKLIBS="-l%:libstdc++.a:-lm")
    return [CrossLinks(bindir=p.layout.cross_bin, links=tuple(links))], configs


def plan(p: PlanInput) -> Stage:
    proxy_dir, envoy_dir = p.checkout(Component.PROXY), p.checkout(Component.ENVOY)
    env = {**p.toolchain.env_for(p.arch, p.host), "GN": p.settings.gn, "NINJA": p.settings.ninja}
    cross, configs = _cross(p, env, list(p.toolchain.bazel_configs))
    if p.settings.bazel_version:
        env["USE_BAZEL_VERSION"] = p.settings.bazel_version
    argv = [
        "make",
        "build_envoy",
        f"BAZEL_BUILD_ARGS={' '.join(_bazel_args(p, envoy_dir))}",
        f"BAZEL_CONFIG_REL={' '.join(f'--config={c}' for c in configs)}",
        f"BAZEL_STARTUP_ARGS={_startup_args(p)}",
    ]
    built, dest = proxy_dir / p.release.envoy_output, p.layout.artifacts / "envoy"
    rc = p.layout.bazel_rc if _has_secrets(p) else None
    steps: list[Step] = [
        *cross,
        BazelFiles(logging=p.layout.bazel_logging, root=p.layout.bazel_root, rc=rc),
        container.command(p, argv, proxy_dir, env, "bazel build; wee8 via gn/ninja from GN/NINJA"),
        CollectEnvoy(built=built, dest=dest, record=p.layout.record("envoy"), arch=p.arch, host=p.host),
    ]
    if p.settings.remote_cache:
        steps.append(ReportRemoteCache(log=p.layout.log("proxy")))
    if p.ci:
        steps.append(StopBazel(root=p.layout.bazel_root))
    notes = [f"wee8 {p.release.wee8} is built by a genrule running gn and ninja"] if p.release.wee8 else []
    if rc is not None:
        notes.append(f"the remote cache secrets are read from {rc} (0600), never from argv or the environment")
    return Stage(
        name=StageName.PROXY,
        summary=f"build envoy ({p.release.envoy_target}) with bazel through the proxy's make build_envoy",
        steps=tuple(steps),
        reads=(proxy_dir, envoy_dir),
        produces=(dest, p.layout.record("envoy")),
        secret_files=(rc,) if rc is not None else (),
        bazel_roots=(p.layout.bazel_root,),
        notes=tuple(notes),
    )

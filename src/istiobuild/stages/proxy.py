"""Stage proxy: envoy built with bazel through the proxy's own `make build_envoy`, collected and checked."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from istiobuild import container, fsutil, procs, remotecache, secrets
from istiobuild.arch import Arch
from istiobuild.downloads import sha256_file
from istiobuild.elf import is_elf
from istiobuild.elf import read as read_elf
from istiobuild.errors import StepFailed, ToolError
from istiobuild.executor import Executor
from istiobuild.release import Component
from istiobuild.run import run, which
from istiobuild.stages import record
from istiobuild.steps import Action, Command, PlanInput, Stage, StageName, Step
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


TOOLS = ("CC", "CXX", "AR", "NM")

# Prints, for each of CC CXX AR NM: "@@ VAR<tab>the name<tab>where it resolves<tab>the real file", then
# its --version output (run where the build runs: on the host, or in the builder).
REPORT = (
    "for v in " + " ".join(TOOLS) + '; do eval "t=\\${$v}"; p=$(command -v "$t") || { echo "$v: $t not found" >&2; '
    'exit 127; }; printf "@@ %s\\t%s\\t%s\\t%s\\n" "$v" "$t" "$p" "$(readlink -f "$p")"; "$t" --version 2>&1; done'
)

# What upstream's tools/bazel_get_workspace_status prints (identical at proxy 1.4.x and 1.5.x), with
# fixed values: the proxy pin instead of `git rev-parse`, our series instead of Clean/Modified.
WORKSPACE_STATUS = """#!/bin/sh
# Written by istiobuild: bazel --workspace_status_command for the proxy build. Upstream's
# tools/bazel_get_workspace_status asks git, and a patched checkout is "Modified"; this names the
# pinned proxy commit and the patch series (docs/metadata.md).
echo "BUILD_SCM_REVISION {revision}"
echo "BUILD_SCM_STATUS {status}"
echo "BUILD_CONFIG default"
echo "DOCKER_REPOSITORY istio-testing/envoy"
"""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CrossLinks(Action):
    """The profile's CC/CXX/AR/NM as links in a directory of their own, first on the build's PATH (so a
    Makefile's PATH cannot put another compiler first); in a cross build CC/CXX are named for the target."""

    bindir: Path
    links: tuple[tuple[str, str], ...]  # (link name, tool)

    def render(self) -> str:
        pairs = ", ".join(f"{self.bindir / link} -> {name}" for link, name in self.links)
        return f"link the profile's tools (found on this PATH) into one directory: {pairs}"

    def perform(self, ex: Executor) -> None:
        self.bindir.mkdir(parents=True, exist_ok=True)
        for link, name in self.links:
            target = which(name)
            if target is None:
                raise ToolError(f"{name} is not installed", hint="`invoke doctor` lists the tools the build needs")
            tmp = self.bindir / f".{link}.{os.getpid()}.tmp"  # the cache is shared: builds link at once
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            tmp.replace(self.bindir / link)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportToolchain(Action):
    """Where CC/CXX/AR/NM resolve for the build and their versions: into the stage's log and a record."""

    command: Command
    record: Path

    def render(self) -> str:
        return f"run {self.command.render()}; write what CC, CXX, AR and NM resolve to, with versions, to {self.record}"

    def perform(self, ex: Executor) -> None:
        cmd = self.command
        out = run(cmd.argv, cwd=cmd.cwd, env=cmd.env, capture=True, log=ex.log, what="resolve CC/CXX/AR/NM").stdout
        found = parse_report(out)
        lines = [f"{k}={v['name']} -> {v['resolved']} ({v['version']})" for k, v in found.items()]
        with ex.log.open("a") as fh:
            fh.write("".join(f"[istiobuild] toolchain: {line}\n" for line in lines))
        fsutil.write_json(self.record, found)
        ex.console.info("toolchain: " + "; ".join(lines))


def parse_report(text: str) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if line.startswith("@@ "):
            var, name, path, resolved = [*line[3:].split("\t"), "", "", ""][:4]
            current = found[var] = {"name": name, "path": path, "resolved": resolved, "version": ""}
        elif current is not None and not current["version"] and (re.search(r"\d+\.\d+", line) or "version" in line):
            current["version"] = line.strip()
    return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteWorkspaceStatus(Action):
    path: Path
    revision: str
    status: str
    patches_record: Path

    def render(self) -> str:
        return (
            f"write {self.path} (0755, bazel's --workspace_status_command): BUILD_SCM_REVISION {self.revision}, "
            f"BUILD_SCM_STATUS {self.status} (ending in {record.MODIFIED} if the patch stage recorded "
            "--allow-modified edits in proxy or envoy), BUILD_CONFIG default, DOCKER_REPOSITORY istio-testing/envoy"
        )

    def perform(self, ex: Executor) -> None:
        status = self.status
        if record.modified(self.patches_record, [Component.PROXY, Component.ENVOY]):
            status += record.MODIFIED
        fsutil.write_atomic(self.path, WORKSPACE_STATUS.format(revision=self.revision, status=status), 0o755)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BazelFiles(Action):
    """The bazel server's logging config, and (with secrets) the 0600 rc file holding them."""

    logging: Path
    root: Path
    rc: Path | None
    home: Path
    shown: tuple[str, ...] = ()  # the rc file's flags, secrets as ***

    def render(self) -> str:
        text = f"write {self.logging} (the bazel server logs no command lines, so no secret reaches java.log)"
        if self.rc is not None:
            text += f"; write {self.rc} (0600, removed after the stage: {' '.join(self.shown)})"
        return text + f"; create the build's private HOME {self.home}"

    def perform(self, ex: Executor) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        fsutil.write_atomic(self.logging, LOGGING.format(root=self.root))
        if self.rc is not None:
            remotecache.register_secrets(ex.settings)
            flags = remotecache.secret_flags(ex.settings)
            # bazel splits rc lines like a shell: quote each flag so a value with spaces stays one flag
            secrets.write_secret_file(self.rc, "".join(f"build {shlex.quote(f)}\n" for f in flags))


@dataclasses.dataclass(frozen=True, kw_only=True)
class CollectEnvoy(Action):
    built: Path
    dest: Path
    record: Path
    arch: Arch
    host: Arch
    expect: Mapping[str, str]
    patches_record: Path

    def render(self) -> str:
        wanted = ", ".join(f"{k} {v}" for k, v in self.expect.items())
        return (
            f"copy {self.built} to {self.dest} with its sha256, check it is an ELF for {self.arch}, "
            f"run it with --version"
            + (" under qemu-user" if self.arch != self.host else "")
            + f": it must report {wanted}"
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
        reported = record.envoy_reported(version)
        modified_ok = record.modified(self.patches_record, [Component.PROXY, Component.ENVOY])
        record.require(
            "envoy --version", reported, self.expect, modified_ok=modified_ok, log=ex.log,
            hint="bazel did not stamp the build with the plan's --workspace_status_command (docs/metadata.md)",
        )  # fmt: skip
        fsutil.write_json(
            self.record,
            {
                "path": str(self.dest),
                "sha256": digest,
                "arch": self.arch.value,
                "compiler": info.compiler,
                "comment": "; ".join(info.comment),
                "version": version,
                "reported": reported,
            },
        )
        first = version.splitlines()[0] if version else ""
        ex.console.info(f"envoy {digest[:16]} ({self.arch}, {info.compiler}): {first}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class StopBazel(Action):
    root: Path

    def render(self) -> str:
        return f"stop the bazel servers under {self.root} (CI: no idle server keeps its memory)"

    def perform(self, ex: Executor) -> None:
        procs.stop_bazel_servers(self.root)


def _bazel_args(p: PlanInput, envoy_dir: Path) -> list[str]:
    args = [
        f"--override_repository=envoy={envoy_dir}",
        "--action_env=GN",
        "--action_env=NINJA",
        # strict action env: without these the wee8 genrule's `$${AR:-ar}` / `$${NM:-nm}` fall back to ar/nm
        "--action_env=AR",
        "--action_env=NM",
        "--action_env=SOURCE_DATE_EPOCH",  # compilers' __DATE__/__TIME__ and anything else that honours it
        # the pinned revision and our series, never git's "Modified" for our own patches
        f"--workspace_status_command={p.layout.workspace_status}",
        f"--disk_cache={p.layout.bazel_disk}",
        f"--repository_cache={p.layout.bazel_repo}",  # shared by every workdir, like the disk cache
        "--verbose_failures",
    ]
    if p.settings.jobs:
        args.append(f"--jobs={p.settings.jobs}")
    if p.allocator == "gperftools" and p.release.mechanism and p.release.mechanism.allocator.endswith("optin"):
        args.append("--define=tcmalloc=gperftools")  # 1.22+: Google tcmalloc is envoy's default (istio#51708)
    args += remotecache.public_flags(p.settings, p.settings.bazel_version or p.release.bazel_version)
    if p.toolchain.family is Family.GCC:
        args.append("--action_env=BAZEL_COMPILER")
    if p.arch != p.host and p.toolchain.family is Family.CLANG:
        # clang cross-compiles with --target; a gcc cross compiler is named by CC itself.
        args += [f"--copt=--target={p.arch.triple}", f"--linkopt=--target={p.arch.triple}"]
    return args


def _after_configs(p: PlanInput, env: Mapping[str, str]) -> list[str]:
    """What must follow the --config flags (a config's options override earlier ones): where the proxy's rc names
    the compiler (`--action_env=CC=clang`) and fixes the actions' PATH, the profile's compiler and our tools first.
    Host tools are built with the host's compiler (a cross build names the target in CC)."""
    mech = p.release.mechanism
    if mech is None or p.toolchain.family is not Family.CLANG:
        return []
    flags = []
    if mech.rc_compiler:
        host = p.toolchain.env_for(p.host, p.host) if p.arch != p.host else env
        for var in ("CC", "CXX"):
            flags += [f"--action_env={var}={env[var]}", f"--host_action_env={var}={host[var]}"]
    if mech.rc_path and p.settings.in_container:  # the builder's PATH, where its toolchain check found the compiler
        flags.append("--action_env=PATH")
    elif mech.rc_path:
        kept = [d for d in mech.rc_path.split(":") if d and "llvm" not in d]
        flags.append(f"--action_env=PATH={':'.join([str(p.layout.toolchain_bin), *kept])}")
    return flags


def _startup_args(p: PlanInput) -> str:
    rc = p.layout.bazel_rc if remotecache.has_secrets(p.settings) else Path("/dev/null")
    return " ".join(
        (
            f"--output_user_root={p.layout.bazel_root}",
            f"--bazelrc={rc}",
            f"--host_jvm_args=-Xmx{p.settings.jvm_heap}",
            f"--host_jvm_args=-Djava.util.logging.config.file={p.layout.bazel_logging}",
            f"--max_idle_secs={60 if p.ci else 600}",
        )
    )


def _toolchain(p: PlanInput, env: dict[str, str], configs: list[str]) -> tuple[list[Step], list[str]]:
    """CC/CXX/AR/NM become links in a directory of their own, put first on PATH (see CrossLinks).

    Cross builds: bazel's autoconfigured C++ toolchain probes CC and links with -B<dir of CC>, so CC and
    CXX must name the target themselves and live in a directory of their own (not /usr/bin and its ld).
    In a builder container the names stay as they are: they resolve on the builder's PATH."""
    steps: list[Step] = []
    if not p.settings.in_container:
        links = []
        for var in TOOLS:
            name = env[var]
            link = Path(name).name
            if p.arch != p.host and var in ("CC", "CXX") and not link.startswith(f"{p.arch.triple}-"):
                link = f"{p.arch.triple}-{link}"
            links.append((link, name))
            env[var] = str(p.layout.toolchain_bin / link)
        steps.append(CrossLinks(bindir=p.layout.toolchain_bin, links=tuple(links)))
    if p.arch != p.host and "libc++" in configs:
        # Debian's libc++ for another arch cannot be installed beside the host's: link libstdc++ instead.
        configs = ["clang" if c == "libc++" else c for c in configs]
        env.update(BAZEL_CXXOPTS="-std=c++17", BAZEL_LINKLIBS="-l%:libstdc++.a:-lm")
    return steps, configs


def environment(p: PlanInput) -> tuple[dict[str, str], list[Step], list[str]]:
    """The make's environment: the profile's tools, GN/NINJA, a private HOME (so any bazel a Makefile starts
    by itself, and ~/.bazelrc, stay under the cache), bazelisk's downloads in the cache, the bazel version."""
    env = {**p.toolchain.env_for(p.arch, p.host), "GN": p.settings.gn, "NINJA": p.settings.ninja}
    steps, configs = _toolchain(p, env, list(p.toolchain.bazel_configs))
    env.update(p.layout.home_env)
    env["BAZELISK_HOME"] = str(p.layout.bazelisk_home)
    env["USE_BAZEL_VERSION"] = p.settings.bazel_version or p.release.bazel_version
    env["SOURCE_DATE_EPOCH"] = str(p.release.source_date_epoch)
    return env, steps, configs


def _bazel_files(p: PlanInput, rc: Path | None) -> BazelFiles:
    return BazelFiles(
        logging=p.layout.bazel_logging,
        root=p.layout.bazel_root,
        rc=rc,
        home=p.layout.home,
        shown=remotecache.shown_secret_flags(p.settings),
    )


def plan(p: PlanInput) -> Stage:
    proxy_dir, envoy_dir = p.checkout(Component.PROXY), p.checkout(Component.ENVOY)
    env, links, configs = environment(p)
    # A command-line variable overrides the Makefile's `PATH := /usr/lib/llvm-9/bin:$(PATH)`; `:=` expands
    # $(PATH) from make's environment, so the shell needs to expand nothing and the line pastes as is.
    path = "PATH:=$(PATH)" if p.settings.in_container else f"PATH:={p.layout.toolchain_bin}:$(PATH)"
    mech = p.release.mechanism
    argv = [
        "make",
        *(["--assume-old=prerun_v8_build"] if mech and mech.v8_prerun else []),
        "build_envoy",
        f"BAZEL_BUILD_ARGS={' '.join(_bazel_args(p, envoy_dir))}",
        f"BAZEL_CONFIG_REL={' '.join([*(f'--config={c}' for c in configs), *_after_configs(p, env)])}",
        f"BAZEL_STARTUP_ARGS={_startup_args(p)}",
        path,
    ]
    built, dest = proxy_dir / p.release.envoy_output, p.layout.artifacts / "envoy"
    rc = p.layout.bazel_rc if remotecache.has_secrets(p.settings) else None
    meta, patches = record.metadata(p), p.layout.record("patches")
    report = container.command(p, ["sh", "-c", REPORT], proxy_dir, env, "the tools the build uses")
    steps: list[Step] = [
        *links,
        _bazel_files(p, rc),
        WriteWorkspaceStatus(
            path=p.layout.workspace_status,
            revision=meta.proxy_revision,
            status=meta.proxy_status,
            patches_record=patches,
        ),
        ReportToolchain(command=report, record=p.layout.record("proxy-toolchain")),
        *remotecache.before_build(p.settings),
        container.command(p, argv, proxy_dir, env, "bazel build; wee8 via gn/ninja from GN/NINJA"),
        CollectEnvoy(
            built=built,
            dest=dest,
            record=p.layout.record("envoy"),
            arch=p.arch,
            host=p.host,
            expect=record.envoy_expected(meta),
            patches_record=patches,
        ),
    ]
    steps += remotecache.after_build(p.settings, p.layout.log("proxy"))
    if p.ci:
        steps.append(StopBazel(root=p.layout.bazel_root))
    notes = [f"wee8 {p.release.wee8} is built by a genrule running gn and ninja"] if p.release.wee8 else []
    if _after_configs(p, env):
        notes.append(
            "the proxy's bazel rc names the compiler by name (and from 1.25 fixes the actions' PATH): the profile's "
            "CC/CXX (and PATH) are set after the --config flags, so they are the ones bazel uses"
        )
    if rc is not None:
        notes.append(f"the remote cache secrets are read from {rc} (0600), never from argv or the environment")
    notes += remotecache.notes(p.settings, p.layout.toolchain_bin)
    return Stage(
        name=StageName.PROXY,
        summary=f"build envoy ({p.release.envoy_target}) with bazel through the proxy's make build_envoy",
        steps=tuple(steps),
        reads=(proxy_dir, envoy_dir),
        produces=(p.layout.workspace_status, p.layout.record("proxy-toolchain"), dest, p.layout.record("envoy")),
        secret_files=(rc,) if rc is not None else (),
        bazel_roots=(p.layout.bazel_root,),
        notes=tuple(notes),
    )

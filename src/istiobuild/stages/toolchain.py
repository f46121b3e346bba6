"""Stage toolchain: the profile's compilers exist, are in its version range, and build for the target."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from istiobuild import container, fsutil
from istiobuild.arch import Arch
from istiobuild.elf import read as read_elf
from istiobuild.errors import ToolError
from istiobuild.executor import Executor
from istiobuild.release import Component
from istiobuild.run import run
from istiobuild.steps import Action, Command, PlanInput, Stage, StageName
from istiobuild.toolchain import Family, Toolchain, version_in
from istiobuild.ztunnel import CheckZtunnelSource

PROBE_SOURCE = '#include <stdio.h>\nint main(void) { puts("probe"); return 0; }\n'


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckVersion(Action):
    """Run `<cc> --version` (as the probe's command does: on the host or in the builder) and check the range."""

    version_command: Command
    toolchain: Toolchain
    record: Path

    def render(self) -> str:
        return (
            f"run {self.version_command.render()}; toolchain {self.toolchain.name} needs {self.toolchain.version_range}"
        )

    def perform(self, ex: Executor) -> None:
        cmd, tc = self.version_command, self.toolchain
        result = run(cmd.argv, cwd=cmd.cwd, env=cmd.env, capture=True, check=False, what=f"run {cmd.argv[0]}")
        first = (result.stdout or "\n".join(result.tail)).strip().splitlines()
        line = first[0] if first else ""
        version = version_in(line)
        if not version or not tc.accepts(version):
            raise ToolError(
                f"the compiler is version {version or 'unknown'} ({line!r}); "
                f"toolchain {tc.name} needs {tc.version_range}",
                hint="install a suitable compiler or choose a toolchain profile that matches (toolchains/*.toml)",
            )
        fsutil.write_json(self.record, {"toolchain": tc.name, "cc": cmd.argv[-2], "version": version, "line": line})
        ex.console.info(f"toolchain {tc.name}: {line}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteProbe(Action):
    path: Path

    def render(self) -> str:
        return f"write a hello-world C program to {self.path}"

    def perform(self, ex: Executor) -> None:
        fsutil.write_atomic(self.path, PROBE_SOURCE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckProbe(Action):
    binary: Path
    arch: Arch
    family: Family
    record: Path

    def render(self) -> str:
        return f"read {self.binary}: it must be an ELF for {self.arch} whose .comment names {self.family.value}"

    def perform(self, ex: Executor) -> None:
        info = read_elf(self.binary)
        if info.arch is not self.arch or info.compiler != self.family.value:
            raise ToolError(
                f"the compiler built a {info.machine_name} {info.compiler} binary, "
                f"expected {self.arch} {self.family.value}",
                log=ex.log,
            )
        record = json.loads(self.record.read_text())
        record.update(target=self.arch.value, compiler=info.compiler, comment=list(info.comment))
        fsutil.write_json(self.record, record)
        ex.console.info(f"the probe is a {self.arch} ELF built by {info.compiler}")


def plan(p: PlanInput) -> Stage:
    tc, arch, host = p.toolchain, p.arch, p.host
    cc = tc.binaries_for(arch, host)["cc"]
    env = {k: v for k, v in tc.env_for(arch, host).items() if k not in ("CFLAGS", "CXXFLAGS", "LDFLAGS")}
    flags = [f"--target={arch.triple}"] if (arch != host and tc.family is Family.CLANG) else []
    probe = p.layout.probe
    version = container.command(p, [cc, "--version"], probe, env, "compiler version")
    compile_ = container.command(
        p,
        [cc, *flags, "-static", str(probe / "probe.c"), "-o", str(probe / "probe")],
        probe,
        env,
        f"compile the probe for {arch}",
    )
    ztunnel = p.release.mechanism is not None and p.release.mechanism.ztunnel != "none" and p.settings.ztunnel_repo
    return Stage(
        name=StageName.TOOLCHAIN,
        summary=f"check toolchain {tc.name} ({tc.description}), version {tc.version_range}, builds for {arch}",
        steps=(
            WriteProbe(path=probe / "probe.c"),
            CheckVersion(version_command=version, toolchain=tc, record=p.layout.record("toolchain")),
            compile_,
            CheckProbe(binary=probe / "probe", arch=arch, family=tc.family, record=p.layout.record("toolchain")),
            *(
                [CheckZtunnelSource(repo=Path(p.settings.ztunnel_repo).absolute(), istio=p.checkout(Component.ISTIO))]
                if ztunnel
                else []
            ),
        ),
        produces=(p.layout.record("toolchain"),),
        notes=(f"bazel configs: {' '.join('--config=' + c for c in tc.bazel_configs)}",),
    )

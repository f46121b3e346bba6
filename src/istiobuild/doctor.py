"""The doctor: every tool a build needs, found / required / how to fix, versions compared.

`build` runs the same checks for the stages it is about to run and stops before any work. The
checks read only their arguments (target, host, release, toolchain, settings), never a plan.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

from istiobuild import dockerapi, kernel
from istiobuild.arch import Arch
from istiobuild.config import Settings
from istiobuild.errors import UsageError
from istiobuild.modes import EMULATION_SLOWDOWN, Mode, alternatives, decide
from istiobuild.release import Release
from istiobuild.run import clean_environ
from istiobuild.toolchain import Toolchain, version_in

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
ALL_STAGES = frozenset({"checkout", "patch", "toolchain", "proxy", "istio", "images", "verify"})
MIN_GIT = "2.20"  # git fetch by SHA, protocol v2, worktrees as the checkout uses them
MIN_DOCKER = "20.10"  # the daemon the images stage's classic builder was tested with
# What a release needs of the machine: (free disk GiB, memory GiB).
EXAMPLE_NEEDS = (2, 2)
RELEASE_NEEDS = (60, 8)
MEMORY_SLACK = 0.9  # an "8 GiB" machine reports ~7.7 GiB MemTotal


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    found: str
    required: str
    ok: bool
    fix: str = ""


def _first_line(
    argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str = ""
) -> tuple[int, str]:
    exe = shutil.which(argv[0])
    if exe is None:
        return -1, ""
    try:
        proc = subprocess.run(
            [exe, *argv[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            input=stdin,
            cwd=cwd,
            env={**clean_environ(os.environ), **(env or {})},
        )
    except (OSError, subprocess.TimeoutExpired):
        return -1, "?"
    text = _ANSI.sub("", proc.stdout.strip() or proc.stderr.strip()).splitlines()
    return proc.returncode, text[0] if text else ""


def _numbers(text: str) -> tuple[int, ...]:
    match = re.search(r"(\d+(?:\.\d+)*)", text)
    return tuple(int(x) for x in match.group(1).split(".")) if match else ()


def _at_least(line: str, wanted: str) -> bool:
    have, want = _numbers(line), _numbers(wanted)
    return bool(have) and have[: len(want)] >= want


def _tool(
    name: str, argv: list[str], required: str, fix: str, accepts: Callable[[str], bool] = lambda line: True
) -> Check:
    """Run `argv`; ok when it answers and `accepts` its first line (the version)."""
    rc, line = _first_line(argv)
    ok = rc == 0 and bool(line) and accepts(line)
    return Check(name=name, found=line or "missing", required=required, ok=ok, fix="" if ok else fix)


def _git() -> Check:
    return _tool(
        "git",
        ["git", "--version"],
        f">= {MIN_GIT}",
        f"install git >= {MIN_GIT} (apt-get install git)",
        lambda line: _at_least(line.replace("git version", ""), MIN_GIT),
    )


def _compilers(toolchain: Toolchain, arch: Arch, host: Arch) -> list[Check]:
    binaries = toolchain.binaries_for(arch, host)

    def accepts(line: str) -> bool:
        version = version_in(line)
        return bool(version) and toolchain.accepts(version)

    return [
        _tool(
            binaries[role],
            [binaries[role], "--version"],
            f"{toolchain.name}: {toolchain.version_range}",
            f"install {binaries[role]} ({toolchain.version_range}), or choose another --toolchain",
            accepts,
        )
        for role in ("cc", "cxx")
    ]


def _defaults_tool(name: str) -> Check:
    """A program istio's generator needs to regenerate what istioctl embeds (go-bindata)."""
    found = shutil.which(name)
    return Check(
        name=name, found=found or "missing", required="on PATH (regenerates istioctl's embedded charts)",
        ok=found is not None, fix="" if found else f"apt-get install {name}",
    )  # fmt: skip


def _make() -> Check:
    return _tool("make", ["make", "--version"], "GNU make", "apt-get install make", lambda line: "GNU Make" in line)


def _go(release: Release) -> Check:
    return _tool(
        "go",
        ["go", "version"],
        f">= {release.go} (go.mod)",
        f"apt-get install golang-go (or a Go >= {release.go}, the go.mod directive)",
        lambda line: _at_least(line.replace("go version go", ""), release.go),
    )


def _docker() -> Check:
    return _tool(
        "docker",
        ["docker", "version", "--format", "{{.Server.Version}}"],
        f"a running daemon >= {MIN_DOCKER}",
        f"apt-get install docker.io (>= {MIN_DOCKER}); start dockerd",
        lambda line: _at_least(line, MIN_DOCKER),
    )


def _docker_and_registry(settings: Settings, release: Release, arch: Arch, wanted: Collection[str]) -> list[Check]:
    """The daemon; with --push, then the registry through it (not asked when the daemon did not answer)."""
    daemon = _docker()
    if daemon.ok and ("publish" in wanted or ("images" in wanted and settings.push)):
        return [daemon, _registry(settings, release, arch)]
    return [daemon]


def _registry(settings: Settings, release: Release, arch: Arch) -> Check:
    """`--push`: the daemon reaches the hub's registry and the docker config's credentials are accepted there,
    asked before any stage (a read: the registry's manifest API, through the daemon as the push will go)."""
    probe = f"{settings.hub}/{release.docker_targets_for(arch)[0].removeprefix('docker.')}:latest"
    required = f"the registry of {settings.hub} reachable through the daemon and readable with its credentials"
    fix = f"start the registry of {settings.hub} or pick another --hub; `docker login <registry>` (never printed)"
    ok, found = dockerapi.registry_answer(probe)
    return Check(name="registry", found=found, required=required, ok=ok, fix=fix)


def _bazel(settings: Settings, release: Release, proxy_dir: Path) -> Check:
    wanted = settings.bazel_version or release.bazel_version
    cwd = proxy_dir if (proxy_dir / "WORKSPACE").exists() else Path(tempfile.gettempdir())
    # bazelisk and Debian's bazel wrapper pick the version from USE_BAZEL_VERSION / .bazelversion.
    rc, line = _first_line([settings.bazel, "--version"], env={"USE_BAZEL_VERSION": wanted}, cwd=cwd)
    found = _numbers(line) if rc == 0 else ()
    want = _numbers(wanted)
    if rc == 0 and line.endswith("no_version"):
        # Debian's bazel-bootstrap prints no version; its /usr/bin/bazel wrapper runs the
        # bazel-<version> next to it that USE_BAZEL_VERSION / .bazelversion names.
        exe = shutil.which(settings.bazel)
        picked = Path(exe).resolve().parent / f"bazel-{wanted}" if exe else None
        if picked is not None and picked.exists():
            found, line = want, f"{line} ({picked})"
    ok = bool(found) and found[: len(want)] == want
    return Check(
        name="bazel",
        found=line if rc == 0 else (line or "missing"),
        required=f"{wanted} ({'bazel_version setting' if settings.bazel_version else '.bazelversion'})",
        ok=ok,
        fix="" if ok else f"install bazel {wanted} (or bazelisk), or set bazel_version to the bazel you have",
    )


def _libcxx(cxx: str, flags: list[str]) -> Check:
    rc, line = _first_line(
        [cxx, *flags, "-stdlib=libc++", "-x", "c++", "-fsyntax-only", "-"], stdin="#include <vector>\n"
    )
    ok = rc == 0
    return Check(
        name="libc++",
        found="usable" if ok else (line[:60] or "missing"),
        required="clang + libc++ (bazel --config=libc++)",
        ok=ok,
        fix="" if ok else "apt-get install libc++-dev libc++abi-dev, or use --toolchain gcc",
    )


def _proxy_tools(settings: Settings, release: Release, toolchain: Toolchain, cxx: str, proxy_dir: Path) -> list[Check]:
    checks = [
        _make(),
        _bazel(settings, release, proxy_dir),
        _tool("java", ["java", "-version"], "a JDK for bazel", "apt-get install default-jdk-headless"),
    ]
    if release.wee8:
        checks += [
            _tool(
                settings.gn, [settings.gn, "--version"], "gn on PATH (wee8 genrule)", "apt-get install generate-ninja"
            ),
            _tool(
                settings.ninja,
                [settings.ninja, "--version"],
                "ninja on PATH (wee8 genrule)",
                "apt-get install ninja-build",
            ),
        ]
    if "libc++" in toolchain.bazel_configs and not release.example:
        checks.append(_libcxx(cxx, []))
    return checks


def _mode(arch: Arch, host: Arch, release: Release, settings: Settings) -> Check:
    """The build mode (modes.decide): native, cross where the release supports it, emulated in a builder."""
    required = "native, cross where the release supports it, or emulated (--in-container)"
    try:
        mode = decide(host=host, target=arch, release=release, in_container=settings.in_container)
    except UsageError:
        found = f"cross {host} -> {arch}: not supported by {release.version}"
        return Check(name="build mode", found=found, required=required, ok=False, fix=alternatives(arch))
    found = {
        Mode.NATIVE: f"native {arch}" + (" (in the builder)" if settings.in_container else ""),
        Mode.CROSS: f"cross {host} -> {arch}",
        Mode.EMULATED: f"emulated {arch} on {host}: ~{EMULATION_SLOWDOWN}x slower",
    }[mode]
    return Check(name="build mode", found=found, required=required, ok=True)


def _emulation(arch: Arch, host: Arch) -> Check:
    binfmt = Path("/proc/sys/fs/binfmt_misc") / arch.qemu
    qemu = shutil.which(f"{arch.qemu}-static") or shutil.which(arch.qemu)
    ok = binfmt.exists() or qemu is not None
    return Check(
        name=f"run {arch} on {host}",
        found="binfmt registered" if binfmt.exists() else (qemu or "no binfmt, no qemu"),
        required="qemu-user (binfmt or qemu-*-static)",
        ok=ok,
        fix="" if ok else "apt-get install qemu-user-static binfmt-support (then update-binfmts --enable)",
    )


def run_checks(
    *,
    arch: Arch,
    host: Arch,
    page_size: str,
    release: Release,
    toolchain: Toolchain,
    settings: Settings,
    proxy_dir: Path,
    stages: Collection[str] = ALL_STAGES,
) -> list[Check]:
    """Every check the `stages` need, for a build of `release` for `arch` on `host`.

    `page_size` is the page size the build assumes (resolved: 4k or 64k); `proxy_dir` is the
    proxy checkout, whose .bazelversion picks the bazel a wrapper runs.
    """
    wanted = set(stages)
    # the mode matters to the stages that compile or run target code
    checks = [_mode(arch, host, release, settings)] if {"toolchain", "proxy", "istio", "images"} & wanted else []
    checks.append(_git())
    if "patch" in wanted and release.defaults is not None:
        checks += [_defaults_tool(name) for name in release.defaults.tools]
    if {"toolchain", "proxy"} & wanted:
        checks += _compilers(toolchain, arch, host)
    if "proxy" in wanted:
        checks += _proxy_tools(settings, release, toolchain, toolchain.binaries_for(arch, host)["cxx"], proxy_dir)
    if "istio" in wanted:
        checks.append(_go(release))
        if "proxy" not in wanted:  # the proxy stage checked make already
            checks.append(_make())
    if {"images", "verify", "publish"} & wanted:
        checks += _docker_and_registry(settings, release, arch, wanted)
    if arch != host and {"proxy", "istio", "images", "verify"} & wanted:
        checks.append(_emulation(arch, host))
    return [*checks, *_machine(settings, release, arch=arch, host=host, page_size=page_size)]


def _needs(release: Release) -> tuple[int, int, str]:
    """(disk GiB, memory GiB, for what) a build of the release needs."""
    if release.example:
        return (*EXAMPLE_NEEDS, "the example release")
    return (*RELEASE_NEEDS, f"a real envoy build ({release.version})")


def _free_gib(path: Path) -> float:
    return shutil.disk_usage(path).free / 2**30


def _disk(settings: Settings, release: Release) -> Check:
    probe = settings.workdir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = _free_gib(probe)
    need, _, what = _needs(release)
    ok = free >= need
    return Check(
        name="free disk",
        found=f"{free:.1f} GiB in {probe}",
        required=f">= {need} GiB for {what}",
        ok=ok,
        fix="" if ok else f"free {need - free:.0f} GiB or more, or choose a --workdir on a bigger disk",
    )


def _memory(release: Release) -> Check:
    cores = os.cpu_count() or 1
    mem = _mem_gb()
    _, need, what = _needs(release)
    jobs = max(1, min(cores, int(mem // 2.5) or 1))
    ok = mem == 0.0 or mem >= need * MEMORY_SLACK  # 0.0: unknown (no /proc/meminfo)
    return Check(
        name="cores / memory",
        found=f"{cores} cores, {mem:.1f} GiB" if mem else f"{cores} cores, memory unknown",
        required=f">= {need} GiB for {what}; suggested --jobs {jobs} (~2.5 GiB a job)",
        ok=ok,
        fix="" if ok else f"build on a machine with {need} GiB or more, or add swap (and lower --jobs)",
    )


def _machine(settings: Settings, release: Release, *, arch: Arch, host: Arch, page_size: str) -> list[Check]:
    """Disk, memory, and the kernels (kernel.py): this one, which matters where envoy runs here (the same arch), and
    the target's (--target-kernel)."""
    here = kernel.host_kernel(host)
    target = kernel.check_target_kernel(settings.target_kernel) if settings.target_kernel else None
    required = f"the build assumes {page_size}"
    fix = kernel.advice(here, page_size, page_fix=target is None) if arch == host else ""
    checks = [_disk(settings, release), _memory(release)]
    checks.append(Check(name="kernel page size", found=here.describe(), required=required, ok=True, fix=fix))
    if target is not None:
        fits = target.page_size == page_size
        advice = kernel.advice(target, page_size)
        checks.append(Check(name="target kernel", found=target.describe(), required=required, ok=fits, fix=advice))
    return checks


def _mem_gb() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0.0
    match = re.search(r"MemTotal:\s+(\d+) kB", text)
    return int(match.group(1)) / 2**20 if match else 0.0


def host_page_size() -> str:
    return f"{os.sysconf('SC_PAGE_SIZE') // 1024}k"


def table(checks: list[Check]) -> str:
    rows = [("", "check", "found", "required", "fix")]
    rows += [("ok" if c.ok else "!!", c.name, c.found[:60], c.required, c.fix) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)

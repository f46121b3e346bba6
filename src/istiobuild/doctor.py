"""The doctor: every tool the plan needs, found / required / how to fix.

`build` runs the same checks for the stages it is about to run and stops before any work.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Collection
from pathlib import Path

from istiobuild.config import Settings
from istiobuild.plan import BuildPlan
from istiobuild.release import Release
from istiobuild.run import clean_environ
from istiobuild.toolchain import Toolchain

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
ALL_STAGES = frozenset({"checkout", "patch", "toolchain", "proxy", "istio", "images", "verify"})


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


def _tool(name: str, argv: list[str], required: str, fix: str) -> Check:
    rc, line = _first_line(argv)
    ok = rc == 0 and bool(line)
    return Check(name=name, found=line or "missing", required=required, ok=ok, fix="" if ok else fix)


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


def run_checks(
    plan: BuildPlan, release: Release, toolchain: Toolchain, settings: Settings, stages: Collection[str] = ALL_STAGES
) -> list[Check]:
    binaries = toolchain.binaries_for(plan.arch, plan.host)
    checks = [_tool("git", ["git", "--version"], ">= 2.20", "apt-get install git")]
    if {"toolchain", "proxy"} & set(stages):
        checks.append(
            _tool(
                binaries["cc"],
                [binaries["cc"], "--version"],
                f"{toolchain.name}: {toolchain.version_range}",
                f"install {binaries['cc']}",
            )
        )
        checks.append(
            _tool(
                binaries["cxx"], [binaries["cxx"], "--version"], toolchain.version_range, f"install {binaries['cxx']}"
            )
        )
    if "proxy" in stages:
        proxy_dir = Path(plan.stage("proxy").steps[0].cwd)
        checks += [
            _tool("make", ["make", "--version"], "GNU make", "apt-get install make"),
            _bazel(settings, release, proxy_dir),
            _tool("java", ["java", "-version"], "a JDK for bazel", "apt-get install default-jdk-headless"),
        ]
        if release.wee8:
            checks += [
                _tool(
                    settings.gn,
                    [settings.gn, "--version"],
                    "gn on PATH (wee8 genrule)",
                    "apt-get install generate-ninja",
                ),
                _tool(
                    settings.ninja,
                    [settings.ninja, "--version"],
                    "ninja on PATH (wee8 genrule)",
                    "apt-get install ninja-build",
                ),
            ]
        if "libc++" in toolchain.bazel_configs and release.line != "example":
            checks.append(_libcxx(binaries["cxx"], []))
    if "istio" in stages:
        rc, line = _first_line(["go", "version"])
        have = _numbers(line.replace("go version go", "")) if rc == 0 else ()
        want = _numbers(release.go)
        ok = bool(have) and have[: len(want)] >= want
        checks.append(
            Check(
                name="go",
                found=line or "missing",
                required=f">= {release.go} (go.mod)",
                ok=ok,
                fix="" if ok else "apt-get install golang-go (or a Go >= the go.mod directive)",
            )
        )
        if "proxy" not in stages:  # the proxy stage checked make already
            checks.append(_tool("make", ["make", "--version"], "GNU make", "apt-get install make"))
    if {"images", "verify", "publish"} & set(stages):
        checks.append(
            _tool(
                "docker",
                ["docker", "version", "--format", "{{.Server.Version}}"],
                "a running daemon",
                "apt-get install docker.io; start dockerd",
            )
        )
    if plan.arch != plan.host and {"proxy", "istio", "images", "verify"} & set(stages):
        binfmt = Path("/proc/sys/fs/binfmt_misc") / plan.arch.qemu
        qemu = shutil.which(f"{plan.arch.qemu}-static") or shutil.which(plan.arch.qemu)
        ok = binfmt.exists() or qemu is not None
        checks.append(
            Check(
                name=f"run {plan.arch} on {plan.host}",
                found="binfmt registered" if binfmt.exists() else (qemu or "no binfmt, no qemu"),
                required="qemu-user (binfmt or qemu-*-static)",
                ok=ok,
                fix="" if ok else "apt-get install qemu-user-static binfmt-support (then update-binfmts --enable)",
            )
        )
    checks += _machine(settings, plan)
    return checks


def _machine(settings: Settings, plan: BuildPlan) -> list[Check]:
    probe = settings.workdir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 2**30
    cores = os.cpu_count() or 1
    mem_gb = _mem_gb()
    jobs = max(1, min(cores, int(mem_gb // 2.5) or 1))
    page = os.sysconf("SC_PAGE_SIZE") // 1024
    return [
        Check(
            name="free disk",
            found=f"{free_gb:.0f} GiB in {probe}",
            required="~60 GiB for a real envoy build",
            ok=True,
            fix="" if free_gb >= 60 else "free space or move --workdir before a real release build",
        ),
        Check(
            name="cores / memory",
            found=f"{cores} cores, {mem_gb:.0f} GiB",
            required=f"suggested --jobs {jobs} (~2.5 GiB a job)",
            ok=True,
        ),
        Check(
            name="kernel page size",
            found=f"{page}K",
            required=f"the build assumes {plan.page_size}",
            ok=True,
            fix="" if f"{page}k" == plan.page_size or plan.arch != plan.host else f"pass --page-size {page}k",
        ),
    ]


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

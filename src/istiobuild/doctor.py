"""The doctor: every tool the plan needs, found / required / how to fix."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

from istiobuild.config import Settings
from istiobuild.plan import BuildPlan
from istiobuild.release import Release
from istiobuild.run import clean_environ
from istiobuild.toolchain import Toolchain


@dataclasses.dataclass(frozen=True, kw_only=True)
class Check:
    name: str
    found: str
    required: str
    ok: bool
    fix: str = ""


def _version(argv: list[str]) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        return ""
    try:
        proc = subprocess.run(
            [exe, *argv[1:]], capture_output=True, text=True, timeout=30, check=False, env=clean_environ(os.environ)
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (proc.stdout or proc.stderr).strip().splitlines()
    return text[0] if text else "?"


def _tool(name: str, argv: list[str], required: str, fix: str) -> Check:
    found = _version(argv)
    return Check(name=name, found=found or "missing", required=required, ok=bool(found), fix="" if found else fix)


def run_checks(plan: BuildPlan, release: Release, toolchain: Toolchain, settings: Settings) -> list[Check]:
    binaries = toolchain.binaries_for(plan.arch, plan.host)
    checks = [
        _tool("git", ["git", "--version"], ">= 2.20", "apt-get install git"),
        _tool("make", ["make", "--version"], "GNU make", "apt-get install make"),
        _tool(
            settings.bazel,
            [settings.bazel, "--version"],
            f"{release.bazel_version} (.bazelversion)",
            "install bazel or bazelisk",
        ),
        _tool(settings.gn, [settings.gn, "--version"], "any (wee8 genrule)", "apt-get install generate-ninja"),
        _tool(settings.ninja, [settings.ninja, "--version"], "any (wee8 genrule)", "apt-get install ninja-build"),
        _tool("go", ["go", "version"], f">= {release.go} (go.mod)", "apt-get install golang-go"),
        _tool(
            binaries["cc"],
            [binaries["cc"], "--version"],
            f"{toolchain.name}: {toolchain.version_range}",
            f"install {binaries['cc']}",
        ),
        _tool(binaries["cxx"], [binaries["cxx"], "--version"], toolchain.version_range, f"install {binaries['cxx']}"),
        _tool(
            "docker",
            ["docker", "version", "--format", "{{.Server.Version}}"],
            "a running daemon",
            "apt-get install docker.io; dockerd &",
        ),
    ]
    if plan.arch != plan.host:
        binfmt = Path("/proc/sys/fs/binfmt_misc") / plan.arch.qemu
        checks.append(
            Check(
                name=f"binfmt {plan.arch.qemu}",
                found="registered" if binfmt.exists() else "missing",
                required=f"to run {plan.arch} binaries on {plan.host}",
                ok=binfmt.exists(),
                fix="apt-get install qemu-user-static binfmt-support; update-binfmts --enable",
            )
        )
    usage = shutil.disk_usage(settings.workdir if settings.workdir.exists() else Path.cwd())
    free_gb = usage.free / 2**30
    checks.append(
        Check(
            name="free disk",
            found=f"{free_gb:.0f} GiB",
            required=">= 60 GiB for a real envoy build",
            ok=free_gb >= 60 or release.line == "example",
            fix="free space or move --workdir",
        )
    )
    cores = os.cpu_count() or 1
    mem_gb = _mem_gb()
    jobs = max(1, min(cores, int(mem_gb // 2.5)))
    checks.append(
        Check(
            name="cores / memory",
            found=f"{cores} cores, {mem_gb:.0f} GiB",
            required=f"suggested --jobs {jobs}",
            ok=True,
        )
    )
    page = os.sysconf("SC_PAGE_SIZE")
    checks.append(Check(name="kernel page size", found=f"{page // 1024}K", required="4K, or --page-size 64k", ok=True))
    return checks


def _mem_gb() -> float:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return 0.0
    match = re.search(r"MemTotal:\s+(\d+) kB", text)
    return int(match.group(1)) / 2**20 if match else 0.0


def table(checks: list[Check]) -> str:
    rows = [("", "tool", "found", "required", "fix")]
    rows += [("ok" if c.ok else "!!", c.name, c.found[:50], c.required, c.fix) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)

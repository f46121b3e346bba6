"""The invoke task collection. Thin: parse flags, call the package, print results.

Exposed as `invoke <task>` in a checkout (tasks.py) and as the `istiobuild` console script.
"""

from __future__ import annotations

import functools
import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from istiobuild import build as executor
from istiobuild import config, doctor, release, toolchain
from istiobuild.arch import Arch, host_arch, parse_arch
from istiobuild.console import Console
from istiobuild.errors import Interrupted, IstiobuildError, UsageError
from istiobuild.plan import BuildPlan, StageName, make_plan, render

F = TypeVar("F", bound=Callable[..., Any])

COMMON_HELP = {
    "release": "release to build (default 1.5.0; `invoke releases` lists them)",
    "arch": "target architecture: aarch64 or x86_64 (aliases arm64, amd64; default: this host's)",
    "toolchain": "toolchain profile: clang, clang-9, gcc, gcc-7.3 (default clang)",
    "workdir": "directory holding checkouts, caches, logs and artifacts (ISTIOBUILD_WORKDIR)",
    "mirror": "base URL or directory whose proxy, envoy, istio entries replace the upstream URLs (ISTIOBUILD_MIRROR)",
    "json": "print machine-readable JSON",
    "force": "proceed over local changes in a checkout after saving them in a git stash",
}


def _help(*names: str, **extra: str) -> dict[str, str]:
    return {**{n: COMMON_HELP[n] for n in names}, **extra}


def handled(fn: F) -> F:
    """Turn istiobuild errors into one message and an exit code; no traceback unless ISTIOBUILD_DEBUG."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except IstiobuildError as exc:
            if os.environ.get("ISTIOBUILD_DEBUG"):
                traceback.print_exc()
            raise Exit(exc.render(), code=exc.exit_code) from None
        except KeyboardInterrupt:
            err = Interrupted("interrupted", hint="run the same command again to resume")
            raise Exit(err.render(), code=err.exit_code) from None

    return wrapper  # type: ignore[return-value]


def _settings(**cli: Any) -> config.Settings:
    settings, _ = config.load(cli)
    return settings


def _resolve(
    release_name: str | None, arch: str | None, toolchain_name: str | None, **cli: Any
) -> tuple[config.Settings, release.Release, Arch, toolchain.Toolchain, BuildPlan]:
    settings = _settings(release=release_name, arch=arch, toolchain=toolchain_name, **cli)
    rel = release.get(settings.release)
    host = host_arch()
    target = parse_arch(settings.arch) if settings.arch else host
    tc = toolchain.get(settings.toolchain)
    return settings, rel, target, tc, make_plan(rel, target, tc, settings, host=host)


@task(help=_help("json"))
@handled
def releases(c: Context, json_: bool = False) -> None:
    """List the release matrix: every release with its pinned proxy, envoy and istio commits."""
    matrix = release.matrix()
    if json_:
        rows = [
            {
                "release": r.version,
                "line": r.line,
                **{comp.value: {k: v for k, v in vars(pin).items() if v} for comp, pin in r.pins.items()},
                "bazel": r.bazel_version,
                "go": r.go,
                "wee8": r.wee8,
                "local_proxy": r.local_proxy.value,
                "series": {k.value: list(v) for k, v in r.series.items()},
                "note": r.note,
            }
            for r in matrix.values()
        ]
        print(json.dumps(rows, indent=2))
        return
    print(f"{'release':<9} {'proxy':<13} {'envoy':<32} {'istio':<13} {'bazel':<6} {'go':<5} wee8")
    for r in matrix.values():
        envoy = r.pins[release.Component.ENVOY]
        where = f"{envoy.repo}@{envoy.commit[:8]}"
        print(
            f"{r.version:<9} {r.pins[release.Component.PROXY].commit[:12]:<13} {where:<32} "
            f"{r.pins[release.Component.ISTIO].commit[:12]:<13} {r.bazel_version:<6} {r.go:<5} {r.wee8 or '-'}"
        )


@task(help=_help("release", "arch", "toolchain", "workdir", "mirror", "json"))
@handled
def plan(
    c: Context,
    release_: str | None = None,
    arch: str | None = None,
    toolchain_: str | None = None,
    workdir: str | None = None,
    mirror: str | None = None,
    json_: bool = False,
) -> None:
    """Print every stage of the build (argv, cwd, env, inputs, outputs, patches) without running it."""
    *_, built = _resolve(release_, arch, toolchain_, workdir=workdir, mirror=mirror)
    print(built.dumps() if json_ else render(built))


@task(help=_help("release", "workdir", "mirror", "force"))
@handled
def checkout(
    c: Context,
    release_: str | None = None,
    workdir: str | None = None,
    mirror: str | None = None,
    force: bool = False,
) -> None:
    """Check out proxy, envoy and istio at the release's pinned commits, as siblings."""
    settings, rel, _, _, built = _resolve(release_, None, None, workdir=workdir, mirror=mirror)
    executor.build(built, rel, settings, Console(), force=force, only=[StageName.CHECKOUT])


@task(help=_help("release", "arch", "workdir", "mirror"))
@handled
def patch(
    c: Context,
    release_: str | None = None,
    arch: str | None = None,
    workdir: str | None = None,
    mirror: str | None = None,
) -> None:
    """Apply the release's patch series for the target arch (atomic, idempotent, recorded)."""
    settings, rel, _, _, built = _resolve(release_, arch, None, workdir=workdir, mirror=mirror)
    executor.build(built, rel, settings, Console(), force=False, only=[StageName.PATCH])


@task(help=_help("release", "arch", "toolchain", "workdir", "mirror", "force"))
@handled
def build(
    c: Context,
    release_: str | None = None,
    arch: str | None = None,
    toolchain_: str | None = None,
    workdir: str | None = None,
    mirror: str | None = None,
    force: bool = False,
) -> None:
    """Run the pipeline's implemented stages in plan order (today: checkout, patch)."""
    settings, rel, _, _, built = _resolve(release_, arch, toolchain_, workdir=workdir, mirror=mirror)
    console = Console()
    console.info(f"building {rel.version} for {built.arch} with {built.toolchain} in {settings.workdir}")
    executor.build(built, rel, settings, console, force=force)


@task(help=_help("release", "arch", "toolchain", "json"))
@handled
def doctor_(
    c: Context,
    release_: str | None = None,
    arch: str | None = None,
    toolchain_: str | None = None,
    json_: bool = False,
) -> None:
    """Check the tools the plan needs: found, required, how to fix."""
    settings, rel, _, tc, built = _resolve(release_, arch, toolchain_)
    checks = doctor.run_checks(built, rel, tc, settings)
    print(json.dumps([vars(x) for x in checks], indent=2) if json_ else doctor.table(checks))
    if any(not x.ok for x in checks):
        raise Exit(code=6)


@task(help={"dest": "directory to create the miniature proxy, envoy and istio repositories in"})
@handled
def example(c: Context, dest: str = "istiobuild-work/example-upstream") -> None:
    """Generate the miniature upstream repositories the `example` release builds from."""
    from istiobuild import example as example_mod

    for name, repo in sorted(example_mod.generate(Path(dest).resolve()).items()):
        print(f"{name:<6} {repo}")


def _rename(t: Any, name: str) -> Any:
    t.name = name
    return t


ns = Collection(releases, plan, checkout, patch, build, example)
ns.add_task(doctor_, name="doctor")

# invoke derives flag names from parameter names; these params end in "_" to avoid shadowing.
for _t in (plan, checkout, patch, build, doctor_, releases):
    pass

__all__ = ["UsageError", "ns"]


@task(
    help={
        "mirrors": "directory holding proxy, envoy and istio git repositories (default: $ISTIOBUILD_UPSTREAM_MIRRORS)",
        "release": "check one release only (default: every release of the matrix but example)",
    }
)
@handled
def check_patches(c: Context, mirrors: str = "", release_: str | None = None) -> None:
    """Check every patch series with `git apply --check` against real upstream repositories."""
    from istiobuild import upstream

    root = mirrors or os.environ.get("ISTIOBUILD_UPSTREAM_MIRRORS", "")
    if not root or not Path(root).is_dir():
        raise UsageError(
            "no upstream mirrors to check against",
            hint="pass --mirrors DIR (or set ISTIOBUILD_UPSTREAM_MIRRORS) naming a directory with "
            "proxy, envoy and istio git repositories",
        )
    matrix = release.matrix()
    names = [release_] if release_ else [v for v, r in matrix.items() if r.line != "example"]
    failed = passed = 0
    for name in names:
        outcomes = upstream.check_release(release.get(name, matrix), Path(root))
        good = all(o.ok for o in outcomes)
        passed += good
        failed += not good
        print(f"{'PASS' if good else 'FAIL'} {name}")
        for o in outcomes:
            mark = "ok  " if o.ok else "FAIL"
            series = ",".join(o.series)
            print(f"    {mark} {o.arch.value:<7} {o.component.value:<5} {o.patches} patches {series} {o.detail}")
    print(f"{passed} of {len(names)} releases pass")
    if failed:
        raise Exit(code=5)


ns.add_task(check_patches, name="check-patches")

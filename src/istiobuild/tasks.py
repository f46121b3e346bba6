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
from istiobuild.arch import host_arch, parse_arch
from istiobuild.console import Console
from istiobuild.errors import Interrupted, IstiobuildError, UsageError
from istiobuild.plan import StageName, make_plan, render

F = TypeVar("F", bound=Callable[..., Any])

COMMON_HELP = {
    "release": "release to build (default 1.5.0; `invoke releases` lists them)",
    "arch": "target architecture: aarch64 or x86_64 (aliases arm64, amd64; default: this host's)",
    "toolchain": "toolchain profile: clang, clang-9, gcc, gcc-7.3 (default clang)",
    "workdir": "directory holding checkouts, caches, logs and artifacts (ISTIOBUILD_WORKDIR)",
    "mirror": "base URL or directory whose proxy, envoy, istio entries replace the upstream URLs (ISTIOBUILD_MIRROR)",
    "json": "print machine-readable JSON",
    "force": "proceed over local changes in a checkout after saving them in a git stash",
    "page_size": "kernel page size of the machine envoy will run on: auto, 4k or 64k (CentOS 7.6 on Kunpeng: 64k)",
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


def _context(
    release_name: str | None,
    arch: str | None,
    toolchain_name: str | None,
    *,
    force: bool = False,
    dry_run: bool = False,
    **cli: Any,
) -> executor.Context:
    """Settings from every layer, the release, the target, the toolchain and the plan."""
    settings, _ = config.load({"release": release_name, "arch": arch, "toolchain": toolchain_name, **cli})
    rel = release.get(settings.release)
    host = host_arch()
    target = parse_arch(settings.arch) if settings.arch else host
    tc = toolchain.get(settings.toolchain)
    built = make_plan(rel, target, tc, settings, host=host, host_page_size=doctor.host_page_size())
    return executor.Context(
        plan=built, release=rel, settings=settings, toolchain=tc, console=Console(), force=force, dry_run=dry_run
    )


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


@task(
    help=_help(
        "release",
        "arch",
        "toolchain",
        "workdir",
        "mirror",
        "json",
        "page_size",
        hub="image repository prefix (as for build)",
        push="plan the publish stage too",
        in_container="plan the toolchain, proxy and istio stages inside --builder",
        builder="builder image for --in-container",
    )
)
@handled
def plan(
    c: Context,
    release_: str | None = None,
    arch: str | None = None,
    toolchain_: str | None = None,
    workdir: str | None = None,
    mirror: str | None = None,
    json_: bool = False,
    page_size: str | None = None,
    hub: str | None = None,
    push: bool = False,
    in_container: bool = False,
    builder: str | None = None,
) -> None:
    """Print every stage of the build (argv, cwd, env, inputs, outputs, patches) without running it."""
    ctx = _context(
        release_,
        arch,
        toolchain_,
        workdir=workdir,
        mirror=mirror,
        page_size=page_size,
        hub=hub,
        push=push or None,
        in_container=in_container or None,
        builder=builder,
    )
    print(ctx.plan.dumps() if json_ else render(ctx.plan))


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
    ctx = _context(release_, None, None, workdir=workdir, mirror=mirror, force=force)
    executor.build(ctx, only=[StageName.CHECKOUT])


@task(help=_help("release", "arch", "workdir", "mirror", "page_size"))
@handled
def patch(
    c: Context,
    release_: str | None = None,
    arch: str | None = None,
    workdir: str | None = None,
    mirror: str | None = None,
    page_size: str | None = None,
) -> None:
    """Apply the release's patch series for the target arch (atomic, idempotent, recorded)."""
    ctx = _context(release_, arch, None, workdir=workdir, mirror=mirror, page_size=page_size)
    executor.build(ctx, only=[StageName.PATCH])


@task(
    help=_help(
        "release",
        "arch",
        "toolchain",
        "workdir",
        "mirror",
        "page_size",
        force="rerun every stage even if up to date; a checkout with local changes is saved in a git stash first",
        from_="rerun from this stage on: checkout, patch, toolchain, proxy, istio",
        jobs="bazel --jobs (default: bazel's own choice; `invoke doctor` suggests one)",
        remote_cache="bazel --remote_cache URL (credentials in it are never printed)",
        dry_run="print the commands each stage would run; run nothing",
        downloads="directory holding files upstream scripts would download (1.5.x wasm, 1.4.x helm); "
        "ISTIOBUILD_DOWNLOADS",
        hub="image repository prefix, e.g. 127.0.0.1:5000/istio (default istio); images are tagged "
        "<hub>/<name>:<tag>-<arm64|amd64>",
        tag="image tag (default: the release)",
        push="push the verified images to --hub (credentials from the docker config, never printed)",
        in_container="run the toolchain, proxy and istio stages inside --builder (for the target platform)",
        builder="builder image for --in-container (see dockerfiles/)",
    )
)
@handled
def build(
    c: Context,
    release_: str | None = None,
    arch: str | None = None,
    toolchain_: str | None = None,
    workdir: str | None = None,
    mirror: str | None = None,
    page_size: str | None = None,
    force: bool = False,
    from_: str | None = None,
    jobs: int | None = None,
    remote_cache: str | None = None,
    dry_run: bool = False,
    downloads: str | None = None,
    hub: str | None = None,
    tag: str | None = None,
    push: bool = False,
    in_container: bool = False,
    builder: str | None = None,
) -> None:
    """Run the pipeline in plan order; resumes where it stopped and skips stages that are up to date.

    A bazel --remote_header is a secret: set it with ISTIOBUILD_REMOTE_HEADER or in istiobuild.toml,
    never on the command line.
    """
    ctx = _context(
        release_,
        arch,
        toolchain_,
        workdir=workdir,
        mirror=mirror,
        page_size=page_size,
        jobs=jobs,
        remote_cache=remote_cache,
        downloads=downloads,
        hub=hub,
        tag=tag,
        push=push or None,
        in_container=in_container or None,
        builder=builder,
        force=force,
        dry_run=dry_run,
    )
    start = None
    if from_:
        try:
            start = StageName(from_)
        except ValueError:
            raise UsageError(
                f"unknown stage {from_!r}", hint=f"stages: {', '.join(s.value for s in StageName)}"
            ) from None
    ctx.console.info(
        f"building {ctx.release.version} for {ctx.plan.arch} with {ctx.plan.toolchain} in {ctx.settings.workdir}"
    )
    executor.build(ctx, from_stage=start, use_stamps=True)


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
    ctx = _context(release_, arch, toolchain_)
    checks = doctor.run_checks(ctx.plan, ctx.release, ctx.toolchain, ctx.settings)
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


@task(
    help={
        "image": "image to verify (repeatable)",
        "arch": "the arch the images must be for: aarch64 or x86_64",
        "labels": "also require istiobuild's OCI labels naming the source repos and commits",
        "json": "print machine-readable JSON",
    },
    iterable=["image"],
)
@handled
def verify(c: Context, image: list[str], arch: str = "", labels: bool = False, json_: bool = False) -> None:
    """Verify images, also ones built elsewhere: platform, every ELF's arch, envoy --version, labels."""
    from istiobuild import images

    if not image:
        raise UsageError("no image to verify", hint="pass --image NAME (repeatable)")
    target = parse_arch(arch) if arch else host_arch()
    cli = images.client()
    findings = []
    for name in image:
        wanted = None
        if labels:
            found = cli.images.get(name).attrs.get("Config", {}).get("Labels") or {}
            wanted = {k: v for k, v in found.items() if k.startswith("io.istiobuild.")} or {
                "io.istiobuild.release": "?"
            }
        findings += images.verify_image(cli, name, target, labels=wanted)
    if json_:
        print(json.dumps([vars(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{'ok' if f.ok else 'FAIL':<4}  {f.image}  {f.what}")
    bad = [f for f in findings if not f.ok]
    if bad:
        raise Exit(f"error: {bad[0].image}: {bad[0].what}", code=7)


@task(
    help={
        "hub": "image repository prefix the per-arch images were pushed to, e.g. 127.0.0.1:5000/istio",
        "tag": "the tag to create; joins <name>:<tag>-arm64 and <name>:<tag>-amd64",
        "names": "image names, comma-separated (default: every image of the release's DOCKER_TARGETS)",
        "arches": "arches to join, comma-separated (default aarch64,x86_64)",
        "release": "release whose images these are (default 1.5.0)",
        "insecure": "talk plain HTTP to the registry (default: only for localhost / 127.x)",
    }
)
@handled
def manifest(
    c: Context,
    hub: str,
    tag: str = "",
    names: str = "",
    arches: str = "aarch64,x86_64",
    release_: str | None = None,
    insecure: bool = False,
) -> None:
    """Join per-arch images, built in different runs or on different machines, into multi-arch tags."""
    from istiobuild import images

    settings, _ = config.load({"release": release_})
    rel = release.get(settings.release)
    wanted = [parse_arch(a) for a in arches.split(",") if a]
    tag = tag or rel.version
    image_names = [n for n in names.split(",") if n] or [
        t.removeprefix("docker.") for t in rel.docker_targets if all(t in rel.docker_targets_for(a) for a in wanted)
    ]
    local = hub.split("/", 1)[0].split(":", 1)[0] in ("localhost", "127.0.0.1") or hub.startswith("127.")
    log = settings.workdir / "logs" / f"manifest-{tag}.log"
    for name in image_names:
        target = f"{hub}/{name}:{tag}"
        images.manifest(target, [f"{target}-{a.goarch}" for a in wanted], insecure=insecure or local, log=log)
        print(f"{target}: {', '.join(a.oci_platform for a in wanted)}")


@task(
    help={
        "image": "name for the builder image (default istiobuild/host-builder:<goarch>)",
        "workdir": COMMON_HELP["workdir"],
    }
)
@handled
def host_builder(c: Context, image: str = "", workdir: str | None = None) -> None:
    """Make a builder image offline from this machine's installed Debian packages (for --in-container)."""
    from istiobuild import hostbuilder, images

    settings, _ = config.load({"workdir": workdir})
    images.client()
    name = image or f"istiobuild/host-builder:{host_arch().goarch}"
    hostbuilder.make(name, settings.cache / "host-builder", settings.workdir / "logs" / "host-builder.log")
    print(name)


ns = Collection(releases, plan, checkout, patch, build, example, verify, manifest)
ns.add_task(doctor_, name="doctor")

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
            print(
                f"    {mark} {o.arch.value:<7} {o.page_size:<3} {o.component.value:<5} {o.patches} patches {series} "
                f"{o.detail}"
            )
    print(f"{passed} of {len(names)} releases pass")
    if failed:
        raise Exit(code=5)


ns.add_task(check_patches, name="check-patches")
ns.add_task(host_builder, name="host-builder")

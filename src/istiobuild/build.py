"""Executing a plan: the stages `invoke build` runs, in plan order, resumable."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from istiobuild import baseimages, container, doctor, downloads, sources, stamps
from istiobuild import patches as patchmod
from istiobuild.arch import Arch
from istiobuild.config import Settings
from istiobuild.console import Console
from istiobuild.elf import elf_files, is_elf
from istiobuild.elf import read as read_elf
from istiobuild.errors import IstiobuildError, PatchError, StepFailed, ToolError, UsageError
from istiobuild.git import head
from istiobuild.plan import INTERNAL, BuildPlan, Stage, StageName, Step, remote_flagfile, secret_bazel_flags
from istiobuild.release import Component, Release
from istiobuild.resources import data_root
from istiobuild.run import run, which
from istiobuild.toolchain import Toolchain


@dataclasses.dataclass(frozen=True, kw_only=True)
class Context:
    """What the executors need besides the plan."""

    plan: BuildPlan
    release: Release
    settings: Settings
    toolchain: Toolchain
    console: Console
    force: bool = False
    dry_run: bool = False

    @property
    def out_dir(self) -> Path:
        return self.settings.workdir / f"{self.release.version}-{self.plan.arch.value}"

    @property
    def artifacts(self) -> Path:
        return self.out_dir / "artifacts"

    def log(self, stage: str) -> Path:
        return self.settings.workdir / "logs" / f"{self.release.version}-{self.plan.arch.value}-{stage}.log"

    def secrets(self) -> list[str]:
        return [self.settings.remote_header, *secret_bazel_flags(self.settings)]


def ensure_example(release: Release, settings: Settings, console: Console) -> None:
    """Generate the miniature upstream repositories when the release points at them."""
    if not any(url.startswith(sources.EXAMPLE_SCHEME) for url in release.urls.values()):
        return
    if settings.mirror or settings.repos:
        return
    from istiobuild import example

    dest = sources.example_upstream(settings)
    repos = example.generate(dest)
    console.info(f"example upstream repositories ready in {dest} ({', '.join(sorted(repos))})")


# ---------------------------------------------------------------------------------------------
# checkout and patch


def do_checkout(ctx: Context) -> None:
    ensure_example(ctx.release, ctx.settings, ctx.console)
    for src in sources.sources(ctx.release, ctx.settings):
        result = sources.checkout(ctx.settings, src, force=ctx.force, note=ctx.console.info)
        ctx.console.info(f"{src.component}: {result.action} at {result.commit[:12]} in {result.path}")


def do_patch(ctx: Context) -> dict[str, object]:
    """Apply each component's series; returns the record (patch names and sha256 per component)."""
    plan, release, settings = ctx.plan, ctx.release, ctx.settings
    stage = plan.stage(StageName.PATCH)
    record: dict[str, object] = {}
    srcs = {s.component: s for s in sources.sources(release, settings)}
    # Check every component before changing any: a conflict in istio must not leave envoy patched.
    work: list[tuple[Component, list[patchmod.PatchSource]]] = []
    for comp in Component:
        path = srcs[comp].path
        if not (path / ".git").exists():
            raise UsageError(
                f"{path} is not checked out", hint=f"run `invoke checkout --release {release.version}` first"
            )
        wanted = [
            patchmod.PatchSource(name=name, path=data_root() / name) for name in stage.patches.get(comp.value, ())
        ]
        if comp is Component.ISTIO:
            generated = baseimages.patch_for(path, stage.data.get("base_images", {}), wanted)
            if generated is not None:
                wanted.append(generated)
        clean, _ = patchmod.pristine_or_ours(path)
        if not clean:
            raise PatchError(
                f"{path} has local changes that istiobuild did not make",
                hint="commit or stash them first, or run checkout with --force to save them in a git stash",
            )
        patchmod.check(path, head(path), wanted)
        work.append((comp, wanted))
    for comp, wanted in work:
        state, changed = patchmod.apply(srcs[comp].path, wanted)
        verb = "applied" if changed else "already applied"
        ctx.console.info(
            f"{comp}: {verb} {len(state.patches)} patches" + "".join(f"\n    {n}" for n, _ in state.patches)
        )
        record[comp.value] = [{"name": n, "sha256": s} for n, s in state.patches]
    out = ctx.out_dir / "patches.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    return record


# ---------------------------------------------------------------------------------------------
# toolchain


def _compiler_version(ctx: Context, cc: str) -> str:
    argv = [cc, "--version"]
    if ctx.settings.in_container:
        argv = in_builder(ctx, argv, ctx.settings.workdir, {})
    result = run(argv, capture=True, check=False, what=f"run {cc} --version")
    first = (result.stdout or "\n".join(result.tail)).strip().splitlines()
    return first[0] if first else ""


def do_toolchain(ctx: Context) -> None:
    """The compilers exist, their version is in the profile's range, and they build for the target."""
    tc, arch, host = ctx.toolchain, ctx.plan.arch, ctx.plan.host
    binaries = tc.binaries_for(arch, host)
    for role in ("cc", "cxx"):
        if not ctx.settings.in_container and which(binaries[role]) is None:
            raise ToolError(
                f"{binaries[role]} ({role} of toolchain {tc.name}) is not installed",
                hint=f"install it (`invoke doctor --toolchain {tc.name}` lists every tool), or pick another "
                "--toolchain (clang, gcc, clang-9, gcc-7.3)",
            )
    line = _compiler_version(ctx, binaries["cc"])
    version = _version_in(line)
    if not version or not tc.accepts(version):
        raise ToolError(
            f"{binaries['cc']} is version {version or 'unknown'} ({line!r}); "
            f"toolchain {tc.name} needs {tc.version_range}",
            hint="install a suitable compiler or choose a toolchain profile that matches (toolchains/*.toml)",
        )
    # Prove it: compile a tiny program for the target and read the result back.
    probe = ctx.out_dir / "toolchain-probe"
    probe.mkdir(parents=True, exist_ok=True)
    source = probe / "probe.c"
    source.write_text('#include <stdio.h>\nint main(void) { puts("probe"); return 0; }\n')
    env = tc.env_for(arch, host)
    flags = [f"--target={arch.triple}"] if (arch != host and tc.family.value == "clang") else []
    probe_argv = [binaries["cc"], *flags, "-static", str(source), "-o", str(probe / "probe")]
    probe_env = {k: v for k, v in env.items() if k not in ("CFLAGS", "CXXFLAGS", "LDFLAGS")}
    if ctx.settings.in_container:
        probe_argv, probe_env = in_builder(ctx, probe_argv, probe, probe_env), {}
    run(
        probe_argv,
        env=probe_env,
        log=ctx.log("toolchain"),
        what=f"compile a test program for {arch} with {binaries['cc']}",
    )
    info = read_elf(probe / "probe")
    if info.arch is not arch or info.compiler != tc.family.value:
        raise ToolError(
            f"{binaries['cc']} built a {info.machine_name} {info.compiler} binary, expected {arch} {tc.family.value}",
            log=ctx.log("toolchain"),
        )
    record = {"toolchain": tc.name, "cc": binaries["cc"], "version": version, "line": line, "target": arch.value}
    (ctx.out_dir / "toolchain.json").write_text(json.dumps(record, indent=2) + "\n")
    ctx.console.info(f"toolchain {tc.name}: {line} -> {arch} ok")


def _version_in(line: str) -> str:
    """The version in a `cc --version` first line ("... clang version 14.0.6", "gcc (Debian 12.2.0-14) 12.2.0")."""
    tail = line.split("version", 1)[1] if "version" in line else line.rsplit(")", 1)[-1]
    match = re.search(r"(\d+\.\d+(?:\.\d+)?)", tail) or re.search(r"(\d+\.\d+(?:\.\d+)?)", line)
    return match.group(1) if match else ""


# ---------------------------------------------------------------------------------------------
# proxy and istio


def in_builder(ctx: Context, argv: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    """The docker run argv for a command of a containerized stage."""
    home = ctx.settings.cache / "builder-home"
    home.mkdir(parents=True, exist_ok=True)
    return container.wrap(
        argv,
        image=ctx.settings.builder,
        platform=ctx.plan.arch.oci_platform,
        cwd=cwd,
        env=env,
        mounts=[ctx.settings.workdir, ctx.settings.cache],
        home=home,
    )


def run_step(ctx: Context, stage: str, step: Step) -> None:
    """One planned command, logged in full to its file, its tail on screen when it fails."""
    log = ctx.log(stage)
    argv, env = list(step.argv), dict(step.env)
    if step.container:
        argv, env = in_builder(ctx, argv, Path(step.cwd), env), {}
    with ctx.console.live(f"{stage}: {' '.join(step.argv[:2])}", log) as on_line:
        run(
            argv,
            cwd=Path(step.cwd),
            env=env,
            log=log,
            secrets=ctx.secrets(),
            on_line=on_line,
            dry_run=ctx.dry_run,
            echo=ctx.console.info if ctx.dry_run else None,
            what=f"stage {stage} ({' '.join(step.argv[:2])})",
        )


sha256_of = downloads.sha256_file


def run_target_binary(ctx: Context, binary: Path, *args: str, stage: str) -> str:
    """Run a target-arch binary: natively, through binfmt, or under qemu-user."""
    arch, host = ctx.plan.arch, ctx.plan.host
    argv = [str(binary), *args]
    if arch != host:
        binfmt = Path("/proc/sys/fs/binfmt_misc") / arch.qemu
        if not binfmt.exists():
            qemu = which(f"{arch.qemu}-static") or which(arch.qemu)
            if qemu is None:
                raise ToolError(
                    f"cannot run {arch} binaries on this {host} host: no binfmt registration and no {arch.qemu}",
                    hint="install qemu-user-static and register binfmt (as root: "
                    "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable)",
                )
            argv = [qemu, *argv]
    result = run(argv, capture=True, log=ctx.log(stage), what=f"run {binary.name} {' '.join(args)} for {arch}")
    return result.stdout.strip()


def collect_envoy(ctx: Context, built: Path, dest: Path) -> dict[str, str]:
    """Copy envoy into artifacts with its sha256; check it is an ELF of the target; run --version."""
    if not built.exists():
        raise StepFailed(
            f"the proxy build finished but {built} does not exist",
            hint="the envoy target or output path in the release data may be wrong",
            log=ctx.log("proxy"),
        )
    real = built.resolve()
    if not is_elf(real):
        raise StepFailed(f"{built} is not an ELF binary", log=ctx.log("proxy"))
    info = read_elf(real)
    if info.arch is not ctx.plan.arch:
        raise StepFailed(
            f"{built} is a {info.machine_name} binary, but the target is {ctx.plan.arch}",
            hint="the toolchain built for the wrong arch; check the toolchain stage and CC/CXX",
            log=ctx.log("proxy"),
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(real, tmp)
    tmp.chmod(0o755)
    tmp.replace(dest)
    digest = sha256_of(dest)
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")
    version = run_target_binary(ctx, dest, "--version", stage="proxy")
    record = {
        "path": str(dest),
        "sha256": digest,
        "arch": ctx.plan.arch.value,
        "compiler": info.compiler,
        "comment": "; ".join(info.comment),
        "version": version,
    }
    (ctx.artifacts / "envoy.json").write_text(json.dumps(record, indent=2) + "\n")
    ctx.console.info(
        f"envoy {digest[:16]} ({ctx.plan.arch}, {info.compiler}): {version.splitlines()[0] if version else ''}"
    )
    return record


def cross_links(bindir: Path, links: Iterable[str]) -> None:
    """bindir/<link> -> the resolved compiler, for each "link=compiler"."""
    bindir.mkdir(parents=True, exist_ok=True)
    for spec in links:
        link, _, name = spec.partition("=")
        target = which(name)
        if target is None:
            raise ToolError(f"{name} is not installed", hint="`invoke doctor` lists the tools the build needs")
        path = bindir / link
        path.unlink(missing_ok=True)
        path.symlink_to(target)


def do_proxy(ctx: Context) -> None:
    stage = ctx.plan.stage(StageName.PROXY)
    flags = secret_bazel_flags(ctx.settings)
    if flags:
        path = remote_flagfile(ctx.settings)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(flags) + "\n")
    try:
        for step in stage.steps:
            if step.argv[:2] == (INTERNAL, "cross-links"):
                cross_links(Path(step.argv[2]), step.argv[3:])
            elif step.argv[:2] == (INTERNAL, "collect-envoy"):
                if not ctx.dry_run:
                    collect_envoy(ctx, Path(step.argv[2]), Path(step.argv[3]))
            else:
                run_step(ctx, "proxy", step)
    finally:
        if flags:
            remote_flagfile(ctx.settings).unlink(missing_ok=True)


def check_elves(root: Path, arch: Arch) -> list[Path]:
    """Every ELF under root must be for `arch`; returns them."""
    found = list(elf_files(root))
    wrong = [(p, read_elf(p).machine_name) for p in found if read_elf(p).arch is not arch]
    if wrong:
        path, machine = wrong[0]
        raise StepFailed(
            f"{path} is a {machine} binary, but the target is {arch}"
            + (f" ({len(wrong) - 1} more wrong-arch files)" if len(wrong) > 1 else ""),
            hint="the Go build did not honour the target arch (check the istio patch series: build-linux GOARCH)",
        )
    return found


def _downloads(stage: Stage) -> list[downloads.Download]:
    return [
        downloads.Download(
            name=d["name"],
            url=d["url"],
            sha256=d.get("sha256", ""),
            into=d["into"],
            place=tuple(d["place"]),
            extract=d.get("extract", ""),
            touch=tuple(d.get("touch", ())),
        )
        for d in stage.data.get("downloads", ())
    ]


def check_downloads(ctx: Context) -> None:
    """Every file the istio stage must place is obtainable: supplied, cached, or pinned."""
    supplied = Path(ctx.settings.downloads) if ctx.settings.downloads else None
    for item in _downloads(ctx.plan.stage(StageName.ISTIO)):
        if item.sha256:
            continue
        if supplied is None or not (supplied / item.name).is_file():
            where = f"{supplied}" if supplied else "a directory named by --downloads / ISTIOBUILD_DOWNLOADS"
            raise UsageError(
                f"the istio stage needs {item.name}, which has no pinned sha256, and it was not supplied",
                hint=f"fetch {item.url} yourself, check it, and put it in {where}; nothing was changed",
            )


def prepare_istio(ctx: Context, stage: Stage) -> None:
    """Place every file init.sh would download, and the local envoy where the release wants it."""
    supplied = Path(ctx.settings.downloads) if ctx.settings.downloads else None
    record = {}
    for item in _downloads(stage):
        source, how = downloads.obtain(item, supplied=supplied, cache=ctx.settings.cache / "downloads")
        placed = downloads.place(item, source, Path(item.into))
        record[item.name] = {"sha256": downloads.sha256_file(source), "from": how, "placed": [str(p) for p in placed]}
        ctx.console.info(f"placed {item.name} ({how}) as {', '.join(p.name for p in placed)}")
    for move in stage.data.get("placements", ()):
        directory = Path(move["into"])
        directory.mkdir(parents=True, exist_ok=True)
        for name in move["place"]:
            shutil.copyfile(move["from"], directory / name)
            (directory / name).chmod(0o755)
    # init.sh runs only when this stamp is missing: make it run against the files just placed.
    (Path(stage.data["istio_out"]) / "istio_is_init").unlink(missing_ok=True)
    ctx.artifacts.mkdir(parents=True, exist_ok=True)
    (ctx.artifacts / "downloads.json").write_text(json.dumps(record, indent=2) + "\n")


def do_istio(ctx: Context) -> None:
    stage = ctx.plan.stage(StageName.ISTIO)
    for step in stage.steps:
        if step.argv[0] == INTERNAL:
            if not ctx.dry_run:
                prepare_istio(ctx, stage)
        else:
            run_step(ctx, "istio", step)
    if ctx.dry_run:
        return
    out = Path(stage.outputs[0])
    if not out.is_dir():
        raise StepFailed(f"istio's build finished but {out} does not exist", log=ctx.log("istio"))
    elves = check_elves(out, ctx.plan.arch)
    record = {str(p.relative_to(out)): {"sha256": sha256_of(p)} for p in elves}
    (ctx.artifacts).mkdir(parents=True, exist_ok=True)
    (ctx.artifacts / "istio.json").write_text(json.dumps(record, indent=2) + "\n")
    ctx.console.info(f"istio: {len(elves)} ELF files, all {ctx.plan.arch}")


# ---------------------------------------------------------------------------------------------
# images, verify, publish, record


def do_images(ctx: Context) -> None:
    from istiobuild import images

    stage = ctx.plan.stage(StageName.IMAGES)
    cli = images.client()
    for step in stage.steps:
        if step.argv[:2] == (INTERNAL, "base-images"):
            made = images.ensure_base_images(
                cli, stage.data["base_images"], ctx.plan.arch, ctx.settings.cache, ctx.log("images")
            )
            for image in made:
                ctx.console.info(f"base image {image} imported from a local rootfs")
        elif step.argv[:2] == (INTERNAL, "finalize"):
            for image in step.argv[2:]:
                if not images.has_image(cli, image):
                    raise StepFailed(f"istio's make docker finished but {image} does not exist", log=ctx.log("images"))
                images.finalize(cli, image, stage.data["labels"], ctx.plan.arch, ctx.out_dir / "image-scratch")
        else:
            run_step(ctx, "images", step)
    for image in stage.outputs:
        if not images.has_image(cli, image):
            raise StepFailed(f"istio's make docker finished but {image} does not exist", log=ctx.log("images"))
    ctx.console.info(f"images: {', '.join(stage.outputs)}")


def do_verify(ctx: Context) -> None:
    from istiobuild import images

    stage = ctx.plan.stage(StageName.VERIFY)
    cli = images.client()
    findings = []
    for image in stage.inputs:
        findings += images.verify_image(cli, image, ctx.plan.arch, labels=stage.data.get("labels"))
    report = [dataclasses.asdict(f) for f in findings]
    Path(stage.outputs[0]).write_text(json.dumps(report, indent=2) + "\n")
    bad = [f for f in findings if not f.ok]
    for finding in findings:
        if finding.ok:
            ctx.console.info(f"{finding.image}: {finding.what}")
    if bad:
        raise StepFailed(
            f"{bad[0].image}: {bad[0].what}" + (f" (and {len(bad) - 1} more problems)" if len(bad) > 1 else ""),
            hint=f"every finding is in {stage.outputs[0]}",
        )


def do_publish(ctx: Context) -> None:
    from istiobuild import images

    stage = ctx.plan.stage(StageName.PUBLISH)
    digests = images.push(images.client(), stage.inputs)
    Path(stage.outputs[0]).write_text(json.dumps(digests, indent=2) + "\n")
    for image, digest in digests.items():
        ctx.console.info(f"pushed {image} {digest}")


def do_record(ctx: Context) -> None:
    """What was built, from what, with what: one JSON file per release and arch."""

    def load(path: Path) -> object:
        return json.loads(path.read_text()) if path.is_file() else None

    record = {
        "release": ctx.release.version,
        "arch": ctx.plan.arch.value,
        "host": ctx.plan.host.value,
        "page_size": ctx.plan.page_size,
        "pins": {c.value: dataclasses.asdict(p) for c, p in ctx.release.pins.items()},
        "patches": load(ctx.out_dir / "patches.json"),
        "toolchain": load(ctx.out_dir / "toolchain.json"),
        "envoy": load(ctx.artifacts / "envoy.json"),
        "istio": load(ctx.artifacts / "istio.json"),
        "downloads": load(ctx.artifacts / "downloads.json"),
        "images": list(ctx.plan.stage(StageName.IMAGES).outputs),
        "verify": load(ctx.out_dir / "verify.json"),
        "pushed": load(ctx.out_dir / "pushed.json"),
    }
    path = Path(ctx.plan.stage(StageName.RECORD).outputs[0])
    path.write_text(json.dumps(record, indent=2) + "\n")
    ctx.console.info(f"build record: {path}")


# ---------------------------------------------------------------------------------------------
# the pipeline

RUNNERS: dict[StageName, Callable[[Context], object]] = {
    StageName.CHECKOUT: do_checkout,
    StageName.PATCH: do_patch,
    StageName.TOOLCHAIN: do_toolchain,
    StageName.PROXY: do_proxy,
    StageName.ISTIO: do_istio,
    StageName.IMAGES: do_images,
    StageName.VERIFY: do_verify,
    StageName.PUBLISH: do_publish,
    StageName.RECORD: do_record,
}
IMPLEMENTED_NOW = frozenset(RUNNERS)


def stage_key(previous: str, stage: Stage) -> str:
    """Inputs of a stage: its planned commands, the patch files' content, chained to the previous stage."""
    extra = []
    for names in stage.patches.values():
        extra += [(name, sha256_of(data_root() / name)) for name in names]
    return stamps.key(previous, dataclasses.asdict(stage), extra)


def _images_present(names: Iterable[str]) -> bool:
    """A stamped images stage is only up to date while its images still exist."""
    result = run(["docker", "image", "inspect", "--format", "{{.Id}}", *names], capture=True, check=False)
    return result.returncode == 0


def _preflight(ctx: Context, stages: Iterable[StageName]) -> None:
    """Run the doctor's checks for the stages about to run; stop before any work if one fails."""
    needed = {s.value for s in stages}
    if ctx.settings.in_container and needed & {"toolchain", "proxy", "istio"}:
        from istiobuild import images

        cli = images.client()
        if not images.has_image(cli, ctx.settings.builder):
            raise ToolError(
                f"builder image {ctx.settings.builder} does not exist",
                hint="build it from dockerfiles/ (dockerfiles/README.md), for the target platform",
            )
        os_, have = images.image_arch(cli, ctx.settings.builder)
        if have != ctx.plan.arch.goarch:
            raise ToolError(
                f"builder image {ctx.settings.builder} is {os_}/{have}, the target is {ctx.plan.arch.oci_platform}",
                hint=f"build the builder with --platform {ctx.plan.arch.oci_platform}",
            )
        in_builder_stages = {"toolchain", "proxy", "istio"}
    else:
        in_builder_stages = set()
    if "istio" in needed:
        check_downloads(ctx)
    if in_builder_stages:  # those are checked in the builder (above), not on the host
        needed = (needed - in_builder_stages) | {"images"}
    checks = doctor.run_checks(ctx.plan, ctx.release, ctx.toolchain, ctx.settings, stages=needed)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise ToolError(
            "; ".join(f"{c.name}: found {c.found}, need {c.required}" for c in failed),
            hint="\n".join(f"fix {c.name}: {c.fix}" for c in failed)
            + f"\n`invoke doctor --release {ctx.release.version} --arch {ctx.plan.arch}"
            f" --toolchain {ctx.toolchain.name}` shows every check; nothing was changed",
        )


def build(
    ctx: Context,
    *,
    only: Iterable[StageName] | None = None,
    from_stage: StageName | None = None,
    use_stamps: bool = False,
) -> list[str]:
    """Run the implemented stages in plan order; returns what happened to each."""
    wanted = set(only) if only is not None else None
    order = [s.name for s in ctx.plan.stages]
    if from_stage is not None and from_stage not in IMPLEMENTED_NOW:
        raise UsageError(f"--from {from_stage.value}: that stage is not implemented yet")
    to_run = [s for s in ctx.plan.stages if (wanted is None or s.name in wanted) and s.name in IMPLEMENTED_NOW]
    summary: list[str] = []
    book = stamps.Stamps(ctx.out_dir / "stamps")
    with stamps.workdir_lock(ctx.settings.workdir):
        keys: dict[StageName, str] = {}
        previous = ""
        for stage in ctx.plan.stages:
            previous = stage_key(previous, stage)
            keys[stage.name] = previous
        pending = [
            s
            for s in to_run
            if not use_stamps
            or ctx.force
            or (from_stage is not None and order.index(s.name) >= order.index(from_stage))
            or not book.matches(s.name.value, keys[s.name])
            or (s.name is StageName.IMAGES and not _images_present(s.outputs))
        ]
        if pending:  # everything after the first stage that runs runs too
            first = to_run.index(pending[0])
            pending = to_run[first:]
        if pending and not ctx.dry_run:
            _preflight(ctx, [s.name for s in pending])
        for stage in ctx.plan.stages:
            name = stage.name.value
            if wanted is not None and stage.name not in wanted:
                continue
            if stage.name not in IMPLEMENTED_NOW:
                ctx.console.skip(name, "planned; not implemented in this version (see `invoke plan`)")
                summary.append(f"{name}: not implemented")
                continue
            if stage not in pending:
                ctx.console.skip(name, "up to date")
                summary.append(f"{name}: up to date")
                continue
            ctx.console.start(name, stage.summary)
            start = time.monotonic()
            book.clear(name)
            try:
                RUNNERS[stage.name](ctx)
            except IstiobuildError as exc:
                if exc.log is None and ctx.log(name).exists():
                    exc.log = ctx.log(name)
                exc.message = (
                    f"stage {name} failed: {exc.message}" if not exc.message.startswith("stage ") else exc.message
                )
                raise
            if not ctx.dry_run and use_stamps:
                book.write(name, keys[stage.name], [o for o in stage.outputs if o.startswith("/")])
            ctx.console.done(name, time.monotonic() - start)
            summary.append(f"{name}: done")
    return summary

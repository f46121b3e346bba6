"""What each task does, without invoke: settings, validation, the plan, the pipeline; results on stdout."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild import config, doctor, grammar, release, secrets, toolchain
from istiobuild.arch import Arch, host_arch, parse_arch
from istiobuild.console import Console
from istiobuild.errors import UsageError
from istiobuild.executor import Executor
from istiobuild.plan import BuildPlan, make_plan, render
from istiobuild.steps import StageName


@dataclasses.dataclass(frozen=True, kw_only=True)
class Build:
    plan: BuildPlan
    executor: Executor
    toolchain: toolchain.Toolchain


def prepare(
    settings_cli: Mapping[str, Any],
    *,
    force: bool = False,
    dry_run: bool = False,
    allow_modified: bool = False,
    host: str = "",
) -> Build:
    """Settings from every layer, validated before anything else; then the release, target, toolchain, plan.

    `host` (plan only) plans as if on a machine of that arch, e.g. to read a native aarch64 plan here."""
    settings, _ = config.load(settings_cli)  # validated: every value against its grammar
    rel = release.get(settings.release)
    host_ = parse_arch(host) if host else host_arch()
    target = parse_arch(settings.arch) if settings.arch else host_
    tc = toolchain.get(settings.toolchain)
    built = make_plan(
        rel, target, tc, settings, host=host_, host_page_size=doctor.host_page_size(), ci=os.environ.get("CI") == "true"
    )
    ex = Executor(
        settings=settings,
        release=rel,
        layout=built.layout,
        console=Console(),
        dry_run=dry_run,
        force=force,
        allow_modified=allow_modified,
    )
    secrets.register_secret(*ex.secrets())  # masked in every log and kept out of every child's environment
    # the line's compiler floor (1.26: clang 18) for doctor and the preflight too, as the plan applies it
    return Build(plan=built, executor=ex, toolchain=tc.at_least(rel.toolchains_min))


def stage_name(text: str, what: str) -> StageName:
    try:
        return StageName(text)
    except ValueError:
        raise UsageError(
            f"{what} {text!r} is not a stage", hint=f"stages: {', '.join(s.value for s in StageName)}"
        ) from None


def run_build(b: Build, *, start: str = "", to: str = "", only: list[StageName] | None = None) -> list[str]:
    from istiobuild import pipeline
    from istiobuild.errors import IstiobuildError

    names = [s.name for s in b.plan.stages]
    if to:
        last = stage_name(to, "--to")
        if last not in names:
            raise UsageError(f"--to {to}: that stage is not part of this plan")
        only = names[: names.index(last) + 1]
    first = stage_name(start, "--from") if start else None
    ex = b.executor
    try:
        done = pipeline.run(ex, b.plan, b.toolchain, only=only, start=first)
    except IstiobuildError as exc:  # annotated in CI, summarized; the task prints the error itself
        ex.console.error(exc)
        ex.console.finish(b.plan.layout, error=exc.message, summary=not ex.dry_run)
        raise
    ex.console.finish(b.plan.layout, summary=not ex.dry_run)  # a dry run writes nothing, not even a summary
    return done


def show_plan(b: Build, *, as_json: bool) -> None:
    print(b.plan.dumps() if as_json else render(b.plan))


def releases(*, as_json: bool) -> None:
    matrix = release.matrix()
    if as_json:
        rows = [
            {
                "release": r.version,
                "line": r.line,
                "buildable": r.buildable,
                "source_date_epoch": r.source_date_epoch,
                **{comp.value: {k: v for k, v in vars(pin).items() if v} for comp, pin in r.pins.items()},
                "bazel": r.bazel_version,
                "go": r.go,
                "wee8": r.wee8,
                "series": {k.value: list(v) for k, v in r.series.items()},
                "note": r.note,
                "mechanism": r.mechanism.to_json() if r.mechanism else None,
            }
            for r in matrix.values()
        ]
        print(json.dumps(rows, indent=2))
        return
    table = [("release", "build", "proxy", "envoy", "istio", "bazel", "go", "wee8")]
    for r in matrix.values():
        envoy = r.pins[release.Component.ENVOY]
        table.append((r.version, "yes" if r.buildable else "pinned", r.pins[release.Component.PROXY].commit[:12],
                     f"{envoy.repo}@{envoy.commit[:8]}", r.pins[release.Component.ISTIO].commit[:12],
                     r.bazel_version, r.go, r.wee8 or "-"))  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print(" ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1])


def run_doctor(b: Build, *, as_json: bool) -> bool:
    p = b.plan
    checks = doctor.run_checks(
        arch=p.arch,
        host=p.host,
        page_size=p.page_size,
        release=b.executor.release,
        toolchain=b.toolchain,
        settings=b.executor.settings,
        proxy_dir=p.layout.checkout(release.Component.PROXY),
    )
    print(json.dumps([vars(x) for x in checks], indent=2) if as_json else doctor.table(checks))
    return all(x.ok for x in checks)


def verify_images(
    names: list[str], arch: str, *, labels: bool, as_json: bool, provenance: str = "", key: str = ""
) -> bool:
    from istiobuild import attest, dockerapi
    from istiobuild.stages.verify import verify_image

    if not names:
        raise UsageError("no image to verify", hint="pass --image NAME (repeatable)")
    images = [grammar.check_image_reference(n, "--image") for n in names]
    target = parse_arch(arch) if arch else host_arch()
    if key and not provenance:
        raise UsageError("--key checks the signature of a provenance", hint="pass --provenance FILE with --key")
    statement = attest.read(Path(provenance), Path(key) if key else None) if provenance else None
    cli = dockerapi.client()
    findings = []
    for name in images:
        wanted = None
        if labels:
            found = dockerapi.labels(cli, name)
            wanted = {k: v for k, v in found.items() if k.startswith("io.istiobuild.")} or {
                "io.istiobuild.release": "?"
            }
        findings += verify_image(cli, name, target, labels=wanted)
        if statement is not None:
            findings += _provenance_findings(cli, name, target, statement)
    if as_json:
        print(json.dumps([vars(f) for f in findings], indent=2))
    else:
        for f in findings:
            print(f"{'ok' if f.ok else 'FAIL':<4}  {f.image}  {f.what}")
    bad = [f for f in findings if not f.ok]
    if bad:
        raise_verify(bad[0].image, bad[0].what)
    return True


def _provenance_findings(cli: Any, image: str, arch: Arch, statement: tuple[dict[str, Any], str]) -> list[Any]:
    from istiobuild import attest
    from istiobuild.stages.verify import Finding

    doc, signer = statement
    subject = attest.subject_for(doc, attest.image_digests(cli, image))
    built_for = doc["predicate"]["buildDefinition"]["externalParameters"].get("arch", "")
    how = signer or "signature not checked (no --key)"
    return [
        Finding(image=image, ok=bool(subject), what=f"provenance: subject {subject} ({how})" if subject
                else "provenance: the image is not one of its subjects (another build, or changed since)"),
        Finding(image=image, ok=built_for == arch.value, what=f"provenance: built for {built_for or '?'}"),
        Finding(image=image, ok=attest.verification_passed(doc), what="provenance: the build's verification passed"
                if attest.verification_passed(doc) else "provenance: the build's verification did not pass"),
    ]  # fmt: skip


def raise_verify(image: str, what: str) -> None:
    from istiobuild.errors import StepFailed

    raise StepFailed(f"{image}: {what}", hint="`invoke verify --json` lists every finding")


def manifest(
    *, hub: str, tag: str, names: str, arches: str, release_name: str | None, insecure: bool, key: str,
    allow_unverified: bool, signing_key: str,
) -> None:  # fmt: skip
    from istiobuild import multiarch
    from istiobuild.stages.publish import manifest as join

    settings, _ = config.load({"release": release_name, **({"signing_key": signing_key} if signing_key else {})})
    hub = grammar.check_hub(hub, "--hub")
    rel = release.get(settings.release)
    wanted: list[Arch] = [parse_arch(a) for a in arches.split(",") if a]
    if len(set(wanted)) < 2:
        raise UsageError(f"--arches {arches!r} names fewer than two arches", hint="e.g. --arches aarch64,x86_64")
    tag = grammar.check_tag(tag or rel.version, "--tag")
    image_names = [n.strip() for n in names.split(",") if n.strip()] or [
        t.removeprefix("docker.") for t in rel.docker_targets if all(t in rel.docker_targets_for(a) for a in wanted)
    ]
    for name in image_names:
        grammar.check_image_reference(f"{hub}/{name}:{tag}", "--names")
    local = hub.split("/", 1)[0].split(":", 1)[0] in ("localhost", "127.0.0.1") or hub.startswith("127.")
    out = settings.workdir / f"manifest-{tag}"
    log = settings.workdir / "logs" / f"manifest-{tag}.log"
    public = Path(key) if key else None
    parts = {
        name: [
            multiarch.check(
                f"{hub}/{name}:{tag}-{a.goarch}",
                a,
                key=public,
                insecure=insecure or local,
                scratch=out / "scratch",
                log=log,
                allow=allow_unverified,
            )
            for a in wanted
        ]
        for name in image_names
    }  # every image is checked before the first join
    indexes = {}
    for name in image_names:
        target = f"{hub}/{name}:{tag}"
        indexes[target] = join(target, [p.reference for p in parts[name]], insecure=insecure or local, log=log)
        how = "; ".join(f"{p.arch}: {p.verified or 'NOT verified (--allow-unverified)'}" for p in parts[name])
        print(f"{target}: {', '.join(a.oci_platform for a in wanted)} ({how})")
    statement = multiarch.index_statement(
        indexes, [p for ps in parts.values() for p in ps], release=rel.version, hub=hub, tag=tag
    )
    key_path = Path(settings.signing_key) if settings.signing_key else None
    print(f"provenance: {multiarch.write(statement, out, key_path)}")


def example(dest: str) -> None:
    from istiobuild import example as example_mod

    for name, repo in sorted(example_mod.generate(Path(dest).resolve()).items()):
        print(f"{name:<6} {repo}")


def host_builder(image: str, workdir: str | None) -> None:
    """The rootfs tar is scratch of this run alone: a directory of its own under the workdir's cache (never the
    shared one, where two users would write one file), removed when done or failed."""
    import tempfile

    from istiobuild import dockerapi, hostbuilder
    from istiobuild.layout import Layout

    settings, _ = config.load({"workdir": workdir})
    dockerapi.client()
    name = grammar.check_image_reference(image or f"istiobuild/host-builder:{host_arch().goarch}", "--name")
    layout = Layout(workdir=settings.workdir, cache=settings.cache, release=settings.release, arch=host_arch())
    layout.workdir_cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="host-builder-", dir=layout.workdir_cache) as scratch:
        hostbuilder.make(name, Path(scratch), layout.logs / "host-builder.log")
    print(name)


def check_patches(mirrors: str, release_name: str | None) -> bool:
    from istiobuild import upstream

    root = mirrors or os.environ.get("ISTIOBUILD_UPSTREAM_MIRRORS", "")
    if not root or not Path(root).is_dir():
        raise UsageError(
            "no upstream mirrors to check against",
            hint="pass --mirrors DIR (or set ISTIOBUILD_UPSTREAM_MIRRORS) naming a directory with "
            "proxy, envoy and istio git repositories",
        )
    matrix = release.matrix()
    names = [release_name] if release_name else [v for v, r in matrix.items() if not r.example and r.buildable]
    passed = 0
    for name in names:
        outcomes = upstream.check_release(release.get(name, matrix), Path(root))
        good = all(o.ok for o in outcomes)
        passed += good
        print(f"{'PASS' if good else 'FAIL'} {name}")
        for o in outcomes:
            print(
                f"    {'ok  ' if o.ok else 'FAIL'} {o.arch.value:<7} {o.page_size:<3} {o.component.value:<5} "
                f"{o.patches} patches {','.join(o.series)} {o.detail}"
            )
    print(f"{passed} of {len(names)} releases pass")
    return passed == len(names)


def rebuild(record_path: str, workdir: str, overrides: Mapping[str, Any]) -> bool:
    """Build again from a record's inputs in a fresh workdir (own caches) up to the images; compare every artifact."""
    from istiobuild import dockerapi
    from istiobuild import rebuild as rb

    path = Path(record_path).expanduser().resolve()
    record = rb.load(path)
    original = None
    if "subjects" not in record:  # a build record: its workdir holds the originals to compare with
        supplied = {k: v for k, v in overrides.items() if k.startswith("ztunnel") or k == "cargo"}
        original = prepare(rb.settings_of(record, supplied, path.parent.parent)).plan
    target = (
        Path(workdir).expanduser().resolve()
        if workdir
        else path.parent.parent.with_name(path.parent.parent.name + "-rebuild")
    )
    rb.fresh(target)
    settings = {**rb.settings_of(record, overrides, target), "cache_dir": str(target / "cache")}
    b = prepare(settings)
    b.executor.console.info(f"rebuilding {b.plan.release} for {b.plan.arch} with {b.plan.toolchain} in {target}")
    run_build(b, to="images")
    results = rb.outcomes(rb.subjects(record, original), b.plan, dockerapi.client())
    print("\n".join(rb.report(results)))
    return all(r.identical for r in results)

"""The invoke task collection, generated from one option table. Thin: flags in, `commands` does the work.

Exposed as `invoke <task>` in a checkout (tasks.py) and as the `istiobuild` console script. Imports
stay light here (`invoke --list` loads this module): the work is imported when a task runs.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import Task

from istiobuild.errors import Interrupted, IstiobuildError


@dataclasses.dataclass(frozen=True, kw_only=True)
class Option:
    """One command-line option: its flag, help, kind, and the setting (and ISTIOBUILD_* variable) it sets."""

    name: str  # the parameter; the flag is --name with _ as - (a trailing _ dropped)
    help: str
    kind: type = str
    setting: str = ""  # the config key it sets ("" = a switch of the command, not a setting)

    @property
    def help_text(self) -> str:
        env = f" (ISTIOBUILD_{self.setting.upper()})" if self.setting and self.kind is not bool else ""
        return self.help + env

    @property
    def default(self) -> object:
        return False if self.kind is bool else None


OPTIONS = {
    o.name: o
    for o in (
        Option(name="release", setting="release", help="release to build (default 1.5.0; `invoke releases` lists them)"),
        Option(name="arch", setting="arch", help="target arch: aarch64 or x86_64 (aliases arm64, amd64; default: this host's)"),
        Option(name="toolchain", setting="toolchain", help="toolchain profile: clang, clang-9, gcc, gcc-7.3 (default clang)"),
        Option(name="workdir", setting="workdir", help="directory holding checkouts, caches, logs and artifacts"),
        Option(name="mirror", setting="mirror", help="base URL or directory whose proxy, envoy, istio entries replace the upstream URLs"),
        Option(name="page_size", setting="page_size", help="kernel page size envoy will run with: auto, 4k or 64k"),
        Option(name="target_kernel", setting="target_kernel", help="the kernel envoy will run on, e.g. page_size=64k,va_bits=48 (va_bits optional); page size auto follows it"),
        Option(name="allocator", setting="allocator", help="envoy's allocator (1.22+): auto (gperftools for a target kernel with < 48-bit addresses), tcmalloc or gperftools"),
        Option(name="jobs", setting="jobs", help="bazel --jobs (default: bazel's own choice; `invoke doctor` suggests one)"),
        Option(name="remote_cache", setting="remote_cache", help="bazel remote cache URL, http(s) or grpc(s) (credentials in it are never printed)"),
        Option(name="remote_upload", setting="remote_upload", help="on|off: upload local results to the remote cache (default on; off = read it only)"),
        Option(name="remote_executor", setting="remote_executor", help="bazel remote execution URL, grpc(s) (an RBE service; untested here; docs/remote-cache.md)"),
        Option(name="remote_platform", setting="remote_platform", help="KEY=VALUE,... platform properties for --remote-executor"),
        Option(name="downloads", setting="downloads", help="directory holding files upstream scripts would download (1.5.x wasm, 1.4.x helm)"),
        Option(name="ztunnel", setting="ztunnel", help="ztunnel binary built for the target (1.18+ lines; never the amd64 download)"),
        Option(name="ztunnel_sha256", setting="ztunnel_sha256", help="sha256 of --ztunnel (required with it)"),
        Option(name="ztunnel_repo", setting="ztunnel_repo", help="ztunnel checkout at the commit istio pins: built with cargo for the target (instead of --ztunnel)"),
        Option(name="cargo", setting="cargo", help="cargo for --ztunnel-repo (default cargo; its rustc needs the target's standard library)"),
        Option(name="hub", setting="hub", help="image repository prefix, e.g. 127.0.0.1:5000/istio (default istio)"),
        Option(name="tag", setting="tag", help="image tag (default: the release); images are <hub>/<name>:<tag>-<arm64|amd64>"),
        Option(name="push", setting="push", kind=bool, help="push the verified images to --hub (credentials from the docker config)"),
        Option(name="in_container", setting="in_container", kind=bool, help="run the toolchain, proxy and istio commands inside --builder"),
        Option(name="builder", setting="builder", help="builder image for --in-container (see dockerfiles/)"),
        Option(name="json_", kind=bool, help="print machine-readable JSON"),
        Option(name="host", help="plan as if on a host of this arch (aarch64 or x86_64), e.g. for `make -n` on a real tree"),
        Option(name="force", kind=bool, help="rerun every stage; a checkout's local changes or commits are first saved under refs/istiobuild/saved/"),
        Option(name="from_", help="rerun from this stage on (checkout, patch, toolchain, proxy, istio, images, verify, release, publish, record)"),
        Option(name="to", help="stop after this stage"),
        Option(name="dry_run", kind=bool, help="show what each stage would run; run nothing, change nothing"),
        Option(name="allow_modified", kind=bool, help="build checkouts edited since the patch stage, recording the build as modified with the diff"),
        Option(name="image", kind=list, help="image to verify (repeatable)"),
        Option(name="labels", kind=bool, help="also require istiobuild's OCI labels naming the source repos and commits"),
        Option(name="names", help="image names, comma-separated (default: every image of the release's DOCKER_TARGETS)"),
        Option(name="arches", help="arches to join, comma-separated (default aarch64,x86_64)"),
        Option(name="insecure", kind=bool, help="talk plain HTTP to the registry (default: only for localhost / 127.x)"),
        Option(name="runner", help="runner labels for the matrix: hosted (ubuntu-24.04[-arm]) or self-hosted ([self-hosted, linux, ARM64|X64])"),
        Option(name="manifests", kind=bool, help="print the multi-arch tags to join (release, toolchain, tag, arches) instead of the builds"),
        Option(name="dest", help="directory to create the miniature proxy, envoy and istio repositories in"),
        Option(name="name", help="name for the builder image (default istiobuild/host-builder:<goarch>)"),
        Option(name="mirrors", help="directory holding proxy, envoy and istio git repositories ($ISTIOBUILD_UPSTREAM_MIRRORS)"),
        Option(name="check", kind=bool, help="write nothing: show the diff, exit 1 if anything would change"),
        Option(name="line", help="only this release line, e.g. 1.20 (default: every line from 1.4)"),
        Option(name="record", help="build-record.json, provenance statement or DSSE envelope of the build to reproduce"),
        Option(name="provenance", help="provenance of the image (statement or DSSE envelope): the image must be one of its subjects"),
        Option(name="allow_unverified", kind=bool, help="join per-arch images that carry no verified provenance (said in the output)"),
        Option(name="key", help="public key (PEM) the provenance must be signed with"),
        Option(name="signing_key", setting="signing_key", help="ed25519 private key (PKCS#8 PEM, mode 0600) to sign the provenance with (DSSE)"),
        Option(name="size", kind=bool, help="show each part of the cache with its size (the default without --prune)"),
        Option(name="prune", kind=bool, help="trim the cache: refused while a build uses it"),
        Option(name="max_size", help="with --prune: the bazel disk cache's size after trimming, least recently used first (default 20G)"),
        Option(name="out", help="directory to gather the release into (must not exist, or be empty)"),
        Option(name="older_than", help="with --prune: remove entries unused for this long, e.g. 30d, 12h (default 30d)"),
    )
}  # fmt: skip
SETTINGS = ("release", "arch", "toolchain", "workdir", "mirror", "page_size", "jobs", "remote_cache", "remote_upload",
            "remote_executor", "remote_platform", "downloads", "ztunnel", "ztunnel_sha256", "ztunnel_repo", "cargo",
            "hub", "tag", "push", "in_container", "builder", "signing_key", "target_kernel", "allocator")  # fmt: skip


def settings_of(values: dict[str, Any]) -> dict[str, Any]:
    """The CLI layer of the settings: None (and an unset switch) means "not given"."""
    out = {}
    for name, value in values.items():
        option = OPTIONS[name]
        if option.setting and value is not None and value is not False:
            out[option.setting] = value
    return out


def flag(name: str) -> str:
    return "--" + name.rstrip("_").replace("_", "-")


def given(values: dict[str, Any], name: str, default: str = "") -> str:
    """An option's value, the default when it was not given; an explicitly empty value is an error."""
    value = values[name]
    if value == "":
        from istiobuild.errors import UsageError

        raise UsageError(f"{flag(name)} is empty; leave the flag out or give a value")
    return default if value is None else str(value)


def define(name: str, doc: str, names: Sequence[str], body: Callable[[dict[str, Any]], bool | None]) -> Task[Any]:
    """A task whose flags are `names` from the option table; body gets their values; False = exit 1."""

    def task_fn(c: object, **values: Any) -> None:
        from istiobuild.run import signals_as_interrupts

        try:
            with signals_as_interrupts():
                ok = body(values)
        except IstiobuildError as exc:
            if os.environ.get("ISTIOBUILD_DEBUG"):
                traceback.print_exc()
            raise Exit(exc.render(), code=exc.exit_code) from None
        except KeyboardInterrupt:
            err = Interrupted("interrupted", hint="run the same command again to resume")
            raise Exit(err.render(), code=err.exit_code) from None
        except OSError as exc:  # outside a stage: the workdir, a config file, a docker socket
            if os.environ.get("ISTIOBUILD_DEBUG"):
                traceback.print_exc()
            where = f": {exc.filename}" if exc.filename else ""
            raise Exit(f"error: {exc.strerror or exc}{where}", code=1) from None
        if ok is False:
            raise Exit(code=1)

    params = [inspect.Parameter("c", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=OPTIONS[n].default) for n in names]
    task_fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    task_fn.__doc__ = doc
    functools.update_wrapper(task_fn, body, assigned=("__module__",), updated=())
    return _Task(
        task_fn,
        name=name,
        help={n: OPTIONS[n].help_text for n in names},
        iterable=[n for n in names if OPTIONS[n].kind is list],
    )


class _Task(Task[Any]):
    """invoke gives each flag the first free character of its name as a short flag; for a third
    --remote-* option that is '-' (a flag named "--"): such a flag gets no short form instead."""

    def arg_opts(self, name: str, default: str, taken_names: set[str]) -> dict[str, Any]:
        opts: dict[str, Any] = super().arg_opts(name, default, taken_names)
        opts["names"] = [n for n in opts["names"] if n != "-"]
        return opts


BUILD_FLAGS = SETTINGS


def _releases(v: dict[str, Any]) -> None:
    from istiobuild import commands

    commands.releases(as_json=v["json_"])


def _plan(v: dict[str, Any]) -> None:
    from istiobuild import commands

    commands.show_plan(commands.prepare(settings_of(v), host=given(v, "host")), as_json=v["json_"])


def _checkout(v: dict[str, Any]) -> None:
    from istiobuild import commands
    from istiobuild.steps import StageName

    b = commands.prepare(settings_of(v), force=v["force"], dry_run=v["dry_run"])
    commands.run_build(b, only=[StageName.CHECKOUT], start="checkout")


def _patch(v: dict[str, Any]) -> None:
    from istiobuild import commands
    from istiobuild.steps import StageName

    b = commands.prepare(settings_of(v), dry_run=v["dry_run"], allow_modified=v["allow_modified"])
    commands.run_build(b, only=[StageName.PATCH], start="patch")


def _build(v: dict[str, Any]) -> None:
    from istiobuild import commands

    b = commands.prepare(settings_of(v), force=v["force"], dry_run=v["dry_run"], allow_modified=v["allow_modified"])
    ex = b.executor
    ex.console.info(f"building {ex.release.version} for {b.plan.arch} with {b.plan.toolchain} in {ex.settings.workdir}")
    commands.run_build(b, start=v["from_"] or "", to=v["to"] or "")


def _doctor(v: dict[str, Any]) -> bool:
    from istiobuild import commands

    return commands.run_doctor(commands.prepare(settings_of(v)), as_json=v["json_"])


def _example(v: dict[str, Any]) -> None:
    from istiobuild import commands

    commands.example(given(v, "dest", "istiobuild-work/example-upstream"))


def _verify(v: dict[str, Any]) -> bool:
    from istiobuild import commands

    return commands.verify_images(v["image"] or [], given(v, "arch"), labels=v["labels"], as_json=v["json_"],
                                  provenance=given(v, "provenance"), key=given(v, "key"))  # fmt: skip


def _manifest(v: dict[str, Any]) -> None:
    from istiobuild import commands
    from istiobuild.errors import UsageError

    if v["hub"] is None:
        raise UsageError("manifest needs --hub", hint="the hub the per-arch images were pushed to")
    commands.manifest(hub=given(v, "hub"), tag=given(v, "tag"), names=given(v, "names"),
                      arches=given(v, "arches", "aarch64,x86_64"), release_name=v["release"],
                      insecure=v["insecure"], key=given(v, "key"), allow_unverified=v["allow_unverified"],
                      signing_key=given(v, "signing_key"))  # fmt: skip


def _host_builder(v: dict[str, Any]) -> None:
    from istiobuild import commands

    commands.host_builder(given(v, "name"), v["workdir"])


def _rebuild(v: dict[str, Any]) -> bool:
    from istiobuild import commands
    from istiobuild.errors import UsageError

    if not v["record"]:
        raise UsageError(
            "rebuild needs --record", hint="the build-record.json (or provenance) of the build to reproduce"
        )
    # ztunnel (1.18+ lines) is supplied like the downloads: the same binary, or the checkout to build it from
    keys = ("toolchain", "page_size", "mirror", "ztunnel", "ztunnel_sha256", "ztunnel_repo", "cargo")
    overrides = settings_of({k: v[k] for k in keys})
    return commands.rebuild(given(v, "record"), given(v, "workdir"), overrides)


def _matrix(v: dict[str, Any]) -> None:
    from istiobuild import matrix

    selection = matrix.Selection(releases=given(v, "release"), arches=given(v, "arch"),
                                 toolchains=given(v, "toolchain"), runner=given(v, "runner"))  # fmt: skip
    matrix.show_matrix(selection, settings_of({k: v[k] for k in ("page_size", "target_kernel")}), joins=v["manifests"])


def _cache_key(v: dict[str, Any]) -> None:
    from istiobuild import matrix

    matrix.show_cache_key(settings_of({k: v[k] for k in ("release", "arch", "toolchain", "page_size", "target_kernel")}),
                          as_json=v["json_"])  # fmt: skip


def _cache(v: dict[str, Any]) -> None:
    from istiobuild import cache, config

    settings, _ = config.load({})
    cache.command(settings.cache, size=v["size"], do_prune=v["prune"], max_size=given(v, "max_size"),
                  older_than=given(v, "older_than"), as_json=v["json_"])  # fmt: skip


def _sync_releases(v: dict[str, Any]) -> bool:
    from istiobuild import sync
    from istiobuild.errors import UsageError

    if v["mirrors"] is None:
        raise UsageError(
            "sync-releases needs --mirrors DIR", hint="a directory with proxy, envoy and istio git repositories"
        )
    return sync.command(given(v, "mirrors"), check=v["check"], line=given(v, "line"))


def _release(v: dict[str, Any]) -> None:
    from pathlib import Path

    from istiobuild import collect, config
    from istiobuild.errors import UsageError

    if v["out"] is None:
        raise UsageError(
            "release needs --out DIR", hint="a new directory to gather the archives, manifest and records in"
        )
    settings, _ = config.load(settings_of({"workdir": v["workdir"]}))
    for line in collect.collect(Path(settings.workdir), Path(given(v, "out")), given(v, "release")):
        print(line)


def _check_patches(v: dict[str, Any]) -> bool:
    from istiobuild import commands

    return commands.check_patches(given(v, "mirrors"), v["release"])


ns = Collection(
    define("releases", "List the release matrix: every release with its pinned proxy, envoy and istio commits.",
           ["json_"], _releases),
    define("plan", "Print every stage of the build (commands, actions, inputs, outputs) without running anything.",
           [*BUILD_FLAGS, "host", "json_"], _plan),
    define("checkout", "Check out proxy, envoy and istio at the release's pinned commits, as siblings.",
           ["release", "workdir", "mirror", "force", "dry_run"], _checkout),
    define("patch", "Apply the release's patch series for the target arch (atomic, idempotent, recorded).",
           ["release", "arch", "workdir", "mirror", "page_size", "target_kernel", "dry_run", "allow_modified"], _patch),
    define("build", "Run the pipeline in plan order; resumes where it stopped, skips stages that are up to date.\n\n"
           "A bazel --remote_header is a secret: set it with ISTIOBUILD_REMOTE_HEADER or in istiobuild.toml.",
           [*BUILD_FLAGS, "force", "from_", "to", "dry_run", "allow_modified"], _build),
    define("doctor", "Check the tools the plan needs: found, required, how to fix; the host's and the target's kernel.",
           ["release", "arch", "toolchain", "workdir", "page_size", "target_kernel", "json_"], _doctor),
    define("example", "Generate the miniature upstream repositories the `example` release builds from.",
           ["dest"], _example),
    define("verify", "Verify images, also ones built elsewhere: platform, every ELF's arch, envoy --version, labels.",
           ["image", "arch", "labels", "provenance", "key", "json_"], _verify),
    define("manifest", "Join per-arch images, built in different runs or on different machines, into multi-arch tags.",
           ["hub", "tag", "names", "arches", "release", "insecure", "key", "allow_unverified", "signing_key"], _manifest),
    define("host-builder", "Make a builder image offline from this machine's Debian packages (for --in-container).",
           ["name", "workdir"], _host_builder),
    define("rebuild", "Build again from exactly the inputs of a record or provenance, in a fresh workdir, and compare.\n\n"
           "Every artifact (envoy, Go binaries, images) is reported identical or where it differs; exit 1 on a difference.",
           ["record", "workdir", "toolchain", "page_size", "mirror", "ztunnel", "ztunnel_sha256", "ztunnel_repo", "cargo"],
           _rebuild),
    define("cache", "Show the cache every workdir shares, part by part with sizes; --prune trims it.\n\n"
           "Parts: git objects, bazel disk and repository caches, Go caches, downloads (docs/cache.md). --prune is\n"
           "refused while a build uses the cache; it never touches git objects or Go modules.",
           ["size", "prune", "max_size", "older_than", "json_"], _cache),
    define("sync-releases", "Add every GA tag of the mirrors (1.4.0 to the newest) to releases/<line>.toml, with its pins.\n\n"
           "Existing entries are confirmed, never rewritten; a moved tag is refused (nothing written). A new line's\n"
           "file is written with status = \"pinned\". Prints the diff; with --check writes nothing, exit 1 on a change.",
           ["mirrors", "check", "line"], _sync_releases),
    define("release", "Gather the release archives, manifests, records, provenance and SBOMs of every arch of a release\n"
           "built in the workdir into --out, after checking every archive's ELF files for its arch (docs/release.md).",
           ["workdir", "release", "out"], _release),
    define("check-patches", "Check every patch series with `git apply --check` against real upstream repositories.",
           ["mirrors", "release"], _check_patches),
    define("matrix", "Print the CI build matrix as JSON: one entry per release x arch x toolchain (releases or lines\n"
           "like 1.5, arches, toolchains comma-separated) with runner labels, image tag and cache key.\n\n"
           "Default: every release but the example, both arches, the configured toolchain (docs/ci.md).",
           ["release", "arch", "toolchain", "runner", "page_size", "target_kernel", "manifests"], _matrix),
    define("cache-key", "Print the key of the bazel caches of a build: pins, proxy/envoy patch sha256s, toolchain and\n"
           "compiler version, bazel version, arch, page size (not the istio pin, not the workdir).",
           ["release", "arch", "toolchain", "page_size", "target_kernel", "json_"], _cache_key),
)  # fmt: skip

__all__ = ["ns"]

"""Stage istio: istio's Go binaries for the target, built by its own `make build` with the local proxy."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from istiobuild import container, downloads, fsutil
from istiobuild.arch import Arch
from istiobuild.elf import elf_files
from istiobuild.elf import read as read_elf
from istiobuild.errors import StepFailed, UsageError
from istiobuild.executor import Executor
from istiobuild.mechanism import VERSION_PACKAGES, source_of
from istiobuild.preplace import CheckPlaced, PlaceBuilt
from istiobuild.release import Component
from istiobuild.stages import record
from istiobuild.steps import Action, PlanInput, Stage, StageName
from istiobuild.targets import run_target
from istiobuild.ztunnel import BuildZtunnel
from istiobuild.ztunnel import output as ztunnel_output

# init.sh must never fetch anything unpinned: its download URLs point nowhere, and every file it
# would download is placed by istiobuild first (see docs/downloads.md).
OFFLINE = {
    "ISTIO_ENVOY_BASE_URL": downloads.OFFLINE_URL,
    "ISTIO_ENVOY_LINUX_DEBUG_URL": downloads.OFFLINE_URL,
    "ISTIO_ENVOY_LINUX_RELEASE_URL": downloads.OFFLINE_URL,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrepareIstio(Action):
    downloads: tuple[downloads.Download, ...]
    supplied: Path | None
    cache: Path
    init_stamp: Path
    record: Path

    def render(self) -> str:
        parts = [
            f"place {d.name} (sha256 {d.sha256 or 'not pinned: must be supplied'}) in {d.into} as "
            f"{', '.join(d.place)} (from {self.supplied or 'the cache or a pinned download'})"
            for d in self.downloads
        ]
        parts.append(f"remove {self.init_stamp} (init.sh runs again against the placed files)")
        return "; ".join(parts)

    def perform(self, ex: Executor) -> None:
        record = {}
        for item in self.downloads:
            source, how = downloads.obtain(item, supplied=self.supplied, cache=self.cache)
            placed = downloads.place(item, source, Path(item.into))
            record[item.name] = {
                "sha256": downloads.sha256_file(source),
                "from": how,
                "placed": [str(p) for p in placed],
            }
            ex.console.info(f"placed {item.name} ({how}) as {', '.join(p.name for p in placed)}")
        self.init_stamp.unlink(missing_ok=True)
        fsutil.write_json(self.record, record)


CONTEXTS = "dockerx_build"  # where the images stage stages each image's files (imagedefs.py)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckElves(Action):
    root: Path
    arch: Arch
    record: Path

    def render(self) -> str:
        return f"every ELF file under {self.root} must be for {self.arch}; record their sha256 in {self.record}"

    def perform(self, ex: Executor) -> None:
        if not self.root.is_dir():
            raise StepFailed(f"istio's build finished but {self.root} does not exist", log=ex.log)
        # not the image contexts an earlier images stage left (out/linux_<arch>/dockerx_build: copies)
        found = [p for p in elf_files(self.root) if CONTEXTS not in p.relative_to(self.root).parts]
        wrong = [(p, read_elf(p).machine_name) for p in found if read_elf(p).arch is not self.arch]
        if wrong:
            path, machine = wrong[0]
            raise StepFailed(
                f"{path} is a {machine} binary, but the target is {self.arch}"
                + (f" ({len(wrong) - 1} more wrong-arch files)" if len(wrong) > 1 else ""),
                hint="the Go build did not honour the target arch (check the istio patch series: build-linux GOARCH)",
                log=ex.log,
            )
        fsutil.write_json(
            self.record, {str(p.relative_to(self.root)): {"sha256": downloads.sha256_file(p)} for p in found}
        )
        ex.console.info(f"istio: {len(found)} ELF files, all {self.arch}")


# The binaries whose reported version the istio stage checks (istio.io/pkg/version's `version` command);
# the first two are in every release and in the miniature, istioctl only where it was built.
VERSION_PROBES: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("pilot-discovery", ("version",), True),
    ("pilot-agent", ("version",), True),
    ("istioctl", ("version", "--remote=false", "--short=false"), False),
)


def buildinfo_lines(meta: record.Metadata, status: str, package: str = VERSION_PACKAGES[0]) -> list[str]:
    """The BUILDINFO file: the keys common/scripts/report_build_info.sh prints (its package: istio.io/pkg/version,
    istio.io/istio/pkg/version from 1.19), with the release's values."""
    return [
        f"{package}.buildVersion={meta.version}",
        f"{package}.buildGitRevision={meta.istio_revision}",
        f"{package}.buildStatus={status}",
        f"{package}.buildTag={meta.tag}",
        f"{package}.buildHub={meta.hub}",
    ]


@dataclasses.dataclass(frozen=True, kw_only=True)
class WriteBuildInfo(Action):
    """BUILDINFO for gobuild.sh: without it report_build_info.sh asks git, and our patched checkout (fetched
    without tags) reports <sha>-dirty, Modified and an empty tag."""

    path: Path
    metadata: record.Metadata
    patches_record: Path
    home: Path
    package: str = VERSION_PACKAGES[0]  # the line's mechanism says (istio.io/istio/pkg/version from 1.19)

    def render(self) -> str:
        lines = "; ".join(buildinfo_lines(self.metadata, self.metadata.istio_status, self.package))
        return (
            f"write {self.path}: {lines} (buildStatus ends in {record.MODIFIED} if the patch stage recorded "
            f"--allow-modified edits in istio); create the build's private HOME {self.home}"
        )

    def perform(self, ex: Executor) -> None:
        status = self.metadata.istio_status
        if record.modified(self.patches_record, [Component.ISTIO]):
            status += record.MODIFIED
        lines = buildinfo_lines(self.metadata, status, self.package)
        fsutil.write_atomic(self.path, "".join(f"{line}\n" for line in lines))
        self.home.mkdir(parents=True, exist_ok=True)
        ex.console.info(
            f"istio: version {self.metadata.version}, revision {self.metadata.istio_revision[:12]}, {status}"
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckVersions(Action):
    """Run the built binaries' `version` command and compare what they report with the plan."""

    root: Path
    arch: Arch
    host: Arch
    expect: Mapping[str, str]
    patches_record: Path
    record: Path

    def render(self) -> str:
        runs = ", ".join(f"{self.root / name} {' '.join(args)}" for name, args, _ in VERSION_PROBES)
        wanted = ", ".join(f"{k}={v}" for k, v in self.expect.items())
        return f"run {runs} (where built); each must report {wanted}; add what they report to {self.record}"

    def perform(self, ex: Executor) -> None:
        data = fsutil.read_json_object(self.record) or {}
        modified_ok = record.modified(self.patches_record, [Component.ISTIO])
        for name, args, required in VERSION_PROBES:
            binary = self.root / name
            if not binary.is_file():
                if required:
                    raise StepFailed(f"istio's build finished but {binary} does not exist", log=ex.log)
                continue
            text = run_target(binary, *args, arch=self.arch, host=self.host, log=ex.log)
            reported = record.istio_reported(text)
            record.require(
                f"{name} {' '.join(args)}", reported, self.expect, modified_ok=modified_ok, log=ex.log,
                hint="the binaries were not stamped from the plan's BUILDINFO (see docs/metadata.md)",
            )  # fmt: skip
            data.setdefault(name, {})["version"] = reported
        fsutil.write_json(self.record, data)
        probed = ", ".join(n for n, _, _ in VERSION_PROBES if n in data)
        ex.console.info(f"istio: {probed} report {self.expect['Version']}")


def istio_out(p: PlanInput) -> Path:
    if p.release.gopath:
        return p.layout.gopath / "out" / f"linux_{p.arch.goarch}" / "release"
    return p.checkout(Component.ISTIO) / "out" / f"linux_{p.arch.goarch}"


def go_environment(p: PlanInput) -> dict[str, str]:
    """Go under the workdir, nothing from the caller's Go environment (GOPATH, GOBIN, GOFLAGS, GOCACHE, go env -w
    settings, a GOTOOLCHAIN switch). Without GOPATH, Makefile.core.mk sets it to <workdir>/.. and the module
    cache, -pkgdir and ISTIO_BIN land there. GOPROXY/GOSUMDB stay the caller's (the network)."""
    return {
        "GOPATH": str(p.layout.gopath),
        "GOBIN": str(p.layout.gopath / "bin"),
        "GOCACHE": str(p.layout.go_build_cache),
        "GOMODCACHE": str(p.layout.go_mod_cache),
        "GOFLAGS": "",
        "GOENV": "off",
        "GO111MODULE": "on",
        "GOTOOLCHAIN": "local",
    }


def environment(p: PlanInput) -> dict[str, str]:
    """What istio's make sees: no container, the target arch, the local proxy, nothing downloaded, the
    release metadata (BUILDINFO for every Go binary, VERSION for the images), Go under the workdir."""
    meta = record.metadata(p)
    env = {
        "BUILD_WITH_CONTAINER": "0",
        "TARGET_ARCH": p.arch.goarch,
        "GOARCH": p.arch.goarch,
        "GOOS": "linux",
        "VERBOSE": "1",
        "BUILDINFO": str(p.layout.buildinfo),
        "VERSION": meta.version,
        "SOURCE_DATE_EPOCH": str(p.release.source_date_epoch),
        **go_environment(p),
    }
    env.update(local_envoy_env(p))
    if p.release.mechanism is not None and p.release.mechanism.ztunnel != "none":
        # build_ztunnel.sh would run its own cargo build and copy it over the pre-placed ztunnel
        env.update(dict.fromkeys(("BUILD_ZTUNNEL", "BUILD_ZTUNNEL_REPO", "BUILD_ZTUNNEL_TARGET"), ""))
    return env


def local_envoy_env(p: PlanInput) -> dict[str, str]:
    """How this release's istio takes the local envoy (its line's mechanism, docs/lines.md), and the download URLs
    its init scripts must never reach. From 1.15 a non-default ISTIO_ENVOY_BASE_URL (or ISTIO_ZTUNNEL_BASE_URL) makes
    init.sh ask gcloud for a token, so those lines get the full URLs pointed nowhere, not the base URLs."""
    local_envoy = str(p.layout.artifacts / "envoy")
    how = p.release.mechanism.local_envoy if p.release.mechanism else "use_local_proxy_init"
    if how == "preplace":
        return {
            "ISTIO_ENVOY_LINUX_DEBUG_URL": downloads.OFFLINE_URL,
            "ISTIO_ENVOY_LINUX_RELEASE_URL": downloads.OFFLINE_URL,
            "ISTIO_ZTUNNEL_RELEASE_URL": downloads.OFFLINE_URL,
        }
    if how == "istio_envoy_local":  # 1.13: a make rule copies it into the release dir
        return {**OFFLINE, "ISTIO_ENVOY_LOCAL": local_envoy}
    # USE_LOCAL_PROXY=1: istio takes ../proxy/<envoy_output> (proxy and istio are siblings) and
    # ISTIO_ENVOY_LOCAL names the checked copy in artifacts/
    return {**OFFLINE, "USE_LOCAL_PROXY": "1", "ISTIO_ENVOY_LOCAL": local_envoy, "ISTIO_ENVOY_LOCAL_PATH": local_envoy}


def _downloads(p: PlanInput, out: Path) -> tuple[downloads.Download, ...]:
    values = {
        "proxy_sha": p.release.pins[Component.PROXY].commit,
        "goarch": p.arch.goarch,
        "version": p.release.version,
    }

    def text(raw: Mapping[str, Any], key: str) -> str:
        return downloads.fill(str(raw.get(key, "")), values)

    def texts(raw: Mapping[str, Any], key: str) -> tuple[str, ...]:
        return tuple(downloads.fill(str(x), values) for x in raw.get(key, ()))

    return tuple(
        downloads.Download(
            name=text(raw, "name"),
            url=text(raw, "url"),
            sha256=text(raw, "sha256"),
            into=str(p.layout.artifacts if raw["into"] == "envoy_dir" else out),
            place=texts(raw, "place"),
            extract=text(raw, "extract"),
            touch=texts(raw, "touch"),
        )
        for raw in p.release.downloads
    )


def plan(p: PlanInput) -> Stage:
    out = istio_out(p)
    local_envoy = p.layout.artifacts / "envoy"
    items = _downloads(p, out)
    istio_dir = p.checkout(Component.ISTIO)
    meta = record.metadata(p)
    patches = p.layout.record("patches")
    return Stage(
        name=StageName.ISTIO,
        summary="build istio's Go binaries for the target with the local proxy",
        steps=(
            PrepareIstio(
                downloads=items,
                supplied=Path(p.settings.downloads) if p.settings.downloads else None,
                cache=p.layout.downloads,
                init_stamp=out / "istio_is_init",
                record=p.layout.record("downloads"),
            ),
            *_preplace(p),
            WriteBuildInfo(
                path=p.layout.buildinfo,
                metadata=meta,
                patches_record=patches,
                home=p.layout.home,
                package=p.release.mechanism.version_package if p.release.mechanism else VERSION_PACKAGES[0],
            ),
            container.command(
                p,
                ["make", "build"],
                istio_dir,
                {**environment(p), **p.layout.home_env},
                f"{_how(p)}; stamped from BUILDINFO; a private HOME",
            ),
            *([CheckPlaced(record=p.layout.record("preplaced"))] if _preplace(p) else []),
            CheckElves(root=out, arch=p.arch, record=p.layout.record("istio")),
            CheckVersions(
                root=out,
                arch=p.arch,
                host=p.host,
                expect=record.istio_expected(meta),
                patches_record=patches,
                record=p.layout.record("istio"),
            ),
        ),
        reads=(istio_dir,),
        consumes=(local_envoy,),
        produces=(p.layout.buildinfo, p.layout.record("istio")),
        notes=tuple(f"download {d.name}: sha256 {d.sha256 or 'not pinned (supply it)'}" for d in items),
    )


def _how(p: PlanInput) -> str:
    how = p.release.mechanism.local_envoy if p.release.mechanism else "use_local_proxy_init"
    return {
        "preplace": "the envoy built by the proxy stage, pre-placed where init.sh looks",
        "istio_envoy_local": "ISTIO_ENVOY_LOCAL: the envoy built by the proxy stage",
    }.get(how, "USE_LOCAL_PROXY=1: the envoy built by the proxy stage")


def _preplace(p: PlanInput) -> tuple[Action, ...]:
    """The line's pre-placed envoy and ztunnel paths (the wasm ones are the release's downloads); ztunnel built
    first when --ztunnel-repo names its checkout."""
    mech = p.release.mechanism
    paths = tuple(t for t in mech.preplace if source_of(t) != "download") if mech else ()
    if not paths and not p.settings.ztunnel and not p.settings.ztunnel_repo:
        return ()
    built: tuple[Action, ...] = ()
    ztunnel = Path(p.settings.ztunnel).absolute() if p.settings.ztunnel else None
    if p.settings.ztunnel_repo:
        src = p.layout.out_dir / "ztunnel-src"
        built = (
            BuildZtunnel(
                repo=Path(p.settings.ztunnel_repo).absolute(),
                src=src,
                istio=p.checkout(Component.ISTIO),
                arch=p.arch,
                host=p.host,
                cargo=p.settings.cargo,
                cargo_home=p.settings.cache / "cargo",
                epoch=p.release.source_date_epoch,
                record=p.layout.record("ztunnel"),
            ),
        )
        ztunnel = ztunnel_output(src, p.arch)
    return (
        *built,
        PlaceBuilt(
            istio=p.checkout(Component.ISTIO),
            envoy=p.layout.artifacts / "envoy",
            paths=paths,
            values={
                "goarch": p.arch.goarch,
                "proxy_sha": p.release.pins[Component.PROXY].commit,
                "envoy_dir": str(p.layout.artifacts),
            },
            ztunnel=ztunnel,
            ztunnel_sha256=p.settings.ztunnel_sha256,
            arch=p.arch,
            record=p.layout.record("preplaced"),
        ),
    )


def preflight(stage: Stage) -> None:
    """Every file the stage must place is obtainable (supplied, or pinned by sha256): checked before any work."""
    for step in stage.steps:
        if isinstance(step, (PlaceBuilt, BuildZtunnel)):
            step.check()
        if not isinstance(step, PrepareIstio):
            continue
        for item in step.downloads:
            if item.sha256 or (step.supplied is not None and (step.supplied / item.name).is_file()):
                continue
            where = str(step.supplied) if step.supplied else "a directory named by --downloads / ISTIOBUILD_DOWNLOADS"
            raise UsageError(
                f"the istio stage needs {item.name}, which has no pinned sha256, and it was not supplied",
                hint=f"fetch {item.url} yourself, check it, and put it in {where}; nothing was changed",
            )

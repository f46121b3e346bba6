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
from istiobuild.release import Component
from istiobuild.steps import Action, PlanInput, Stage, StageName

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
        found = list(elf_files(self.root))
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


def istio_out(p: PlanInput) -> Path:
    if p.release.gopath:
        return p.layout.out_dir / "gopath" / "out" / f"linux_{p.arch.goarch}" / "release"
    return p.checkout(Component.ISTIO) / "out" / f"linux_{p.arch.goarch}"


def environment(p: PlanInput) -> dict[str, str]:
    """What istio's make sees: no container, the target arch, the local proxy, nothing downloaded."""
    env = {
        "BUILD_WITH_CONTAINER": "0",
        "TARGET_ARCH": p.arch.goarch,
        "GOARCH": p.arch.goarch,
        "GOOS": "linux",
        "VERBOSE": "1",
        **OFFLINE,
    }
    local_envoy = str(p.layout.artifacts / "envoy")
    if p.release.gopath:
        env["GOPATH"] = str(p.layout.out_dir / "gopath")
    # USE_LOCAL_PROXY=1: istio takes ../proxy/<envoy_output> (proxy and istio are siblings) and
    # ISTIO_ENVOY_LOCAL names the checked copy in artifacts/
    env.update(USE_LOCAL_PROXY="1", ISTIO_ENVOY_LOCAL=local_envoy, ISTIO_ENVOY_LOCAL_PATH=local_envoy)
    return env


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
            container.command(
                p, ["make", "build"], istio_dir, environment(p), "USE_LOCAL_PROXY=1: the envoy built by the proxy stage"
            ),
            CheckElves(root=out, arch=p.arch, record=p.layout.record("istio")),
        ),
        reads=(istio_dir,),
        consumes=(local_envoy,),
        produces=(p.layout.record("istio"),),
        notes=tuple(f"download {d.name}: sha256 {d.sha256 or 'not pinned (supply it)'}" for d in items),
    )


def preflight(stage: Stage) -> None:
    """Every file the stage must place is obtainable (supplied, or pinned by sha256): checked before any work."""
    for step in stage.steps:
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

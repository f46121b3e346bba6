"""Reproducible images: rewrite a built image so that its ID depends only on its content and the sources.

The classic builder (no buildx, no BuildKit here) stamps an image with the time of the build: config
`created`, every history entry, the mtime of every file a RUN step or COPY writes, the ID of the
intermediate container and the daemon's version. `normalize` does what ko and rules_oci do when they
assemble an image: every layer the build made is rewritten with file mtimes clamped to SOURCE_DATE_EPOCH
(the reproducible-builds.org rule: nothing newer than the sources), no user/group names, no access or
change times; the config is rebuilt from what describes the image (platform, user, env, entrypoint, cmd,
working dir, ports, volumes, labels, history text) with every time set to SOURCE_DATE_EPOCH. Layers of
external base images (pinned inputs) are kept byte for byte, so they stay shared with the base's blobs.

docker keeps the exact bytes of a loaded layer (tar-split), so `docker save` and `docker push` give the
same layer digests later, and the image ID is the sha256 of the config written here.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from istiobuild.arch import Arch

# Image config keys that describe the image (the OCI image spec's config object); anything else docker
# fills in (Hostname = the build container, Image = the parent's ID, Attach*, Tty, ...) is dropped.
CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels", "StopSignal")
_PAX_TIMES = ("atime", "ctime", "mtime")
CHUNK = 1 << 20


def iso(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Hashing(io.RawIOBase):
    """A write-only file that also computes the sha256 of what is written."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sha.update(view)
        self.target.write(view)
        self.size += len(view)
        return len(view)


def normalize_layer(source: IO[bytes], target: IO[bytes], epoch: int) -> str:
    """Copy a layer tar with mtimes clamped to `epoch`, names and order kept; returns its diff_id."""
    hashing = _Hashing(target)
    with (
        tarfile.open(fileobj=source, mode="r|") as src,
        tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as dst,
    ):
        for member in src:
            member.mtime = min(int(member.mtime), epoch)
            member.uname = member.gname = ""
            member.pax_headers = {k: v for k, v in member.pax_headers.items() if k not in _PAX_TIMES}
            dst.addfile(member, src.extractfile(member) if member.isreg() else None)
    return "sha256:" + hashing.sha.hexdigest()


def clean_config(
    config: Mapping[str, Any], *, arch: Arch, epoch: int, labels: Mapping[str, str], replace: Mapping[str, str]
) -> dict[str, Any]:
    """The config without build-time facts: fixed times, no container or daemon details; diff_ids set later."""
    inner = config.get("config") or {}
    kept = {k: inner[k] for k in CONFIG_KEYS if inner.get(k) not in (None, "", [], {})}
    kept["Labels"] = {**(inner.get("Labels") or {}), **labels}
    history = []
    for entry in config.get("history") or []:
        text = str(entry.get("created_by", ""))
        for old, new in replace.items():
            text = text.replace(old, new)
        item: dict[str, Any] = {"created": iso(epoch), "created_by": text}
        if entry.get("comment"):
            item["comment"] = entry["comment"]
        if entry.get("empty_layer"):
            item["empty_layer"] = True
        history.append(item)
    return {
        "architecture": arch.goarch,
        "os": "linux",
        "config": kept,
        "created": iso(epoch),
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": []},
    }


def normalize(
    cli: Any,
    image: str,
    *,
    arch: Arch,
    epoch: int,
    labels: Mapping[str, str],
    keep: Iterable[str] = (),
    replace: Mapping[str, str] | None = None,
    scratch: Path,
) -> str:
    """Rewrite `image` (same name) reproducibly; layers whose diff_id is in `keep` stay as they are.
    Returns the new image ID."""
    scratch.mkdir(parents=True, exist_ok=True)
    saved, rewritten = scratch / "image.tar", scratch / "image-normalized.tar"
    try:
        with saved.open("wb") as fh:
            for chunk in cli.images.get(image).save(named=True):
                fh.write(chunk)
        config_id = _rewrite(saved, rewritten, image, arch, epoch, labels, set(keep), replace or {})
        with rewritten.open("rb") as fh:
            cli.images.load(fh)
    finally:
        saved.unlink(missing_ok=True)
        rewritten.unlink(missing_ok=True)
    return config_id


def _rewrite(
    saved: Path,
    rewritten: Path,
    image: str,
    arch: Arch,
    epoch: int,
    labels: Mapping[str, str],
    keep: set[str],
    replace: Mapping[str, str],
) -> str:
    with tarfile.open(saved) as src, tarfile.open(rewritten, "w", format=tarfile.PAX_FORMAT) as dst:
        manifest = json.loads(_member(src, "manifest.json").read())[0]
        old = json.loads(_member(src, manifest["Config"]).read())
        config = clean_config(old, arch=arch, epoch=epoch, labels=labels, replace=replace)
        diff_ids = old.get("rootfs", {}).get("diff_ids") or []
        layers = []
        for number, name in enumerate(manifest["Layers"]):
            diff_id = diff_ids[number] if number < len(diff_ids) else ""
            layer_name, diff_id = _layer(src, dst, name, diff_id if diff_id in keep else "", epoch, rewritten.parent)
            layers.append(layer_name)
            config["rootfs"]["diff_ids"].append(diff_id)
        body = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_id = hashlib.sha256(body).hexdigest()
        _add(dst, f"{config_id}.json", body)
        entry = {"Config": f"{config_id}.json", "RepoTags": [image], "Layers": layers}
        _add(dst, "manifest.json", json.dumps([entry]).encode())
    return "sha256:" + config_id


def _layer(src: tarfile.TarFile, dst: tarfile.TarFile, name: str, kept: str, epoch: int, tmp: Path) -> tuple[str, str]:
    """Copy one layer into the new archive, normalised unless `kept` (its diff_id); returns (name, diff_id)."""
    if kept:
        info = src.getmember(name)
        new_name = f"{kept.removeprefix('sha256:')}/layer.tar"
        _add_file(dst, new_name, _member(src, name), info.size)
        return new_name, kept
    part = tmp / "layer.tar"
    try:
        with part.open("wb") as out:
            diff_id = normalize_layer(_member(src, name), out, epoch)
        new_name = f"{diff_id.removeprefix('sha256:')}/layer.tar"
        with part.open("rb") as fh:
            _add_file(dst, new_name, fh, part.stat().st_size)
    finally:
        part.unlink(missing_ok=True)
    return new_name, diff_id


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    fh = tar.extractfile(name)
    if fh is None:
        raise ValueError(f"{name} is not a file in the saved image")
    return fh


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    _add_file(tar, name, io.BytesIO(data), len(data))


def _add_file(tar: tarfile.TarFile, name: str, fh: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    tar.addfile(info, fh)


def layer_ids(cli: Any, images: Iterable[str]) -> set[str]:
    """The diff_ids of every layer of the given local images (those that exist)."""
    import docker

    found: set[str] = set()
    for name in images:
        try:
            found.update(cli.images.get(name).attrs.get("RootFS", {}).get("Layers") or [])
        except docker.errors.ImageNotFound:
            continue
    return found

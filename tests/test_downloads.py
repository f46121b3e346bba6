"""Pinned downloads: supplied files, a real HTTP download on loopback with sha256, placement."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import invoke
from istiobuild import downloads
from istiobuild.errors import SourceError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def item(name: str, url: str, sha: str, **kw: object) -> downloads.Download:
    return downloads.Download(
        name=name, url=url, sha256=sha, into="envoy_dir", place=tuple(kw.pop("place", (name,))), **kw
    )  # type: ignore[arg-type]


def test_pinned_download_is_checked_and_cached(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    (root / "stats.wasm").write_bytes(b"\0asm plugin")
    pin = hashlib.sha256(b"\0asm plugin").hexdigest()
    cache = tmp_path / "cache"
    path, how = downloads.obtain(item("stats.wasm", f"{url}/stats.wasm", pin), supplied=None, cache=cache)
    assert how == "download" and path.read_bytes() == b"\0asm plugin"
    (root / "stats.wasm").unlink()  # server side gone: the cache is enough
    again, how = downloads.obtain(item("stats.wasm", f"{url}/stats.wasm", pin), supplied=None, cache=cache)
    assert how == "cache" and again == path


def test_wrong_sha256_places_nothing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    (root / "evil.wasm").write_bytes(b"tampered")
    with pytest.raises(SourceError, match="has sha256 .* but the release pins"):
        downloads.obtain(item("evil.wasm", f"{url}/evil.wasm", "0" * 64), supplied=None, cache=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*"))


def test_unreachable_and_missing(server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(SourceError, match="cannot download"):
        downloads.obtain(item("nope.wasm", f"{url}/nope.wasm", "0" * 64), supplied=None, cache=tmp_path)


def test_unpinned_is_never_downloaded_but_may_be_supplied(server: tuple[str, Path], tmp_path: Path) -> None:
    url, root = server
    (root / "free.wasm").write_bytes(b"x")
    with pytest.raises(SourceError, match="no sha256 is pinned .* will not download it") as err:
        downloads.obtain(item("free.wasm", f"{url}/free.wasm", ""), supplied=None, cache=tmp_path)
    assert f"{url}/free.wasm" in err.value.hint
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "free.wasm").write_bytes(b"mine")
    path, how = downloads.obtain(item("free.wasm", f"{url}/free.wasm", ""), supplied=mine, cache=tmp_path)
    assert (path, how) == (mine / "free.wasm", "supplied")
    with pytest.raises(SourceError, match="is not the pinned one|but the release pins"):
        downloads.obtain(item("free.wasm", "u", "1" * 64), supplied=mine, cache=tmp_path)


def test_place_copies_extracts_and_stamps(tmp_path: Path) -> None:
    wasm = tmp_path / "stats-abc.wasm"
    wasm.write_bytes(b"w")
    placed = downloads.place(
        item("stats-abc.wasm", "u", "", place=("stats-abc.wasm", "stats-filter.wasm")), wasm, tmp_path / "out"
    )
    assert sorted(p.name for p in placed) == ["stats-abc.wasm", "stats-filter.wasm"]
    archive = tmp_path / "helm.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("linux-arm64/helm")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"helm"))
    helm = downloads.Download(
        name="helm.tar.gz",
        url="u",
        sha256="",
        into="istio_out",
        place=("helm-v2.10.0", "helm"),
        extract="linux-arm64/helm",
        touch=("version.helm.v2.10.0",),
    )
    out = tmp_path / "istio_out"
    downloads.place(helm, archive, out)
    assert (out / "helm").read_bytes() == b"helm" and os.access(out / "helm", os.X_OK)
    assert (out / "version.helm.v2.10.0").exists()


def test_build_stops_before_any_work_when_a_download_is_unpinned(tmp_path: Path) -> None:
    proc = invoke("build", "--release", "1.5.0", "--arch", "x86_64", "--workdir", str(tmp_path / "w"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "needs stats-73f240a29bece92a8882a36893ccce07b4a54664.wasm" in proc.stderr
    assert "nothing was changed" in proc.stderr
    assert not (tmp_path / "w" / "1.5.0").exists()

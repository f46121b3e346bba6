"""The per-image SBOM: a real Go binary (a replaced module, a directory replacement, a plain dependency, all
from a local file:// module proxy), a gcc ELF and text files in a real docker image, exported through the
docker SDK, scanned in one pass, turned into CycloneDX 1.6 and validated against the library's bundled schema."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import socket
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from istiobuild import elf, imagefs, sbom
from istiobuild.errors import ConfigError, StepFailed
from istiobuild.run import run

pytestmark = pytest.mark.slow

EPOCH = 1700000000
SOURCES = (
    sbom.SourceRef(
        name="proxy", url="https://user:s3cr3t-token@example.com/istio/proxy.git?x=1", commit="a" * 40, tag="1.5.0"
    ),
    sbom.SourceRef(name="envoy", url="https://github.com/istio/envoy", commit="b" * 40),
    sbom.SourceRef(name="istio", url="git@github.com:istio/istio.git", commit="c" * 40, tag="1.5.0"),
)
BASE = ("docker.io/library/debian:bookworm-slim", "sha256:" + "d" * 64)
MAIN_GO = """package main

import (
	"fmt"

	"example.com/lib"
	"example.com/old"
	"example.com/util"
)

func main() { fmt.Println(lib.Name(), old.Name(), util.Name()) }
"""


def _module_zip(path: str, version: str, declared: str, package: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(f"{path}@{version}/go.mod", f"module {declared}\n\ngo 1.19\n")
        zf.writestr(
            f"{path}@{version}/{package}.go", f'package {package}\n\nfunc Name() string {{ return "{path}" }}\n'
        )
    return buf.getvalue()


def _proxy_module(proxy: Path, path: str, version: str, declared: str, package: str) -> None:
    """A module in a file:// GOPROXY (the layout `go` reads: <path>/@v/{list,<v>.info,<v>.mod,<v>.zip})."""
    at = proxy / path / "@v"
    at.mkdir(parents=True)
    (at / "list").write_text(version + "\n")
    (at / f"{version}.info").write_text(json.dumps({"Version": version, "Time": "2020-01-01T00:00:00Z"}))
    (at / f"{version}.mod").write_text(f"module {declared}\n\ngo 1.19\n")
    (at / f"{version}.zip").write_bytes(_module_zip(path, version, declared, package))


def _go_binary(root: Path) -> Path:
    """example.com/app: example.com/util from the proxy, example.com/old replaced by the module example.com/fork
    v1.2.0, example.com/lib replaced by the directory ../lib; -trimpath, a -gcflags with a space (Go quotes it)."""
    proxy = root / "proxy"
    _proxy_module(proxy, "example.com/util", "v0.3.0", "example.com/util", "util")
    _proxy_module(proxy, "example.com/fork", "v1.2.0", "example.com/old", "old")
    (root / "lib").mkdir()
    (root / "lib" / "go.mod").write_text("module example.com/lib\n\ngo 1.19\n")
    (root / "lib" / "lib.go").write_text('package lib\n\nfunc Name() string { return "lib" }\n')
    app = root / "app"
    app.mkdir()
    (app / "main.go").write_text(MAIN_GO)
    (app / "go.mod").write_text(
        "module example.com/app\n\ngo 1.19\n\n"
        "require (\n\texample.com/lib v1.0.0\n\texample.com/old v1.0.0\n\texample.com/util v0.3.0\n)\n\n"
        "replace example.com/lib => ../lib\n\nreplace example.com/old => example.com/fork v1.2.0\n"
    )
    env = {
        "GOPROXY": f"file://{proxy}",
        "GOSUMDB": "off",
        "GOFLAGS": "-mod=mod",
        "GOPATH": str(root / "gopath"),
        "GOCACHE": str(root / "gocache"),
        "HOME": str(root),
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
    }
    run(["go", "mod", "tidy"], cwd=app, env=env, what="go mod tidy")
    run(["go", "build", "-trimpath", "-gcflags=-N -l", "-o", "app", "."], cwd=app, env=env, what="go build")
    return app / "app"


def _c_binary(root: Path) -> Path:
    (root / "hello.c").write_text('#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n')
    run(["gcc", "-O2", "-o", str(root / "hello"), str(root / "hello.c")], what="gcc")
    return root / "hello"


def _rootfs_tar(files: dict[str, tuple[bytes, int]]) -> bytes:
    """A filesystem tar: the files (path -> (content, mode)), a hard link to /usr/bin/hello, a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory in ("etc", "usr", "usr/bin", "usr/local", "usr/local/bin"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("usr/bin/hello-again")
        link.type, link.linkname, link.mode = tarfile.LNKTYPE, "usr/bin/hello", 0o755
        tar.addfile(link)
        sym = tarfile.TarInfo("usr/bin/hi")
        sym.type, sym.linkname = tarfile.SYMTYPE, "hello"
        tar.addfile(sym)
    return buf.getvalue()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real image (docker import of a tar) holding the Go binary, a gcc ELF, text files, a hard link."""
    import docker

    root = tmp_path_factory.mktemp("sbom-src")
    go_bin, c_bin = _go_binary(root), _c_binary(root)
    files = {
        "/usr/local/bin/app": (go_bin.read_bytes(), 0o755),
        "/usr/bin/hello": (c_bin.read_bytes(), 0o755),
        "/etc/message.txt": (b"hello from the sbom test\n", 0o644),
        "/.profile": (b"export A=1\n", 0o600),  # a dot file at the root: its name must survive
    }
    cli = docker.from_env()
    repo = f"istiobuild-sbom-test-{uuid.uuid4().hex[:8]}"
    cli.api.import_image_from_data(_rootfs_tar(files), repository=repo, tag="t")
    image_id = cli.images.get(f"{repo}:t").id
    try:
        yield {
            "cli": cli,
            "ref": f"{repo}:t",
            "id": image_id,
            "files": files,
            "machine": elf.read(c_bin).machine,
        }
    finally:
        cli.images.remove(image_id, force=True)


def _scan(image: dict[str, Any], scratch: Path) -> imagefs.ImageScan:
    return imagefs.scan_image(image["cli"], image["ref"], scratch)


def _build(image: dict[str, Any], scan: imagefs.ImageScan) -> dict[str, Any]:
    return sbom.build(
        image="127.0.0.1:5000/istio/proxyv2:1.5.0-amd64",
        image_id=image["id"],
        platform="linux/amd64",
        scan=scan,
        sources=SOURCES,
        base=BASE,
        epoch=EPOCH,
        tool_version="0.1.0",
    )


@pytest.fixture(scope="module")
def scanned(image: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> imagefs.ImageScan:
    return _scan(image, tmp_path_factory.mktemp("scratch"))


@pytest.fixture(scope="module")
def doc(image: dict[str, Any], scanned: imagefs.ImageScan) -> dict[str, Any]:
    return _build(image, scanned)


def _components(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["bom-ref"]: c for c in doc["components"]}


def _props(component: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["value"] for p in component.get("properties", ())}


def test_scan_reads_every_regular_file_with_sha256_mode_and_elf_machine(
    image: dict[str, Any], scanned: imagefs.ImageScan
) -> None:
    want = {path: hashlib.sha256(data).hexdigest() for path, (data, _) in image["files"].items()}
    want["/usr/bin/hello-again"] = want["/usr/bin/hello"]  # the hard link: the same bytes under another name
    assert {f.path: f.sha256 for f in scanned.files} == want  # no symlink, no docker runtime file (/.dockerenv ...)
    by_path = {f.path: f for f in scanned.files}
    assert by_path["/usr/bin/hello"].elf_machine == image["machine"]
    assert by_path["/usr/local/bin/app"].elf_machine == image["machine"]
    assert by_path["/etc/message.txt"].elf_machine is None
    assert by_path["/.profile"].mode == 0o600
    assert by_path["/usr/bin/hello"].size == len(image["files"]["/usr/bin/hello"][0])
    assert list(scanned.go) == ["/usr/local/bin/app"]  # the gcc ELF is not taken for Go


def test_go_build_info_of_the_binary(scanned: imagefs.ImageScan) -> None:
    info = scanned.go["/usr/local/bin/app"]
    assert info.package == "example.com/app"
    assert info.main is not None
    assert (info.main.path, info.main.version) == ("example.com/app", "(devel)")
    deps = {d.path: d for d in info.deps}
    assert deps["example.com/util"].version == "v0.3.0"
    assert deps["example.com/util"].sum.startswith("h1:")
    assert deps["example.com/old"].replace == imagefs.GoModule(
        path="example.com/fork",
        version="v1.2.0",
        sum=deps["example.com/old"].replace.sum,  # type: ignore[union-attr]
    )
    assert deps["example.com/lib"].replace is not None
    assert deps["example.com/lib"].replace.path == "../lib"
    settings = dict(info.settings)
    assert settings["-trimpath"] == "true"
    assert settings["-gcflags"] == "-N -l"  # quoted by Go (it has a space), unquoted here


def test_sbom_lists_files_and_go_modules_with_dependencies(doc: dict[str, Any], image: dict[str, Any]) -> None:
    comps = _components(doc)
    for path, (data, mode) in image["files"].items():
        comp = comps[f"file:{path}"]
        assert comp["type"] == "file"
        assert comp["name"] == path
        assert comp["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(data).hexdigest()}]
        assert _props(comp)["istiobuild:file:mode"] == f"{mode:04o}"
    assert _props(comps["file:/usr/bin/hello"])["istiobuild:elf:machine"] == str(image["machine"])
    app = _props(comps["file:/usr/local/bin/app"])
    assert app["istiobuild:go:version"].startswith("go1.")
    assert app["istiobuild:go:build:-trimpath"] == "true"
    purls = {c.get("purl") for c in doc["components"]}
    assert {
        "pkg:golang/example.com/util@v0.3.0",
        "pkg:golang/example.com/fork@v1.2.0",
        "pkg:golang/example.com/lib@v1.0.0",
        "pkg:golang/example.com/app@%28devel%29",
    } <= purls
    fork = comps["go:example.com/old@v1.0.0=>example.com/fork@v1.2.0"]
    assert fork["pedigree"]["ancestors"][0]["purl"] == "pkg:golang/example.com/old@v1.0.0"
    assert _props(fork)["istiobuild:go:h1"].startswith("h1:")
    assert _props(comps["go:example.com/lib@v1.0.0=>../lib"])["istiobuild:go:replace:dir"] == "../lib"
    assert _props(comps["go:example.com/util@v0.3.0"])["istiobuild:go:h1"].startswith("h1:")
    graph = {d["ref"]: set(d.get("dependsOn", ())) for d in doc["dependencies"]}
    modules = {ref for ref in comps if ref.startswith("go:")}
    assert graph["file:/usr/local/bin/app"] == modules  # std, the main module and every dependency
    assert {"base-image", "source:proxy", "source:envoy", "source:istio"} <= graph["image"]


def test_sources_base_image_and_metadata(doc: dict[str, Any], image: dict[str, Any]) -> None:
    comps = _components(doc)
    proxy, envoy, istio = comps["source:proxy"], comps["source:envoy"], comps["source:istio"]
    assert proxy["pedigree"]["commits"] == [{"uid": "a" * 40}]
    assert proxy["version"] == "1.5.0"
    assert proxy["externalReferences"] == [{"type": "vcs", "url": "https://example.com/istio/proxy.git"}]
    assert envoy["version"] == "b" * 40  # no tag: the commit
    assert istio["externalReferences"][0]["url"] == "ssh://git@github.com/istio/istio.git"  # scp-like, as an IRI
    assert "s3cr3t-token" not in json.dumps(doc)
    base = comps["base-image"]
    assert (base["name"], base["version"]) == ("docker.io/library/debian", BASE[1])
    assert base["purl"].startswith(f"pkg:oci/debian@{BASE[1]}?")
    meta = doc["metadata"]
    assert meta["component"]["hashes"][0]["content"] == image["id"].removeprefix("sha256:")
    assert meta["timestamp"] == "2023-11-14T22:13:20+00:00"
    assert (
        doc["serialNumber"]
        == f"urn:uuid:{uuid.uuid5(uuid.uuid5(uuid.NAMESPACE_URL, 'urn:istiobuild:sbom'), image['id'])}"
    )
    assert doc["specVersion"] == "1.6"


# Another process (another hash seed) exports, scans and builds the same image: argv = tests dir, src dir,
# image reference, image ID, output, scratch.
_OTHER_PROCESS = """
import sys
from pathlib import Path
sys.path[:0] = sys.argv[1:3]
import docker, test_sbom
from istiobuild import sbom
image = {"cli": docker.from_env(), "ref": sys.argv[3], "id": sys.argv[4]}
sbom.write(Path(sys.argv[5]), test_sbom._build(image, test_sbom._scan(image, Path(sys.argv[6]))))
"""


def test_valid_and_byte_identical_across_runs(image: dict[str, Any], doc: dict[str, Any], tmp_path: Path) -> None:
    sbom.validate(doc)
    sbom.write(tmp_path / "a.json", doc)
    again = _build(image, _scan(image, tmp_path / "scratch-b"))  # a second export, scan and build
    sbom.write(tmp_path / "b.json", again)
    here = Path(__file__).resolve().parent
    argv = [str(here), str(here.parent / "src"), image["ref"], image["id"], str(tmp_path / "c.json")]
    run([sys.executable, "-c", _OTHER_PROCESS, *argv, str(tmp_path / "scratch-c")], env={"PYTHONHASHSEED": "7"})
    first = (tmp_path / "a.json").read_bytes()
    assert (tmp_path / "b.json").read_bytes() == first
    assert (tmp_path / "c.json").read_bytes() == first
    assert json.loads(first) == doc
    text = first.decode()
    assert str(tmp_path) not in text and "sbom-" not in text  # no scratch path
    assert socket.gethostname() not in text
    assert not any((tmp_path / "scratch-b").iterdir())  # the Go binary's copy is gone
    assert not any((tmp_path / "scratch-c").iterdir())


def test_invalid_document_fails_validation(doc: dict[str, Any]) -> None:
    bad = copy.deepcopy(doc)
    bad["components"][0]["hashes"] = [{"alg": "SHA-256", "content": "not-hex"}]
    bad["metadata"]["colour"] = "blue"  # strict: no unknown properties
    with pytest.raises(ValueError, match=r"not a valid CycloneDX 1\.6 document") as exc:
        sbom.validate(bad)
    assert "components/0/hashes/0/content" in str(exc.value)
    assert "colour" in str(exc.value)


def test_bad_arguments_are_one_line_errors(image: dict[str, Any], scanned: imagefs.ImageScan) -> None:
    args = {
        "image": "istio/proxyv2:1.5.0",
        "image_id": image["id"],
        "platform": "linux/amd64",
        "scan": scanned,
        "sources": SOURCES,
        "base": BASE,
        "epoch": EPOCH,
        "tool_version": "0.1.0",
    }
    for key, value, word in (
        ("image_id", "abc", "image ID"),
        ("base", ("debian", "sha256:xyz"), "base image digest"),
        ("platform", "amd64", "platform"),
        ("sources", (sbom.SourceRef(name="proxy", url="https://x/y", commit="HEAD"),), "proxy commit"),
        ("sources", (sbom.SourceRef(name="proxy", url="ext::sh -c id", commit="a" * 40),), "proxy repository"),
        ("sources", (SOURCES[0], SOURCES[0]), "given twice"),
    ):
        with pytest.raises(ConfigError, match=word):
            sbom.build(**{**args, key: value})


def test_a_missing_image_is_a_one_line_error(image: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(StepFailed, match="no such image"):
        imagefs.scan_image(image["cli"], f"{image['ref']}-missing", tmp_path)


def _tar_stream(name: str, data: bytes) -> Iterator[bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    for i in range(0, len(raw), 4093):  # odd chunk sizes, as a socket delivers them
        yield raw[i : i + 4093]


def test_go_magic_counts_only_at_an_aligned_offset(tmp_path: Path) -> None:
    """An ELF with the magic at an unaligned offset is no Go binary; one with it aligned (in the scanner's second
    1 MiB read block) is taken for one: `go version -m` then cannot read it, a one-line error naming the path."""
    head = elf.MAGIC + b"\x02\x01" + bytes(14)
    unaligned = head + bytes(1000 - len(head) + 1) + imagefs.GO_MAGIC + bytes(64)
    got = imagefs.scan(_tar_stream("bin/unaligned", unaligned), tmp_path)
    assert got.go == {}
    assert got.files[0].elf_machine == 0
    aligned = head + bytes((1 << 20) + 32 - len(head)) + imagefs.GO_MAGIC + bytes(64)
    with pytest.raises(StepFailed, match="Go build info of /bin/fake-go") as exc:
        imagefs.scan(_tar_stream("bin/fake-go", aligned), tmp_path)
    assert str(tmp_path) not in exc.value.render()
    assert not any(tmp_path.iterdir())


def test_a_large_document_validates_in_slices_like_a_whole_one() -> None:
    """Above 64 components the components are validated in slices (the schema's uniqueItems is O(n²)): the
    errors, with their paths in the whole document, are the ones validating it whole gives; a duplicate
    component is still found."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    files = tuple(
        imagefs.FileEntry(
            path=f"/data/{i:04d}", sha256=hashlib.sha256(bytes([i])).hexdigest(), size=1, mode=0o644, elf_machine=None
        )
        for i in range(200)
    )
    scan = imagefs.ImageScan(files=files, go={})
    doc = sbom.build(
        image="istio/pilot:1.5.0",
        image_id="sha256:" + "e" * 64,
        platform="linux/arm64",
        scan=scan,
        sources=SOURCES,
        base=BASE,
        epoch=EPOCH,
        tool_version="0.1.0",
    )
    assert len(doc["components"]) > 150
    sbom.validate(doc)
    bad = copy.deepcopy(doc)
    bad["components"][170]["hashes"][0]["content"] = "zz"
    bad["components"][3]["type"] = "folder"
    bad["metadata"]["colour"] = "blue"
    whole = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bad), all_errors=True) or ()
    paths = {"/".join(map(str, e.data.absolute_path)) for e in whole}
    assert paths == {"components/170/hashes/0/content", "components/3/type", "metadata"}
    assert {line.split(":")[0] for line in sbom.schema_errors(bad)} == paths
    bad["components"].append(copy.deepcopy(doc["components"][100]))
    assert f"components/{len(doc['components'])}: a duplicate of an earlier component (uniqueItems)" in (
        sbom.schema_errors(bad)
    )

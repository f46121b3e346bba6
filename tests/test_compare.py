"""compare: where two build outputs differ. Real ELF files from gcc, the aarch64 cross gcc and clang
for 32/64-bit and both endiannesses (checked against readelf), and real docker images built with
the classic builder from a `docker import`ed base."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import docker
import pytest

from istiobuild import elf
from istiobuild.compare import CHUNK, Difference, compare_archives, compare_digests, compare_files, compare_images
from istiobuild.errors import UsageError

SOURCE = """\
const char message[] = "hello, world";
int twice(int x) { return x + 100; }
void _start(void) { for (;;) { twice(message[0]); } }
"""
NEW_STRING = SOURCE.replace("hello, world", "HELLO, world")  # same length: only .rodata changes
NEW_BODY = SOURCE.replace("x + 100", "x + 101")  # the same instruction, another immediate: .text
LINK = ["-O1", "-nostdlib", "-static", "-Wl,--build-id=none"]  # no build ID: it would hash the change in

TOOLCHAINS = {  # name: (compiler argv, ELF class and data as `readelf -h` shows them)
    "x86_64-gcc": (["gcc", *LINK], "ELF64", "little"),
    "aarch64-gcc": (["aarch64-linux-gnu-gcc", *LINK], "ELF64", "little"),
    "x86_64-gcc-object": (["gcc", "-O1", "-c"], "ELF64", "little"),
    "arm32-clang": (["clang", "--target=armv7a-linux-gnueabihf", "-fuse-ld=lld", *LINK], "ELF32", "little"),
    "ppc32-clang": (["clang", "--target=powerpc-linux-gnu", "-fuse-ld=lld", *LINK], "ELF32", "big"),
    "aarch64be-clang": (["clang", "--target=aarch64_be-linux-gnu", "-fuse-ld=lld", *LINK], "ELF64", "big"),
}


def build(tmp: Path, toolchain: str, source: str, name: str, file: str = "prog.c") -> Path:
    """Compile `source`, saved as tmp/name/file, to tmp/name/prog-<toolchain>."""
    (tmp / name).mkdir(exist_ok=True)
    src = tmp / name / file
    src.write_text(source)
    out = tmp / name / f"prog-{toolchain}"
    subprocess.run([*TOOLCHAINS[toolchain][0], "-o", str(out), str(src)], check=True)
    return out


def flipped(src: Path, dest: Path, offset: int) -> Path:
    data = bytearray(src.read_bytes())
    data[offset] ^= 0xFF
    dest.write_bytes(bytes(data))
    return dest


def readelf(path: Path, flag: str) -> str:
    return subprocess.run(["readelf", flag, "-W", str(path)], capture_output=True, text=True, check=True).stdout


def header(path: Path, field: str) -> int:
    found = re.search(rf"^\s*{re.escape(field)}:\s+(\S+)", readelf(path, "-h"), re.MULTILINE)
    assert found, field
    return int(found.group(1), 0)


# -- ELF layout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
def test_layout_matches_readelf(tmp_path: Path, toolchain: str) -> None:
    binary = build(tmp_path, toolchain, SOURCE, "prog")
    head = readelf(binary, "-h")
    assert TOOLCHAINS[toolchain][1] in head and f"{TOOLCHAINS[toolchain][2]} endian" in head
    expected = set()
    for line in readelf(binary, "-S").splitlines():
        row = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)\s+(\S+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if row and int(row.group(1)) and row.group(3) != "NOBITS" and int(row.group(5), 16):
            expected.add((row.group(2), int(row.group(4), 16), int(row.group(4), 16) + int(row.group(5), 16)))
    shoff, shnum, shsize = (header(binary, f) for f in ("Start of section headers", "Number of section headers",
                                                         "Size of section headers"))  # fmt: skip
    expected.add(("ELF header", 0, header(binary, "Size of this header")))
    expected.add(("section headers", shoff, shoff + shnum * shsize))
    if phnum := header(binary, "Number of program headers"):
        phoff = header(binary, "Start of program headers")
        expected.add(("program headers", phoff, phoff + phnum * header(binary, "Size of program headers")))
    with binary.open("rb") as fh:
        regions = elf.layout(fh)
    assert {(r.name, r.start, r.end) for r in regions} == expected
    assert [r.start for r in regions] == sorted(r.start for r in regions)
    assert {".text", ".rodata"} <= {r.name for r in regions}


def test_layout_refuses_non_elf_and_truncated(tmp_path: Path) -> None:
    binary = build(tmp_path, "x86_64-gcc", SOURCE, "prog")
    with pytest.raises(ValueError, match="not an ELF"):
        elf.layout(io.BytesIO(b"#!/bin/sh\necho hi\n"))
    with pytest.raises(ValueError, match="truncated"):
        elf.layout(io.BytesIO(binary.read_bytes()[:40]))
    short = tmp_path / "short"
    short.write_bytes(binary.read_bytes()[:40])
    found = compare_files(short, flipped(short, tmp_path / "short2", 30))
    assert found is not None and "section: (unreadable ELF: truncated ELF file)" in found.details


# -- files ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
@pytest.mark.parametrize(("source", "section"), [(NEW_STRING, ".rodata"), (NEW_BODY, ".text")])
def test_names_the_section_that_differs(tmp_path: Path, toolchain: str, source: str, section: str) -> None:
    a, b = build(tmp_path, toolchain, SOURCE, "a"), build(tmp_path, toolchain, source, "b")
    assert a.stat().st_size == b.stat().st_size
    found = compare_files(a, b, artifact="envoy")
    assert found is not None
    assert found.artifact == "envoy"
    assert f" in {section} " in found.summary
    assert f"section: {section}" in found.details
    offset = next(int(d.split("(")[1].rstrip(")")) for d in found.details if d.startswith("first difference"))
    assert a.read_bytes()[:offset] == b.read_bytes()[:offset] and a.read_bytes()[offset] != b.read_bytes()[offset]
    if section == ".rodata":  # the excerpt shows the two strings
        assert "|hello, world" in found.details[-2] and "|HELLO, world" in found.details[-1]


def test_identical_files(tmp_path: Path) -> None:
    a = build(tmp_path, "aarch64-gcc", SOURCE, "a")
    b = build(tmp_path, "aarch64-gcc", SOURCE, "b")  # built twice: reproducible
    assert compare_files(a, b) is None
    assert compare_files(a, a) is None
    empty = tmp_path / "empty"
    empty.touch()
    assert compare_files(empty, empty) is None
    renamed = build(tmp_path, "aarch64-gcc", SOURCE, "c", file="prox.c")  # the symbol table names the file
    found = compare_files(a, renamed)
    assert found is not None and "section: .strtab" in found.details
    assert "|g.c." in found.details[-2] and "|x.c." in found.details[-1]


def test_headers_named(tmp_path: Path) -> None:
    a = build(tmp_path, "x86_64-gcc", SOURCE, "a")
    phoff, shoff = header(a, "Start of program headers"), header(a, "Start of section headers")
    for offset, where in [(0x18, "ELF header"), (phoff + 9, "program headers"), (shoff + 70, "section headers")]:
        found = compare_files(a, flipped(a, tmp_path / "b", offset))
        assert found is not None
        assert f"first difference at offset {offset:#x} ({offset})" in found.details
        assert f"section: {where}" in found.details


def test_different_sizes(tmp_path: Path) -> None:
    a = build(tmp_path, "x86_64-gcc", SOURCE, "a")
    b = tmp_path / "b"
    b.write_bytes(a.read_bytes() + b"appended")
    size = a.stat().st_size
    found = compare_files(a, b)
    assert found is not None
    assert (
        found.summary == f"differs at offset {size:#x} (end of file) vs (between sections) ({size} vs {size + 8} bytes)"
    )
    assert f"first difference at offset {size:#x} ({size})" in found.details
    assert "section: (end of file) vs (between sections)" in found.details
    assert found.details[-2] == f"a {size:08x}  (end of file)"
    assert found.details[-1].startswith(f"b {size:08x}  61 70 70 65 6e 64 65 64 ")
    assert found.details[-1].endswith("|appended|  (end of file)")


def test_not_elf(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("version: 1.5.0\nsha: abc\n")
    b.write_text("version: 1.5.1\nsha: abc\n")
    found = compare_files(a, b)
    assert found == Difference(
        "a.txt",
        "differs at offset 0xd (24 bytes)",
        (
            f"a: {a}",
            f"b: {b}",
            "size: 24 bytes",
            "first difference at offset 0xd (13)",
            "a 0000000d  30 0a 73 68 61 3a 20 61  62 63 0a                 |0.sha: abc.|  (end of file)",
            "b 0000000d  31 0a 73 68 61 3a 20 61  62 63 0a                 |1.sha: abc.|  (end of file)",
        ),
    )
    binary = build(tmp_path, "x86_64-gcc", SOURCE, "prog")
    found = compare_files(binary, a)
    assert found is not None and "section: ELF header vs (not ELF)" in found.details


def test_large_file_across_chunks(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_bytes(os.urandom(3 * CHUNK + 5))
    for offset in (2 * CHUNK + 12345, CHUNK - 1, CHUNK, 3 * CHUNK + 4, 0):
        found = compare_files(a, flipped(a, tmp_path / "b", offset))
        assert found is not None
        assert f"first difference at offset {offset:#x} ({offset})" in found.details


def test_render_and_digests() -> None:
    assert compare_digests("pilot manifest", "sha256:" + "a" * 64, "sha256:" + "a" * 64) is None
    found = compare_digests("pilot manifest", "sha256:" + "a" * 64, "sha256:" + "b" * 64)
    assert found is not None
    assert found.render() == ("pilot manifest: digests differ", "  a: sha256:" + "a" * 64, "  b: sha256:" + "b" * 64)


# -- images -----------------------------------------------------------------------------------------

DOCKERFILE = "FROM {base}\nCOPY files/ /data/\nLABEL org.example.flavour={flavour}\n"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """base (imported), a and b (differ in /data/a.txt's content, /data/b.txt's mtime and a label),
    c and d (FROM a, differ in a label only), e (FROM a, one more layer)."""
    tmp = tmp_path_factory.mktemp("images")
    run = uuid.uuid4().hex[:10]
    names = {key: f"istiobuild-compare-{key}:{run}" for key in "abcde"}
    names["base"] = f"istiobuild-compare-base:{run}"
    rootfs = io.BytesIO()
    with tarfile.open(fileobj=rootfs, mode="w") as tar:
        add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    try:
        docker_cli("import", "-", names["base"], stdin=rootfs.getvalue())
        for key, content, mtime, flavour in [("a", "one", 1_600_000_000, "1"), ("b", "two", 1_700_000_000, "2")]:
            context = tmp / key
            (context / "files").mkdir(parents=True)
            for name, text, when in [("a.txt", content, 1_600_000_000), ("b.txt", "same", mtime), ("c.txt", "", 0)]:
                (context / "files" / name).write_text(text)
                os.utime(context / "files" / name, (when, when))
            (context / "Dockerfile").write_text(DOCKERFILE.format(base=names["base"], flavour=flavour))
            docker_cli("build", "-q", "-t", names[key], str(context))
        for key, dockerfile in [("c", "LABEL y=1"), ("d", "LABEL y=2"), ("e", "COPY Dockerfile /extra/")]:
            context = tmp / key
            context.mkdir()
            (context / "Dockerfile").write_text(f"FROM {names['a']}\n{dockerfile}\n")
            docker_cli("build", "-q", "-t", names[key], str(context))
        yield names
    finally:
        docker_cli("rmi", "-f", *names.values(), check=False)


def docker_cli(*args: str, stdin: bytes | None = None, check: bool = True) -> None:
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}
    proc = subprocess.run(["docker", *args], input=stdin, env=env, capture_output=True, check=False)
    assert proc.returncode == 0 or not check, f"docker {args[0]}: {proc.stderr.decode(errors='replace')}"


@pytest.mark.slow
def test_images_differ_in_files_and_label(images: dict[str, str], tmp_path: Path) -> None:
    cli = docker.from_env()
    scratch = tmp_path / "scratch"
    found = compare_images(cli, images["a"], images["b"], scratch, artifact="proxyv2 image")
    assert not scratch.exists()
    assert found is not None
    text = "\n".join(found.render())
    assert text.startswith("proxyv2 image: layer 2 of 2 differs: ")
    assert "; config differs (" in found.summary
    ids = [cli.images.get(images[k]).id for k in "ab"]
    assert found.details[0] == f"image ID: {ids[0]} vs {ids[1]}"
    diff_ids = [cli.images.get(images[k]).attrs["RootFS"]["Layers"][1] for k in "ab"]
    files = {line.split(":")[0]: line for line in found.details if line.startswith("/")}
    assert files["/data/a.txt"] == f"/data/a.txt: content sha256 {sha(b'one')} vs {sha(b'two')} (3 vs 3 bytes)"
    assert files["/data/b.txt"] == "/data/b.txt: mtime 2020-09-13T12:26:40Z vs 2023-11-14T22:13:20Z"
    assert "/data/c.txt" not in files  # unchanged
    assert "history entry 2.created_by: " in text
    label = found.details.index('config.Labels.org.example.flavour: "1" vs "2"')
    assert found.details.index(f"layer 2 diff_id: {diff_ids[0]} vs {diff_ids[1]}") < label  # files first


@pytest.mark.slow
def test_equal_images(images: dict[str, str], tmp_path: Path) -> None:
    cli = docker.from_env()
    alias = images["a"].replace("-a:", "-alias:")
    cli.images.get(images["a"]).tag(alias)
    try:
        assert compare_images(cli, images["a"], alias, tmp_path / "scratch") is None
        assert compare_images(cli, images["a"], images["a"], tmp_path / "scratch") is None
    finally:
        cli.images.remove(alias)


@pytest.mark.slow
def test_config_only_and_extra_layer(images: dict[str, str], tmp_path: Path) -> None:
    cli = docker.from_env()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    found = compare_images(cli, images["c"], images["d"], scratch)
    assert list(scratch.iterdir()) == []  # our files are gone, the directory stays
    assert found is not None
    assert found.artifact == images["c"]
    assert 'config.Labels.y: "1" vs "2"' in found.details
    assert "layer" not in found.summary
    found = compare_images(cli, images["a"], images["e"], scratch)
    assert found is not None
    assert "layer 3 of 2 vs 3 differs: 2 files" in found.summary
    assert "/extra: added (dir)" in found.details
    size = len(f"FROM {images['a']}\nCOPY Dockerfile /extra/\n")
    assert f"/extra/Dockerfile: added (file, {size} bytes)" in found.details
    assert any(line.startswith("layer 3 diff_id: (none) vs sha256:") for line in found.details)


def save(cli: docker.DockerClient, name: str, dest: Path) -> Path:
    with dest.open("wb") as fh:
        for chunk in cli.images.get(name).save():
            fh.write(chunk)
    return dest


def oci_layout(legacy: Path, dest: Path) -> Path:
    """The archive as docker 25+ saves it: blobs/sha256/<digest>, manifest.json naming them, index.json."""
    with tarfile.open(legacy) as src, tarfile.open(dest, "w") as out:
        manifest = json.loads(src.extractfile("manifest.json").read())  # type: ignore[union-attr]
        blobs = {}
        for name in [manifest[0]["Config"], *manifest[0]["Layers"]]:
            data = src.extractfile(name).read()  # type: ignore[union-attr]
            blobs[name] = "blobs/sha256/" + hashlib.sha256(data).hexdigest()
            add(out, blobs[name], data)
        new = [{"Config": blobs[manifest[0]["Config"]], "RepoTags": None,
                "Layers": [blobs[layer] for layer in manifest[0]["Layers"]]}]  # fmt: skip
        add(out, "manifest.json", json.dumps(new).encode())
        add(out, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        add(out, "index.json", b'{"schemaVersion": 2, "manifests": []}')
    return dest


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.mark.slow
def test_archives_legacy_and_oci_layout(images: dict[str, str], tmp_path: Path) -> None:
    cli = docker.from_env()
    legacy = [save(cli, images[k], tmp_path / f"{k}.tar") for k in "ab"]
    with tarfile.open(legacy[0]) as tar:
        assert any(name.endswith("/layer.tar") for name in tar.getnames())  # docker 20.10's format
    oci = [oci_layout(path, tmp_path / f"{path.stem}-oci.tar") for path in legacy]
    expected = compare_archives(*legacy, artifact="pilot")
    assert expected is not None and "layer 2 of 2 differs" in expected.summary
    assert compare_archives(*oci, artifact="pilot") == expected
    assert compare_archives(legacy[0], oci[0], artifact="pilot") is None


def layer_tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def entry(name: str, data: bytes = b"", **fields: object) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode, info.mtime = 0o644, 1_600_000_000
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def saved_archive(dest: Path, layers: list[bytes], config: Mapping[str, object]) -> Path:
    """A docker-save archive in the legacy layout, written by hand (tarfile) for layer contents the
    classic builder cannot produce here (xattrs, owners)."""
    names = [f"{hashlib.sha256(layer).hexdigest()}/layer.tar" for layer in layers]
    config = {**config, "rootfs": {"type": "layers", "diff_ids": [f"sha256:{n.split('/')[0]}" for n in names]}}
    with tarfile.open(dest, "w") as out:
        for name, layer in zip(names, layers, strict=True):
            add(out, name, layer)
        add(out, "config.json", json.dumps(config).encode())
        add(out, "manifest.json", json.dumps([{"Config": "config.json", "Layers": names}]).encode())
    return dest


def test_layer_file_aspects(tmp_path: Path) -> None:
    base = layer_tar([entry("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")])
    cap = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
    before = [
        entry("usr/local/bin/envoy", b"\x7fELF-1", mode=0o755),
        entry("./etc/istio/proxy/", type=tarfile.DIRTYPE, mode=0o755),
        entry("etc/istio/proxy/envoy.json", b"{}", uid=1337, gid=1337),
        entry("usr/bin/envoy", type=tarfile.SYMTYPE, linkname="/usr/local/bin/envoy"),
        entry("var/lib/istio", type=tarfile.DIRTYPE),
        entry("pilot-agent", b"agent", pax_headers=cap),
        entry("gone", b"x"),
        *(entry(f"many/{i:02d}", b"a") for i in range(25)),
    ]
    after = [
        entry("usr/local/bin/envoy", b"\x7fELF-22", mode=0o755),
        entry("etc/istio/proxy", type=tarfile.DIRTYPE, mode=0o700),
        entry("etc/istio/proxy/envoy.json", b"{}", uid=0, gid=0),
        entry("usr/bin/envoy", type=tarfile.SYMTYPE, linkname="../local/bin/envoy"),
        entry("var/lib/istio", b"now a file"),
        entry("pilot-agent", b"agent"),
        entry("new", b"hello"),
        *(entry(f"many/{i:02d}", b"b") for i in range(25)),
    ]
    config = {"architecture": "arm64", "config": {"Env": ["PATH=/bin", "ISTIO_META_VERSION=1.5.0"]}}
    a = saved_archive(tmp_path / "a.tar", [base, layer_tar(before)], config)
    config_b = {"architecture": "amd64", "config": {"Env": ["PATH=/bin", "ISTIO_META_VERSION=1.5.1"]}}
    b = saved_archive(tmp_path / "b.tar", [base, layer_tar(after)], config_b)
    found = compare_archives(a, b, artifact="proxyv2 image")
    assert found is not None
    assert found.summary == (
        "layer 2 of 2 differs: 33 files; config differs (2 fields: architecture, config.Env.ISTIO_META_VERSION)"
    )
    changed = "content sha256 ca978112ca1b vs 3e23e8160039 (1 vs 1 bytes)"
    assert found.details[1:] == (
        "/etc/istio/proxy: mode 0755 vs 0700",
        "/etc/istio/proxy/envoy.json: uid:gid 1337:1337 vs 0:0",
        "/gone: removed (file, 1 bytes)",
        *(f"/many/{i:02d}: {changed}" for i in range(17)),
        "... and 13 more files",
        'architecture: "arm64" vs "amd64"',
        'config.Env.ISTIO_META_VERSION: "1.5.0" vs "1.5.1"',
    )
    rest = compare_archives(
        saved_archive(tmp_path / "c.tar", [layer_tar(before[:6])], config),
        saved_archive(tmp_path / "d.tar", [layer_tar(after[:7])], config),
        artifact="x",
    )
    assert rest is not None
    assert rest.details[1:] == (
        "/etc/istio/proxy: mode 0755 vs 0700",
        "/etc/istio/proxy/envoy.json: uid:gid 1337:1337 vs 0:0",
        "/new: added (file, 5 bytes)",
        '/pilot-agent: xattrs {"security.capability": "\\u0001\\u0000\\u0000\\u0002"} vs {}',
        "/usr/bin/envoy: link target /usr/local/bin/envoy vs ../local/bin/envoy",
        f"/usr/local/bin/envoy: content sha256 {sha(before[0][1])} vs {sha(after[0][1])} (6 vs 7 bytes)",
        "/var/lib/istio: type dir vs file, 10 bytes",
    )


def test_layers_reordered_and_several_differing(tmp_path: Path) -> None:
    files = [entry("a", b"1"), entry("b", b"2")]
    one, reordered, other = layer_tar(files), layer_tar(files[::-1]), layer_tar([entry("c", b"3")])
    a = saved_archive(tmp_path / "a.tar", [one, one, other], {})
    b = saved_archive(tmp_path / "b.tar", [one, reordered, layer_tar([])], {})
    found = compare_archives(a, b, artifact="pilot image")
    assert found is not None
    assert found.render()[0] == "pilot image: layer 2 of 3 differs: 0 files"
    assert found.details[1:] == (
        "layers that differ: 2, 3 (files of the first)",
        "no file differs: the layer tars differ in entry order or headers",
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def test_bad_input(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tar"
    with tarfile.open(plain, "w") as tar:
        add(tar, "hello.txt", b"hi")
    with pytest.raises(UsageError, match=r"plain.tar is not a `docker save` archive of one image"):
        compare_archives(plain, plain, artifact="x")


@pytest.mark.slow
def test_missing_image(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="image istiobuild-compare-missing:nope does not exist"):
        compare_images(docker.from_env(), "istiobuild-compare-missing:nope", "x", tmp_path)


def test_rebuild_reads_the_subjects_of_a_provenance() -> None:
    """Files by sha256, images by their image ID; pushed manifest digests are left out (a rebuild stops at images)."""
    from istiobuild import rebuild

    sha = "ab" * 32
    statement = [
        {"name": "envoy", "digest": {"sha256": sha}},
        {"name": "h/pilot:t-amd64", "digest": {"sha256": sha}, "annotations": {"digestOf": "imageID"}},
        {"name": "h/proxyv2:t-amd64", "digest": {"sha256": sha}, "annotations": {"digestOf": "manifest"}},
    ]
    found = rebuild.subjects({"subjects": statement}, None)
    assert [(s.name, s.kind, s.digest) for s in found] == [
        ("envoy", "file", f"sha256:{sha}"),
        ("h/pilot:t-amd64", "image", f"sha256:{sha}"),
    ]

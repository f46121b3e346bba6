"""The release stage and `invoke release` (issue 12): the default hub/tag rewrite, istio's own regeneration of what
istioctl embeds, deterministic archives, the release manifest, and what happens when any of it is missing.

The two-arch, two-workdir checks (byte-identical archives, istioctl under qemu, provenance) are in
tests/test_reproducible.py, which builds the example twice anyway; here one x86_64 build shows the failures.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import invoke, one_error
from istiobuild import archives, defaults, fsutil, provenance, release
from istiobuild.arch import Arch
from istiobuild.archivespec import archive_spec
from istiobuild.errors import DataError
from istiobuild.stages.release import RemoveArchives

EXAMPLE = release.get("example")
GOOD = {
    "name": "istio-{version}-linux-{goarch}.tar.gz",
    "istioctl_name": "istioctl-{version}-linux-{goarch}.tar.gz",
    "top": "istio-{version}",
    "istioctl": "bin/istioctl",
    "dirs": {"install": ["*.yaml"]},
    "files": ["LICENSE"],
    "copies": [{"from": "operator/data/profiles", "to": "install/kubernetes/operator/profiles"}],
}


# -- the rewrite, the archive spec, the archive bytes (no build) ---------------------------------


def test_rewrite_sets_only_the_upstream_default_lines() -> None:
    text = (
        "global:\n  # Default hub\n  hub: gcr.io/istio-testing  # dev builds\n  tag: 1.5-dev\n"
        "prometheus:\n  hub: docker.io/prom\n  tag: v2.15.1\n"
    )
    new, hubs, tags = defaults.rewrite(text, "gcr.io/istio-testing", "1.5-dev", "127.0.0.1:5000/istio", "1.5.0")
    assert (hubs, tags) == (1, 1)
    assert '  hub: 127.0.0.1:5000/istio  # dev builds\n  tag: "1.5.0"\n' in new
    assert "hub: docker.io/prom\n  tag: v2.15.1" in new  # an addon's own image is not ours
    assert defaults.rewrite("tag: latest\n", "x", "latest", "h", "1.5")[0] == 'tag: "1.5"\n'  # a string, not 1.5
    # the JSON form a chart's files/gen-istio.yaml carries (release-builder rewrites it from 1.13)
    gen = '      "global": {\n        "hub": "gcr.io/istio-testing",\n        "tag": "latest",\n        "x": "latest"\n'
    new, hubs, tags = defaults.rewrite(gen, "gcr.io/istio-testing", "latest", "reg.example/istio", "1.14.0")
    assert (hubs, tags) == (1, 1) and '"hub": "reg.example/istio",\n        "tag": "1.14.0",' in new
    assert '"x": "latest"' in new and archives.names_defaults(new, "reg.example/istio", "1.14.0") == []
    assert archives.names_defaults(gen, "reg.example/istio", "1.14.0") == ["hub: reg.example/istio", "tag: 1.14.0"]


@pytest.mark.parametrize("value", ["1.5", "1.5.0", "0x10", "1_000", "1e3", "y", "No", "null", "example", "v1.2",
                                   "127.0.0.1:5000/istio", "reg.example/x", "1.5.0-kunpeng"])  # fmt: skip
def test_yaml_reads_back_every_hub_and_tag_as_the_same_string(value: str) -> None:
    import yaml

    assert yaml.safe_load(f"tag: {defaults.yaml_scalar(value)}") == {"tag": value}


def test_archive_spec_is_validated_and_maps_tree_paths() -> None:
    spec = archive_spec(GOOD)
    assert spec is not None
    assert spec.archive_paths("operator/data/profiles/default.yaml") == [
        "install/kubernetes/operator/profiles/default.yaml"
    ]
    assert spec.archive_paths("install/kubernetes/helm/istio/values.yaml") == [
        "install/kubernetes/helm/istio/values.yaml"
    ]
    assert spec.archive_paths("install/x.sh") == []  # filtered out by the directory's patterns
    for bad, message in (
        ({**GOOD, "dirs": ["install"]}, "dirs must be a table"),
        ({**GOOD, "dirs": {"install": []}}, "dirs must be a table"),
        ({**GOOD, "dirs": {"../up": ["*"]}}, "relative path"),
        ({**GOOD, "top": "../up"}, "relative path"),
        ({**GOOD, "name": "istio.tar.gz"}, "{version}"),
        ({**GOOD, "copies": [{"from": "a"}]}, "copies"),
        ({k: v for k, v in GOOD.items() if k != "files"}, "needs exactly"),
    ):
        with pytest.raises(ValueError, match=message):
            archive_spec(bad)


def test_each_directory_keeps_the_names_its_own_patterns_match(tmp_path: Path) -> None:
    """release-builder from 1.8: samples keep *.yaml and *.sh, tools/certs only README.md, Makefile* and common.mk."""
    tree = tmp_path / "istio"
    for name in ("samples/a.yaml", "samples/run.sh", "samples/b.go", "tools/certs/Makefile.k8s.mk",
                 "tools/certs/common.mk", "tools/certs/x.yaml", "tools/other.sh", "LICENSE"):  # fmt: skip
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(name)
    istioctl = tmp_path / "istioctl"
    istioctl.write_bytes(b"\x7fELF")
    dirs = {"samples": ["*.yaml", "*.sh"], "tools/certs": ["README.md", "Makefile*", "common.mk"]}
    spec = archive_spec({**GOOD, "dirs": dirs, "copies": []})
    assert spec is not None
    names = sorted(e.name for e in archives.install_entries(spec, tree, istioctl, "m", "top"))
    assert names == [
        "top/LICENSE", "top/bin/istioctl", "top/manifest.yaml", "top/samples/a.yaml", "top/samples/run.sh",
        "top/tools/certs/Makefile.k8s.mk", "top/tools/certs/common.mk",
    ]  # fmt: skip
    assert spec.archive_paths("tools/certs/x.yaml") == [] and spec.archive_paths("samples/run.sh") == ["samples/run.sh"]


def test_a_bad_line_table_is_one_data_error(tmp_path: Path) -> None:
    text = (release.data_dir("releases") / "example.toml").read_text()
    broken = text.replace('hub = "gcr.io/istio-testing"', 'hub = "gcr.io/istio-testing"\nfiles_extra = 1', 1)
    (tmp_path / "example.toml").write_text(broken)
    with pytest.raises(DataError, match="defaults"):
        release.matrix(tmp_path)
    escape = text.replace('"manifests/global.yaml" = "latest"', '"../global.yaml" = "latest"')
    (tmp_path / "example.toml").write_text(escape)
    with pytest.raises(DataError, match="inside the istio tree"):
        release.matrix(tmp_path)


def test_tar_gz_is_deterministic(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("b\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o700)
    entries = [
        archives.Entry(name="top/z/b.yaml", source=tmp_path / "b.yaml"),
        archives.Entry(name="top/run.sh", source=tmp_path / "run.sh", executable=True),
        archives.Entry(name="top/manifest.yaml", data=b"version: 1\n"),
    ]
    one = archives.tar_gz(entries, 1704067200)
    assert one == archives.tar_gz(list(reversed(entries)), 1704067200)
    assert one[4:8] == b"\0\0\0\0"  # the gzip header's MTIME field: no time
    with tarfile.open(fileobj=io.BytesIO(one)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["top", "top/manifest.yaml", "top/run.sh", "top/z", "top/z/b.yaml"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 1704067200)}
    assert {m.name: m.mode for m in members}["top/run.sh"] == 0o755
    assert {m.name: m.mode for m in members}["top/z/b.yaml"] == 0o644


def test_manifest_yaml_reads_back() -> None:
    import yaml

    data = {"version": "1.5", "deps": {"istio": {"sha": "c3c3"}}, "patches": {"envoy": [], "istio": [{"name": "a"}]}}
    assert yaml.safe_load(archives.manifest_yaml(data)) == data


def test_defaults_patch_on_the_miniature(example_upstream: Path, tmp_path: Path) -> None:
    repo = tmp_path / "istio"
    subprocess.run(["git", "clone", "-q", str(example_upstream / "istio"), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", EXAMPLE.pins[release.Component.ISTIO].commit], check=True)
    assert EXAMPLE.defaults is not None
    patch = defaults.patch_for(repo, EXAMPLE.defaults, "reg.example/x", "v1", [], tmp_path / "log")
    text = patch.path.read_text()
    assert "+  hub: reg.example/x" in text and "+  tag: v1" in text
    assert "operator/pkg/vfs/assets.gen.go" in text  # regenerated by the miniature's run_update_charts.sh
    again = defaults.patch_for(repo, EXAMPLE.defaults, "reg.example/x", "v1", [], tmp_path / "log")
    assert again.path.read_text() == text  # the same bytes: a resumed patch stage sees the same patch
    wrong = type(EXAMPLE.defaults)(hub="quay.io/other", files={"manifests/global.yaml": "latest"})
    with pytest.raises(DataError, match="no `hub: quay.io/other` line"):
        defaults.patch_for(repo, wrong, "reg.example/x", "v1", [], tmp_path / "log")


# -- a real build whose istioctl was not regenerated; `invoke release` refusing -------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("release") / "work"
    proc = build(work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield work


def build(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The example for x86_64 in `work`, with a cache next to it (the same for every build there), for a target
    kernel given as ISTIOBUILD_TARGET_KERNEL (tests/test_kernel.py: its spelling is normalised)."""
    env = {"ISTIOBUILD_CACHE_DIR": str(work.parent / "cache"), "ISTIOBUILD_TARGET_KERNEL": "PAGE_SIZE=4k,va_bits=48"}
    return invoke("build", "--release", "example", "--arch", "x86_64", "--workdir", str(work), *args, env=env)


def test_the_record_and_provenance_carry_the_target_kernel(built: Path) -> None:
    """(issue 11, kernel fit) what the plan said about the deployment target reaches the record and provenance."""
    out = built / "example-x86_64"
    record = json.loads((out / "build-record.json").read_text())
    assert (record["target_kernel"], record["page_size"]) == ("page_size=4k,va_bits=48", "4k")
    statement = json.loads((out / "provenance.json").read_text())
    provenance.validate(statement)
    external = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert (external["targetKernel"], external["pageSize"]) == ("page_size=4k,va_bits=48", "4k")


def test_plan_names_the_defaults_files_and_the_archives(built: Path) -> None:
    proc = invoke("plan", "--release", "example", "--arch", "x86_64", "--workdir", str(built), "--hub", "reg.example/i")
    assert proc.returncode == 0, proc.stderr
    for text in (
        "set the default hub reg.example/i and tag example in install/kubernetes/helm/istio/values.yaml",
        "regenerate operator/pkg/vfs/assets.gen.go by running `bash operator/scripts/run_update_charts.sh`",
        "istio-0.1.0-linux-amd64.tar.gz",
        "istioctl from the archive reports version 0.1.0 and `istioctl profile dump` names hub reg.example/i",
    ):
        assert text in proc.stdout, text


def _collect(work: Path, out: Path, *more: str) -> str:
    """`invoke release` that must fail: its one error line; nothing written to `out`."""
    error = one_error(invoke("release", "--workdir", str(work), "--out", str(out), *more))
    assert not out.exists()
    return error


def test_invoke_release_refuses_what_the_build_did_not_make(built: Path, tmp_path: Path) -> None:
    work, dist = tmp_path / "work", tmp_path / "dist"
    shutil.copytree(built / "example-x86_64", work / "example-x86_64", symlinks=True)
    out = work / "example-x86_64"
    name = "istioctl-0.1.0-linux-amd64.tar.gz"
    original = (out / "release" / name).read_bytes()
    arm, source = tmp_path / "hello", tmp_path / "hello.c"
    source.write_text("int main(void) { return 0; }\n")
    subprocess.run(["aarch64-linux-gnu-gcc", "-o", str(arm), str(source)], check=True)
    forged = archives.tar_gz([archives.Entry(name="istioctl", source=arm, executable=True)], 0)
    digest = archives.write_with_sha256(out / "release" / name, forged)  # with a .sha256 that matches it
    assert "is not what the build recorded and its provenance names" in _collect(work, dist)
    # a forgery that also rewrote the records (unsigned provenance): the ELF check still refuses it
    for record, key in (("archives.json", "archives"), ("provenance.json", "subject")):
        data = json.loads((out / record).read_text())
        for entry in data[key]:
            if entry["name"] in (name, f"release/{name}"):
                entry.update({"sha256": digest} if key == "archives" else {"digest": {"sha256": digest}})
        (out / record).write_text(json.dumps(data))
    error = _collect(work, dist)
    assert f"{name}: istioctl: aarch64 (not x86_64)" in error, error
    archives.write_with_sha256(out / "release" / name, original)
    (out / "release" / f"{name}.sha256").write_text("0" * 64 + f"  {name}\n")
    assert "is not what the build recorded" in _collect(work, dist) or "does not hold the sha256" in _collect(
        work, dist
    )


def test_invoke_release_refuses_an_unfinished_arch_and_bad_arguments(built: Path, tmp_path: Path) -> None:
    work, dist = tmp_path / "work", tmp_path / "dist"
    shutil.copytree(built / "example-x86_64", work / "example-x86_64", symlinks=True)
    out = work / "example-x86_64"
    (out / "provenance.json").rename(tmp_path / "provenance.json")
    assert "has no valid provenance" in _collect(work, dist)  # the record stage did not run
    (tmp_path / "provenance.json").rename(out / "provenance.json")
    (out / "archives.json").write_text('{"archives": "not a list", "checks": {}}')
    assert "are incomplete or did not pass the release stage's checks" in _collect(work, dist)
    (out / "archives.json").unlink()  # a Ctrl-C while the stage wrote the archives: refused, not left out
    assert "are incomplete" in _collect(work, dist)
    assert "is inside the workdir" in _collect(work, out / "sbom" / "dist")
    assert "starts with '-'" in _collect(work, Path("-x"))
    assert "is not a release name" in _collect(built, dist, "--release", "$(touch x)")
    with fsutil.workdir_lock(built):
        assert "another istiobuild is already running" in _collect(built, dist)


def test_a_replaced_istioctl_is_not_shipped(built: Path, tmp_path: Path) -> None:
    """A binary put in istio's out dir after the istio stage: the release stage refuses to pack it."""
    istioctl = built / "example" / "istio" / "out" / "linux_amd64" / "istioctl"
    original = istioctl.read_bytes()
    shutil.copyfile(istioctl.parent / "pilot-agent", istioctl)
    try:
        error = one_error(build(built))
        assert "is not the istioctl the istio stage built and checked" in error, error
    finally:
        istioctl.write_bytes(original)
    again = build(built)  # the one the istio stage built: packed again (only the release and record stages run)
    assert again.returncode == 0 and "skip istio: up to date" in again.stderr, again.stderr


def test_a_build_without_archives_removes_an_earlier_build_s(tmp_path: Path) -> None:
    """1.5.0 with another tag makes no archives (istioctl takes its version as the tag): the stage removes the
    archives and archives.json an earlier build left, so neither the provenance nor `invoke release` take them."""
    proc = invoke("plan", "--release", "1.5.0", "--arch", "aarch64", "--host", "aarch64", "--workdir", str(tmp_path),
                  "--tag", "other", "--json")  # fmt: skip
    stage = next(s for s in json.loads(proc.stdout)["stages"] if s["name"] == "release")
    [step] = stage["steps"]
    assert step["action"] == "RemoveArchives" and "remove" in step["does"], step
    assert step["paths"] == [
        str(tmp_path / "1.5.0-aarch64" / "release"),
        str(tmp_path / "1.5.0-aarch64" / "archives.json"),
    ]
    for path in step["paths"]:  # what an earlier build left; the action removes both
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "1.5.0-aarch64" / "release").mkdir()
    (tmp_path / "1.5.0-aarch64" / "release" / "istio-1.5.0-linux-arm64.tar.gz").write_bytes(b"old")
    (tmp_path / "1.5.0-aarch64" / "archives.json").write_text("{}")
    RemoveArchives(paths=tuple(Path(x) for x in step["paths"])).perform(None)  # type: ignore[arg-type]
    assert not any(Path(x).exists() for x in step["paths"])


def test_an_istioctl_that_was_not_regenerated_fails_the_release_stage(built: Path, tmp_path: Path) -> None:
    """Set the YAML defaults but keep the old embedded copy (what a hand edit does): the release stage's istioctl
    check fails, and `invoke release` refuses the archives it left."""
    ok = invoke("release", "--workdir", str(built), "--out", str(tmp_path / "before"))
    assert ok.returncode == 0, ok.stderr
    istio = built / "example" / "istio"
    subprocess.run(["git", "-C", str(istio), "checkout", "HEAD", "--", "operator/pkg/vfs/assets.gen.go"], check=True)
    proc = build(built, "--allow-modified")
    error = one_error(proc)
    assert "`istioctl profile dump` does not name hub: istio and tag: example" in error, error
    assert "were not regenerated" in error
    record = json.loads((built / "example-x86_64" / "archives.json").read_text())
    assert "checks" not in record
    refused = one_error(invoke("release", "--workdir", str(built), "--out", str(tmp_path / "after")))
    assert "did not pass the release stage's checks" in refused


def test_wrong_elves_names_each_file_of_another_arch(built: Path) -> None:
    archive = next((built / "example-x86_64" / "release").glob("istioctl-*.tar.gz"))
    assert archives.wrong_elves(archive, Arch.X86_64) == (1, [])
    assert archives.wrong_elves(archive, Arch.AARCH64) == (1, ["istioctl: x86_64"])


def test_a_release_whose_istioctl_takes_its_version_as_tag_gets_no_archives_with_another_tag(tmp_path: Path) -> None:
    base = ("plan", "--release", "1.5.0", "--arch", "aarch64", "--host", "aarch64", "--workdir", str(tmp_path))
    custom = invoke(*base, "--tag", "1.5.0-kunpeng")
    assert custom.returncode == 0, custom.stderr
    assert "no release archives: istioctl 1.5.0 installs istio/<name>:1.5.0" in custom.stdout
    default = invoke(*base)
    assert default.returncode == 0, default.stderr
    assert "istio-1.5.0-linux-arm64.tar.gz" in default.stdout and "no release archives" not in default.stdout

"""The example release built for real: envoy with bazel (wee8 via gn + ninja), istio with Go.

For each target arch (x86_64, aarch64) and toolchain (gcc, clang): `invoke checkout` and
`invoke patch` through the CLI, then the commands of the plan's proxy and istio stages (argv, cwd
and env from `invoke plan --json`), then checks on what came out: envoy's ELF machine, the
compiler named in its .comment section, `envoy --version` (under qemu-user for a foreign arch),
the Go binaries' arch, and the envoy copy bin/init.sh made in istio's out dir.

Real tools throughout (bazel, gn, ninja, gcc/clang and the aarch64 cross compilers, Go, qemu); a
missing tool fails the test with its name (`bash ci/setup.sh` installs them all). All cases share
one cache (ISTIOBUILD_CACHE_DIR: git objects, bazel's disk and repository caches, Go's caches, the
toolchain links); each workdir has its own bazel output root, and every bazel server a test starts
is stopped when it ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from istiobuild import procs

REPO = Path(__file__).resolve().parent.parent
HOST = platform.machine()
ARCHES = ("x86_64", "aarch64")
TOOLCHAINS = ("gcc", "clang")
GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
E_MACHINE = {"x86_64": 62, "aarch64": 183}  # ELF header e_machine: EM_X86_64, EM_AARCH64
README = "bash ci/setup.sh installs every tool these tests need"

pytestmark = pytest.mark.slow


# -- tools -------------------------------------------------------------------------------------


def _compilers(arch: str, toolchain: str) -> list[str]:
    if toolchain == "clang":
        return ["clang", "clang++"]
    prefix = "" if arch == HOST else f"{arch}-linux-gnu-"
    return [f"{prefix}gcc", f"{prefix}g++"]


def _qemu(arch: str) -> str:
    return f"qemu-{arch}-static"


@pytest.fixture(scope="module")
def tools() -> None:
    """Fail (never skip) with the names of whatever is missing."""
    needed = {"git", "make", "bazel", "java", "gn", "ninja", "go", "readelf", "ar"}
    for arch in ARCHES:
        for toolchain in TOOLCHAINS:
            needed.update(_compilers(arch, toolchain))
        if arch != HOST:
            needed.add(_qemu(arch))
    missing = sorted(name for name in needed if shutil.which(name) is None)
    # clang builds use --config=libc++ (static libc++ and libc++abi), for the host arch.
    for lib in ("libc++.a", "libc++abi.a"):
        found = subprocess.run(
            ["clang++", "-stdlib=libc++", f"-print-file-name={lib}"], capture_output=True, text=True, check=False
        ).stdout.strip()
        if not os.path.isabs(found):
            missing.append(f"{lib} (libc++-dev / libc++abi-dev)")
    if missing:
        pytest.fail(f"missing tools for the example build: {', '.join(missing)}; {README}", pytrace=False)


# -- running istiobuild and the plan's steps ---------------------------------------------------


def istiobuild_env(cache: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    env["ISTIOBUILD_CACHE_DIR"] = str(cache)
    env.update({f"ISTIOBUILD_{k.upper()}": v for k, v in settings.items()})
    return env


def invoke(*args: str, env: Mapping[str, str]) -> str:
    argv = [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args]
    proc = subprocess.run(argv, cwd=REPO, env=dict(env), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def log_tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache (ISTIOBUILD_CACHE_DIR) for every case: what a second workdir reuses from the first."""
    return tmp_path_factory.mktemp("example-cache")


_ROOTS: set[Path] = set()  # the bazel output user roots of the builds a test started


@pytest.fixture(autouse=True)
def _stop_bazel() -> Iterator[None]:
    """Stop every bazel server under the output roots the test's builds used (each workdir has its own)."""
    yield
    while _ROOTS:
        procs.stop_bazel_servers(_ROOTS.pop())


def build_example(arch: str, toolchain: str, workdir: Path, cache: Path, page_size: str = "4k") -> dict[str, Any]:
    """`invoke build` of the example, every stage for real; returns the plan it ran."""
    env = istiobuild_env(cache, page_size=page_size)
    common = ["--release", "example", "--workdir", str(workdir), "--arch", arch, "--toolchain", toolchain]
    plan: dict[str, Any] = json.loads(invoke("plan", *common, "--json", env=env))
    assert (plan["arch"], plan["page_size"]) == (arch, page_size)
    proxy_steps = next(s for s in plan["stages"] if s["name"] == "proxy")["steps"]
    make = next(step for step in proxy_steps if step.get("argv", [])[:2] == ["make", "build_envoy"])
    startup = next(a for a in make["argv"] if a.startswith("BAZEL_STARTUP_ARGS=")).split("=", 1)[1].split()
    root = Path(next(a for a in startup if a.startswith("--output_user_root=")).split("=", 1)[1])
    assert root.is_relative_to(workdir)  # the workdir's own, never the shared cache
    _ROOTS.add(root)
    invoke("build", *common, env=env)
    return plan


# -- checks ------------------------------------------------------------------------------------


def e_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    assert header[5] == 1, f"{path} is not little-endian"
    return int.from_bytes(header[18:20], "little")


def readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout


def comment(path: Path) -> list[str]:
    """The strings of the .comment section (compilers and linkers that made the objects)."""
    return [
        m.group(1).strip()
        for m in re.finditer(r"^\s*\[\s*[0-9a-f]+\]\s+(.*)$", readelf("-p", ".comment", str(path)), re.M)
    ]


def run_for(arch: str, path: Path, *args: str) -> str:
    argv = [str(path), *args] if arch == HOST else [_qemu(arch), str(path), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr}"
    return proc.stdout


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def link_params(proxy: Path) -> str:
    return (proxy / "bazel-bin" / "src" / "envoy" / "envoy-2.params").read_text()


def metadata(plan: dict[str, Any]) -> dict[str, str]:
    """The release metadata the plan stamps (the record stage carries it)."""
    record = next(s for s in plan["stages"] if s["name"] == "record")
    meta: dict[str, str] = record["steps"][0]["metadata"]
    return meta


def long_form(fields: Mapping[str, str]) -> str:
    """istio.io/pkg/version's BuildInfo as `<binary> version` prints it."""
    return "version.BuildInfo{" + ", ".join(f'{k}:"{v}"' for k, v in fields.items()) + "}"


def go_version() -> str:
    return subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True).stdout.strip()


def pinned_proxy_commit() -> str:
    text = (REPO / "releases" / "example.toml").read_text()
    match = re.search(r'^proxy = \{ tag = "0\.1\.0", commit = "([0-9a-f]{40})" \}', text, re.M)
    assert match
    return match.group(1)


# -- the four builds ---------------------------------------------------------------------------


@pytest.mark.parametrize("toolchain", TOOLCHAINS)
@pytest.mark.parametrize("arch", ARCHES)
def test_example_builds(tools: None, cache: Path, tmp_path: Path, arch: str, toolchain: str) -> None:
    workdir = tmp_path / "work"
    plan = build_example(arch, toolchain, workdir, cache)
    proxy = workdir / "example" / "proxy"
    istio = workdir / "example" / "istio"

    # envoy: the target's ELF machine, fully static (no interpreter: qemu-user needs no sysroot)
    envoy = proxy / "bazel-bin" / "src" / "envoy" / "envoy"
    assert envoy.is_file()
    assert e_machine(envoy) == E_MACHINE[arch]
    assert ("AArch64" if arch == "aarch64" else "X86-64") in readelf("-h", str(envoy))
    assert "INTERP" not in readelf("-l", str(envoy))

    # the compiler is on record: clang builds say so, gcc builds name only GCC
    strings = comment(envoy)
    if toolchain == "clang":
        assert any("clang version" in s for s in strings), strings
    else:
        assert strings and all(s.startswith("GCC:") for s in strings), strings

    # envoy --version, like the real one: <proxy commit>/<version>/<status>/RELEASE/BoringSSL; the patched
    # checkout would be "Modified" (tests/test_example.py), the plan's workspace status names our series
    meta = metadata(plan)
    assert meta["proxy_status"].startswith("istiobuild-") and meta["proxy_revision"] == pinned_proxy_commit()
    out = run_for(arch, envoy, "--version")
    assert f"envoy  version: {pinned_proxy_commit()}/0.1.0/{meta['proxy_status']}/RELEASE/BoringSSL" in out.splitlines()

    # 0004 (64K pages) is not selected for 4K pages: nothing asks the linker for 64K
    assert "max-page-size" not in link_params(proxy)

    # istio: Go binaries for the target, and bin/init.sh's copy of the envoy we built
    out_dir = istio / "out" / f"linux_{GOARCH[arch]}"
    istio_stage = next(s for s in plan["stages"] if s["name"] == "istio")
    check = next(step for step in istio_stage["steps"] if step.get("action") == "CheckElves")
    assert check["root"] == str(out_dir)
    for binary in ("pilot-discovery", "pilot-agent"):
        assert e_machine(out_dir / binary) == E_MACHINE[arch], binary
    stamped = {
        "Version": "0.1.0",
        "GitRevision": meta["istio_revision"],
        "GolangVersion": go_version(),
        "BuildStatus": meta["istio_status"],
        "GitTag": "0.1.0",
    }
    assert meta["istio_status"].startswith("istiobuild-")
    for binary in ("pilot-discovery", "pilot-agent"):
        assert run_for(arch, out_dir / binary, "version").strip() == long_form(stamped), binary
    assert sha256(out_dir / "envoy") == sha256(envoy)
    istio_log = workdir / "logs" / f"example-{arch}-istio.log"
    assert f"to {out_dir}/envoy" in istio_log.read_text()  # init.sh's "Copying"
    # what istiobuild recorded: the envoy it collected, checked and ran
    record = json.loads((workdir / f"example-{arch}" / "artifacts" / "envoy.json").read_text())
    assert (record["arch"], record["compiler"]) == (arch, toolchain)
    assert record["sha256"] == sha256(envoy) and "envoy  version:" in record["version"]
    assert record["reported"]["status"] == meta["proxy_status"]
    versions = json.loads((workdir / f"example-{arch}" / "artifacts" / "istio.json").read_text())
    assert versions["pilot-discovery"]["version"] == stamped

    # everything under the workdir: no GOPATH/bin beside it (Makefile.core.mk's default), no bazel server
    # a Makefile started by itself in the build's private HOME (the workdir's own)
    assert sorted(os.listdir(tmp_path)) == ["work"]
    home = Path(_make_step(plan)["env"]["HOME"])
    assert home.is_relative_to(workdir) and home.is_dir() and not (home / ".cache" / "bazel").exists()
    assert (workdir / f"example-{arch}" / "gopath" / "bin" / "envoy").is_file()
    # the toolchain checked is the one used: what CC/CXX/AR/NM resolved to, in the record and the log
    used = json.loads((workdir / f"example-{arch}" / "proxy-toolchain.json").read_text())
    compilers = _compilers(arch, toolchain)
    for var, name in (("CC", compilers[0]), ("CXX", compilers[1])):
        found = shutil.which(name)
        assert found is not None and used[var]["resolved"] == os.path.realpath(found), (var, used[var])
        assert used[var]["path"] == str(cache / "toolchain" / arch / "bin" / Path(used[var]["path"]).name)
    proxy_log = (workdir / "logs" / f"example-{arch}-proxy.log").read_text()
    assert f"[istiobuild] toolchain: CC={used['CC']['name']} -> {used['CC']['resolved']}" in proxy_log


def test_example_aarch64_for_64k_pages(tools: None, cache: Path, tmp_path: Path) -> None:
    """page_size=64k selects envoy 0004: the wee8 library asks every binary linking it for 64K pages."""
    workdir = tmp_path / "work"
    build_example("aarch64", "gcc", workdir, cache, page_size="64k")
    applied = json.loads((workdir / "example" / "envoy" / ".git" / "istiobuild" / "patches.json").read_text())
    assert [Path(p["name"]).name for p in applied["patches"]][-1] == "0004-wee8-64k-page-size.patch"
    proxy = workdir / "example" / "proxy"
    assert "-Wl,-z,max-page-size=0x10000" in link_params(proxy).splitlines()
    envoy = proxy / "bazel-bin" / "src" / "envoy" / "envoy"
    aligns = re.findall(r"^\s*LOAD\s.*\s(0x[0-9a-f]+)$", readelf("-l", str(envoy)), re.M)
    assert aligns and set(aligns) == {"0x10000"}, aligns


# -- what reaches bazel and its actions ----------------------------------------------------------


def _make_step(plan: dict[str, Any]) -> dict[str, Any]:
    steps = next(s for s in plan["stages"] if s["name"] == "proxy")["steps"]
    step: dict[str, Any] = next(s for s in steps if s.get("argv", [])[:2] == ["make", "build_envoy"])
    return step


def _genrule_env(stderr: str) -> dict[str, str]:
    """The environment bazel --subcommands shows for the wee8 genrule (`exec env - K=V ... /bin/bash -c`)."""
    start = stderr.index("SUBCOMMAND: # @com_googlesource_chromium_v8//:build")
    block = stderr[start : stderr.index("/bin/bash -c", start)]
    pairs = (m.group(1).split("=", 1) for m in re.finditer(r"^\s+([A-Z_]+=\S*) \\$", block, re.M))
    return dict(pairs)


def test_ar_and_nm_reach_the_wee8_genrule(tools: None, cache: Path, tmp_path: Path) -> None:
    """Strict action env drops AR/NM unless passed (the genrule then falls back to `ar`/`nm`): the plan passes
    them, and the genrule's PATH starts with the profile's tools."""
    workdir = tmp_path / "work"
    plan = build_example(HOST, "clang", workdir, cache)
    make = _make_step(plan)
    calls = tmp_path / "ar-calls"
    calls.mkdir()
    wrapper = tmp_path / "ar-wrapper"  # a distinct AR value also makes bazel run the genrule again
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}/log\nexec {make["env"]["AR"]} "$@"\n')
    wrapper.chmod(0o755)
    env = {**istiobuild_env(cache), **make["env"], "AR": str(wrapper)}

    def run_make(drop: tuple[str, ...] = ()) -> str:
        extra = ["--subcommands", f"--sandbox_writable_path={calls}"]
        argv = [
            "BAZEL_BUILD_ARGS=" + " ".join([*(a for a in arg[17:].split() if a not in drop), *extra])
            if arg.startswith("BAZEL_BUILD_ARGS=")
            else arg
            for arg in make["argv"]
        ]
        proc = subprocess.run(argv, cwd=make["cwd"], env=env, capture_output=True, text=True, check=False, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stderr

    before = _genrule_env(run_make(drop=("--action_env=AR", "--action_env=NM")))
    assert "AR" not in before and "NM" not in before and not (calls / "log").exists()
    after = _genrule_env(run_make())
    assert after["AR"] == str(wrapper) and after["NM"] == make["env"]["NM"]
    assert after["CC"] == make["env"]["CC"] and after["PATH"].startswith(f"{cache}/toolchain/{HOST}/bin:")
    assert "/usr/lib/llvm-9/bin" not in after["PATH"]
    assert re.search(r"^rcs \S*libwee8\.a ", (calls / "log").read_text(), re.M)  # gn's alink ran our AR


def test_unpatched_proxy_makefile_starts_a_stray_bazel_server(tools: None, cache: Path, tmp_path: Path) -> None:
    """The real mechanism, with real bazel: parsing the unpatched Makefile (even `make -n`) starts a bazel server
    in the default output root under HOME, outside the plan's; the example series (0003) stops it."""
    upstream = tmp_path / "upstream"
    subprocess.run([sys.executable, "-m", "istiobuild.example", str(upstream)], check=True, capture_output=True)
    plan = json.loads(
        invoke("plan", "--release", "example", "--workdir", str(tmp_path / "work"), "--json", env=istiobuild_env(cache))
    )
    make = _make_step(plan)
    found: dict[bool, list[Path]] = {}
    for patched in (False, True):
        home = tmp_path / f"home-{patched}"
        home.mkdir()
        env = {**istiobuild_env(cache), **make["env"], "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
        checkout = tmp_path / f"proxy-{patched}"
        subprocess.run(["git", "clone", "--quiet", str(upstream / "proxy"), str(checkout)], check=True, env=env)
        subprocess.run(["git", "-C", str(checkout), "checkout", "--quiet", pinned_proxy_commit()], check=True, env=env)
        if patched:
            series = REPO / "patches" / "proxy" / "example"
            for name in (series / "series").read_text().split():
                if name.endswith(".patch"):
                    subprocess.run(["git", "-C", str(checkout), "apply", str(series / name)], check=True, env=env)
        argv = ["make", "-n", *make["argv"][1:]]
        proc = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, check=False, timeout=300)
        found[patched] = sorted(home.glob(".cache/bazel/_bazel_*/*/server/server.pid.txt"))
        _ROOTS.update(pidfile.parents[2] for pidfile in found[patched])  # <root>/<hash>/server/server.pid.txt
        assert proc.returncode == 0, proc.stderr
    assert found[False], "the unpatched Makefile started no bazel server"
    assert found[True] == []

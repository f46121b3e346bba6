"""CI-native output from real builds: the example built once with GITHUB_ACTIONS=true (groups, the job summary,
the step outputs checked against `docker images`), then, in the same workdir, the summary on a terminal through
rich, GitLab sections, the progress parser on this build's own logs, bazel's remote cache warning from a real
bazel, and a real failure in the istio stage (a Go syntax error) annotated with its stage and log."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import invoke, one_error
from istiobuild import commands, progress
from istiobuild.console import Console
from istiobuild.run import run

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent

HUB = f"127.0.0.1:5000/ci-output-{secrets.token_hex(4)}"  # the local registry; names no other build uses
STAGES = ["checkout", "patch", "toolchain", "proxy", "istio", "images", "verify", "release", "publish", "record"]
IMAGES = ["pilot", "proxyv2", "kubectl"]


@dataclasses.dataclass(frozen=True)
class Built:
    work: Path
    cache: Path
    stderr: str
    summary: str
    outputs: dict[str, str]


def settings(work: Path, cache: Path) -> dict[str, str | bool]:
    return {"release": "example", "arch": "x86_64", "toolchain": "gcc", "workdir": str(work),
            "cache_dir": str(cache), "hub": HUB, "push": True}  # fmt: skip


def common(work: Path) -> tuple[str, ...]:
    return ("--release", "example", "--arch", "x86_64", "--toolchain", "gcc", "--workdir", str(work), "--hub", HUB,
            "--push")  # fmt: skip


def ci_env(root: Path, cache: Path, **extra: str) -> dict[str, str]:
    """The variables a CI runner sets (all three systems' switches given, so the runner's own do not leak in)."""
    env = {"ISTIOBUILD_CACHE_DIR": str(cache), "GITHUB_ACTIONS": "", "GITLAB_CI": "", "FORCE_COLOR": "",
           "GITHUB_STEP_SUMMARY": str(root / "summary.md"), "GITHUB_OUTPUT": str(root / "output.txt")}  # fmt: skip
    return {**env, **extra}


def read_outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it (`name=value`, or `name<<DELIMITER` ... `DELIMITER`)."""
    found: dict[str, str] = {}
    lines = iter(path.read_text().split("\n"))
    for line in lines:
        if re.match(r"^[\w-]+<<", line):
            name, delimiter = line.split("<<", 1)
            found[name] = "\n".join(iter(lines.__next__, delimiter))
        elif line:
            name, value = line.split("=", 1)
            found[name] = value
    return found


def repo_digest(reference: str) -> str:
    """The digest the registry gave the pushed image, as `docker inspect` lists it."""
    listed = subprocess.run(["docker", "inspect", "--format", "{{json .RepoDigests}}", reference],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    repository = reference.rpartition(":")[0]
    digests: list[str] = json.loads(listed)
    return next(d.split("@")[1] for d in digests if d.startswith(f"{repository}@"))


def docker_ids() -> dict[str, str]:
    listed = subprocess.run(["docker", "images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}}\t{{.ID}}"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    return dict(line.split("\t") for line in listed.splitlines())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    root = tmp_path_factory.mktemp("ci-output")
    work, cache = root / "work", root / "cache"
    planned = invoke("plan", *common(work), "--json", env=ci_env(root, cache))
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    proc = invoke("build", *common(work), env=ci_env(root, cache, GITHUB_ACTIONS="true"))
    try:
        assert proc.returncode == 0, proc.stderr
        yield Built(work, cache, proc.stderr, (root / "summary.md").read_text(), read_outputs(root / "output.txt"))
    finally:
        proxy = next(s for s in plan["stages"] if s["name"] == "proxy")["steps"]
        make = next(step for step in proxy if step.get("argv", [])[:2] == ["make", "build_envoy"])
        startup = next(a for a in make["argv"] if a.startswith("BAZEL_STARTUP_ARGS=")).split("=", 1)[1].split()
        subprocess.run(["bazel", *startup, "shutdown"], cwd=make["cwd"], capture_output=True, check=False, timeout=120)
        ours = [name for name in docker_ids() if name.startswith(f"{HUB}/")]
        if ours:
            subprocess.run(["docker", "rmi", "-f", *ours], capture_output=True, check=False)


def test_every_stage_is_one_github_group(built: Built) -> None:
    lines = [re.sub(r"^\[\d\d:\d\d:\d\d\] ", "", line) for line in built.stderr.splitlines()]
    opened = ""
    for line in lines:
        if line.startswith("::group::"):
            assert not opened, f"group {line} inside {opened}"
            opened = line.removeprefix("::group::").split(":", 1)[0]
        elif line == "::endgroup::":
            assert opened
            opened = ""
        elif line.startswith(("start ", "done ")):  # a stage starts inside its group and is done after it
            assert opened == (line.split()[1].rstrip(":") if line.startswith("start ") else ""), line
    groups = [line.removeprefix("::group::").split(":", 1)[0] for line in lines if line.startswith("::group::")]
    assert groups == STAGES and lines.count("::endgroup::") == len(STAGES) and not opened
    assert "::error" not in built.stderr


def test_job_summary_has_stages_images_verification_and_record(built: Built) -> None:
    rows = [line.split(" | ") for line in built.summary.splitlines() if line.startswith("| ")]
    stages = [r for r in rows if r[0].removeprefix("| ") in STAGES]
    assert [r[0].removeprefix("| ") for r in stages] == STAGES
    assert all(r[1] == "done" and re.fullmatch(r"\d+\.\d s \|", r[2]) for r in stages), stages
    ids = docker_ids()
    for name in IMAGES:
        ref = f"{HUB}/{name}:example-amd64"
        row = next(r for r in rows if r[0] == f"| `{ref}`")
        assert row[1:3] == [f"`{ids[ref]}`", f"`{repo_digest(ref)}`"], row
        assert re.fullmatch(r"\d+ checks passed \|", row[3]), row
    assert f"- ok `{HUB}/proxyv2:example-amd64`: envoy --version: envoy  version: " in built.summary
    assert f"build record: `{built.work}/example-x86_64/build-record.json`" in built.summary


def test_step_outputs_name_the_record_the_out_dir_and_the_image_digests(built: Built) -> None:
    record = Path(built.outputs["record"])
    assert record == built.work / "example-x86_64" / "build-record.json" and record.is_file()
    assert Path(built.outputs["out"]) == built.work / "example-x86_64"
    images = json.loads(built.outputs["images"])
    assert sorted(images) == sorted(json.loads(record.read_text())["images"])
    assert images == {ref: repo_digest(ref) for ref in images} and len(images) == len(IMAGES)  # pushed: digests


def test_plain_summary_ends_a_build_without_a_terminal(built: Built) -> None:
    tail = built.stderr[built.stderr.rindex("] summary: ") :].splitlines()
    assert tail[0] == "] summary: example for x86_64, built"
    assert [line.split()[:2] for line in tail[1 : 1 + len(STAGES)]] == [[stage, "done"] for stage in STAGES]
    ids = docker_ids()
    for name in IMAGES:
        ref = f"{HUB}/{name}:example-amd64"
        line = f"  image {ref} {ids[ref]} digest {repo_digest(ref)} "
        assert any(x.startswith(line) and x.endswith("checks passed") for x in tail), (line, tail)
    assert tail[-1] == f"  build record {built.work}/example-x86_64/build-record.json"


def test_progress_parser_on_this_builds_logs(built: Built) -> None:
    proxy = (built.work / "logs" / "example-x86_64-proxy.log").read_text().splitlines()
    counters = [line for line in proxy if re.match(r"^\[[\d,]+ / [\d,]+\] ", line)]
    assert counters, "bazel printed no action counter"
    tracker = progress.Tracker()
    seen = [p for line in proxy if (p := tracker.feed(line)) is not None]
    done, total = re.match(r"^\[([\d,]+) / ([\d,]+)\]", counters[-1]).groups()  # type: ignore[union-attr]
    assert seen[-1] == progress.Progress(what="bazel actions", done=int(done), total=int(total))
    images = (built.work / "logs" / "example-x86_64-images.log").read_text().splitlines()
    tracker = progress.Tracker()
    steps = [(p.what, p.done, p.total) for line in images if (p := tracker.feed(line)) and line.startswith("Step ")]
    last_build = [line for line in images if line.startswith("docker build ")][-1]
    last_step = [line for line in images if line.startswith("Step ")][-1]
    n, m = re.match(r"Step (\d+)/(\d+) :", last_step).groups()  # type: ignore[union-attr]
    assert n == m and steps[-1] == (f"docker build steps ({last_build.split('-t ')[1].split()[0]})", int(n), int(m))
    assert len(steps) == sum(line.startswith("Step ") for line in images)


def test_summary_on_a_terminal_through_rich(built: Built) -> None:
    """A rerun in-process, its console a terminal (rich, FORCE_COLOR=1) writing into a StringIO."""
    out = io.StringIO()
    b = commands.prepare(settings(built.work, built.cache))
    b.executor.console = Console(stream=out, tty=True, env={"FORCE_COLOR": "1"})
    commands.run_build(b)
    shown = out.getvalue()
    assert "\x1b[" in shown and "┏" in shown  # colour and a table: rich on a terminal
    text = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    assert "example for x86_64: built" in text
    for stage in STAGES:
        assert re.search(rf"│ {stage} +│ up to date │", text), stage
    ids, rows = docker_ids(), [line.split("│") for line in text.splitlines() if line.count("│") == 5]
    shown_ids, digests = "".join(r[2].strip() for r in rows), "".join(r[3].strip() for r in rows)  # folded cells
    for ref in (f"{HUB}/{name}:example-amd64" for name in IMAGES):
        assert ids[ref] in shown_ids and repo_digest(ref) in digests, ref
    assert f"\nbuild record: {built.work}/example-x86_64/build-record.json\n" in text  # one line, however long


def test_gitlab_sections(built: Built, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    env.update(ci_env(tmp_path, built.cache, GITLAB_CI="true"))
    proc = subprocess.run(  # bytes: text mode would turn the sections' \r into line ends
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "build", *common(built.work), "--from", "publish"],
        env=env, capture_output=True, check=False, timeout=600,
    )  # fmt: skip
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    marks = re.findall(r"\x1b\[0Ksection_(start|end):(\d+):istiobuild_(\w+)(\[collapsed=true\])?\r\x1b\[0K(.*)", stderr)
    assert [(kind, name) for kind, _, name, _, _ in marks] == [
        ("start", "publish"), ("end", "publish"), ("start", "record"), ("end", "record"),
    ]  # fmt: skip
    assert [(flag, title.split(":")[0]) for kind, _, _, flag, title in marks if kind == "start"] == [
        ("[collapsed=true]", "publish"), ("[collapsed=true]", "record"),
    ]  # fmt: skip
    times = [int(t) for _, t, _, _, _ in marks]
    assert times == sorted(times) and "::group::" not in stderr
    assert not (tmp_path / "summary.md").exists()  # GitLab has no job summary file: nothing written


def test_bazel_remote_cache_warning_and_live_progress_from_real_bazel(tmp_path: Path) -> None:
    """bazel with its remote cache down: the build goes on; the live view follows its counter, CI gets a warning."""
    workspace, root = tmp_path / "ws", tmp_path / "root"
    workspace.mkdir()
    (workspace / "WORKSPACE").write_text("")
    (workspace / "BUILD").write_text(
        '[genrule(name = "step%d" % i, outs = ["step%d.txt" % i], srcs = ([":step%d" % (i - 1)] if i else []),'
        ' cmd = "sleep 1; echo %d > $@" % i) for i in range(4)]\n'
    )
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    startup = [f"--output_user_root={root}", "--bazelrc=/dev/null", "--max_idle_secs=60"]
    env = {"HOME": str(tmp_path)}
    out, log = io.StringIO(), tmp_path / "proxy.log"
    console = Console(stream=out, tty=True, env={"GITHUB_ACTIONS": "true"})
    console.start("proxy", "build envoy", log)
    shown: list[progress.Progress | None] = []  # what the live view showed after each of the runner's samples
    try:
        with console.live("proxy: bazel build", log) as on_line:
            view = on_line.__self__  # type: ignore[union-attr]

            def sample(line: str) -> None:
                view.update(line)
                shown.append(view.tracker.current)

            run(["bazel", *startup, "build", f"--remote_cache=http://127.0.0.1:{port}", "--jobs=1", "//:step3"],
                cwd=workspace, env=env, log=log, on_line=sample, what="bazel build")  # fmt: skip
    finally:
        run(["bazel", *startup, "shutdown"], cwd=workspace, env=env, check=False, what="bazel shutdown")
    # Which counters the samples catch depends on the load (a loaded machine also prints `[5 / 5] checking cached
    # actions`). What does not: every counter shown is one bazel printed, and one shows the build's 5 actions (the
    # runner samples 4 times a second; the 4 chained `sleep 1` actions take 4 s).
    printed = {m.groups() for m in re.finditer(r"^\[(\d+) / (\d+)\] ", log.read_text(), re.M)}
    counters = [p for p in shown if p is not None]
    assert counters and all(p.what == "bazel actions" and (str(p.done), str(p.total)) in printed for p in counters)
    assert any(p.total == 5 for p in counters), counters
    console.done("proxy", 1.0)
    shown = out.getvalue()
    assert f"::warning::proxy: bazel: Reading from Remote Cache: Connection refused: /127.0.0.1:{port}\n" in shown
    assert shown.count("::warning::") == 2  # reading and writing, each once


def test_failing_stage_is_an_error_annotation_with_stage_and_log(built: Built, tmp_path: Path) -> None:
    """Last (it leaves the istio stage to run again): a Go syntax error in the istio checkout."""
    source = built.work / "example" / "istio" / "pilot" / "cmd" / "pilot-agent" / "main.go"
    original = source.read_text()
    source.write_text(original + "\nthis is not go\n")
    try:
        proc = invoke("build", *common(built.work), "--allow-modified",
                      env=ci_env(tmp_path, built.cache, GITHUB_ACTIONS="true"))  # fmt: skip
    finally:
        source.write_text(original)
    assert proc.returncode == 7 and one_error(proc).startswith("error: stage istio")
    log = built.work / "logs" / "example-x86_64-istio.log"
    errors = [line for line in proc.stderr.splitlines() if line.startswith("::error")]
    assert len(errors) == 1 and errors[0].startswith(
        f"::error title=stage istio failed::make build failed (exit 2) (log: {log})%0A"
    ), proc.stderr
    assert "syntax error" in errors[0] and "%0A" in errors[0] and "\r" not in errors[0]
    lines = proc.stderr.splitlines()
    assert lines[lines.index(errors[0]) - 1] == "::endgroup::"  # the failed stage's group is closed first
    summary = (tmp_path / "summary.md").read_text()
    assert "failed: stage istio: make build failed (exit 2)" in summary
    assert re.search(r"^\| istio \| failed \| \d+\.\d s \|$", summary, re.M) and "| images |" not in summary
    outputs = read_outputs(tmp_path / "output.txt")
    assert "record" not in outputs and outputs["images"] == "{}"  # nothing this build made is vouched for

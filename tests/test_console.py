"""The console without a build: workflow commands, step outputs, GitLab sections, the progress parser and the
remote cache warnings on real output (captured from real builds below; tests/test_ci_output.py runs them live),
Go package counting with the real go, the live view and the summary through rich."""

# ruff: noqa: E501  (the captured build output below keeps its long lines as the tools printed them)
from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console as RichConsole

from istiobuild import cioutput, progress, secrets
from istiobuild.console import BuildSummary, Console, ImageResult, LiveView, StageResult, plain_summary, rich_summary
from istiobuild.errors import StepFailed
from istiobuild.run import run

REPO = Path(__file__).resolve().parent.parent

# Captured from logs/example-x86_64-proxy.log of `invoke build --release example --arch x86_64` (bazel 4.2.3;
# trailing blanks stripped): the example's bazel build, its wee8 genrule's ninja output included.
EXAMPLE_PROXY_LOG = """\
Starting local Bazel server and connecting to it...
INFO: Invocation ID: cc504116-150b-4095-b605-bc4f41ea2c2c
Loading:
Loading: 0 packages loaded
Analyzing: target //src/envoy:envoy (1 packages loaded, 0 targets configured)
Analyzing: target //src/envoy:envoy (12 packages loaded, 18 targets configured)
Analyzing: target //src/envoy:envoy (18 packages loaded, 50 targets configured)
INFO: Analyzed target //src/envoy:envoy (19 packages loaded, 74 targets configured).
INFO: Found 1 target...
[0 / 4] [Prepa] Creating source manifest for //src/envoy:envoy
INFO: From Executing genrule @com_googlesource_chromium_v8//:build:
/tmp/ci-out/w1/cache/bazel-root/914376617768ea04de0ee96701381f24/sandbox/linux-sandbox/2/execroot/io_istio_proxy/external/com_googlesource_chromium_v8/wee8 /tmp/ci-out/w1/cache/bazel-root/914376617768ea04de0ee96701381f24/sandbox/linux-sandbox/2/execroot/io_istio_proxy
Done. Made 1 targets from 3 files in 8ms
ninja: Entering directory `out/wee8'
[1/2] CXX obj/src/libwee8.wee8.o
[2/2] AR obj/libwee8.a
/tmp/ci-out/w1/cache/bazel-root/914376617768ea04de0ee96701381f24/sandbox/linux-sandbox/2/execroot/io_istio_proxy
Target //src/envoy:envoy up-to-date:
  bazel-bin/src/envoy/envoy
INFO: Elapsed time: 6.893s, Critical Path: 0.97s
INFO: 13 processes: 9 internal, 4 linux-sandbox.
INFO: Build completed successfully, 13 total actions
"""


# Captured from bazel 4.2.3 building a chain of four genrules (`sleep 1`) with --jobs=1 and --remote_cache at a
# closed port (the sandbox's debug lines left out): progress counters and the remote cache warnings.
# tests/test_ci_output.py runs the same build live.
BAZEL_REMOTE_CACHE_DOWN = """\
Starting local Bazel server and connecting to it...
INFO: Invocation ID: e72c2baf-07f6-45f1-8349-9a10c2261437
Loading:
Loading: 0 packages loaded
Analyzing: target //:step3 (1 packages loaded)
Analyzing: target //:step3 (1 packages loaded, 0 targets configured)
INFO: Analyzed target //:step3 (5 packages loaded, 10 targets configured).
INFO: Found 1 target...
[0 / 1] checking cached actions
WARNING: Reading from Remote Cache:
Connection refused: /127.0.0.1:1
[1 / 5] Executing genrule //:step0; 0s remote-cache, linux-sandbox
WARNING: Writing to Remote Cache:
4 errors during bulk transfer
INFO: From Executing genrule //:step0:
[2 / 5] Executing genrule //:step1; 0s remote-cache, linux-sandbox
INFO: From Executing genrule //:step1:
[3 / 5] Executing genrule //:step2; 0s remote-cache, linux-sandbox
INFO: From Executing genrule //:step2:
[4 / 5] Executing genrule //:step3; 0s remote-cache, linux-sandbox
INFO: From Executing genrule //:step3:
Target //:step3 up-to-date:
  bazel-bin/step3.txt
INFO: Elapsed time: 9.466s, Critical Path: 4.25s
INFO: 5 processes: 1 internal, 4 linux-sandbox.
INFO: Build completed successfully, 5 total actions
INFO: Build completed successfully, 5 total actions
"""


# Captured from logs/example-x86_64-images.log of the same example build (docker's classic builder).
DOCKER_BUILD_LOG = """\
docker build -t istio/pilot:example-amd64-wf118da28 --build-arg BASE_VERSION=example-amd64-wf118da28 --build-arg BASE_DISTRIBUTION=default --build-arg proxy_version=istio-proxy:15333b806ac147d9e919caeed538beb5ac6f051a --build-arg istio_version=0.1.0 -f /tmp/ci-out/w1/example/istio/out/linux_amd64/docker_build/pilot/Dockerfile.pilot /tmp/ci-out/w1/example/istio/out/linux_amd64/docker_build/pilot
DEPRECATED: The legacy builder is deprecated and will be removed in a future release.
            BuildKit is currently disabled; enable it by removing the DOCKER_BUILDKIT=0
            environment-variable.

Sending build context to Docker daemon  1.837MB

Step 1/5 : ARG BASE_VERSION=latest
Step 2/5 : FROM docker.io/istio/base:${BASE_VERSION}
 ---> ae8479a345f4
Step 3/5 : COPY pilot-discovery /usr/local/bin/pilot-discovery
 ---> Using cache
 ---> 3f9a9f89f356
Step 4/5 : USER 1337:1337
 ---> Using cache
 ---> 163f3d10d3ef
Step 5/5 : ENTRYPOINT ["/usr/local/bin/pilot-discovery"]
 ---> Using cache
 ---> d572c85fe309
[Warning] One or more build-args [BASE_DISTRIBUTION istio_version proxy_version] were not consumed
Successfully built d572c85fe309
Successfully tagged istio/pilot:example-amd64-wf118da28
"""


def parse_github_output(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: `name=value` lines and `name<<DELIMITER` ... `DELIMITER` blocks."""
    found: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value = []
            for item in lines:
                if item == delimiter:
                    break
                value.append(item)
            else:
                raise AssertionError(f"no closing {delimiter}")
            found[name] = "\n".join(value)
        elif line:
            name, value_ = line.split("=", 1)
            found[name] = value_
    return found


def render(renderable: object, width: int = 110, *, crop: bool = True) -> str:
    out = io.StringIO()
    RichConsole(file=out, width=width, force_terminal=True, color_system=None).print(renderable, crop=crop)
    return out.getvalue()


@pytest.fixture
def registered() -> Iterator[str]:
    value = "tok-3f9a9f89f356-secret"
    secrets.register_secret(value)
    yield value
    secrets.forget_secrets()


# -- GitHub Actions workflow commands, outputs; GitLab sections


def test_workflow_commands_escape_data_and_properties_per_spec() -> None:
    assert cioutput.escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert cioutput.escape_property("stage: a, b%") == "stage%3A a%2C b%25"
    line = cioutput.command("error", "make failed (exit 2)\n50% of it", title="stage istio failed: x, y")
    assert line == "::error title=stage istio failed%3A x%2C y::make failed (exit 2)%0A50%25 of it\n"
    assert cioutput.command("warning", "plain") == "::warning::plain\n"
    assert cioutput.group("proxy: build envoy") == "::group::proxy: build envoy\n"
    assert cioutput.endgroup() == "::endgroup::\n"


def test_no_secret_reaches_an_annotation_summary_or_output(tmp_path: Path, registered: str) -> None:
    assert registered not in cioutput.command("error", f"bad {registered}", title=f"t {registered}")
    env = {"GITHUB_OUTPUT": str(tmp_path / "out"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}
    cioutput.write_outputs(env, {"record": f"/x/{registered}"})
    cioutput.write_summary(env, f"| {registered} |")
    for name in ("out", "summary"):
        text = (tmp_path / name).read_text()
        assert registered not in text and secrets.MASK in text


def test_outputs_round_trip_single_and_multi_line(tmp_path: Path) -> None:
    env = {"GITHUB_OUTPUT": str(tmp_path / "out")}
    values = {"record": "/w/example-x86_64/build-record.json", "images": '{"a:b":"sha256:1"}', "notes": "one\ntwo"}
    cioutput.write_outputs(env, values)
    cioutput.write_outputs(env, {"out": "/w/example-x86_64"})  # appended, as GitHub expects
    text = (tmp_path / "out").read_text()
    assert "notes<<ghadelimiter_" in text and "record=/w/" in text
    assert parse_github_output(text) == {**values, "out": "/w/example-x86_64"}
    cioutput.write_outputs({}, values)  # outside GitHub: nowhere to write, nothing fails


def test_gitlab_sections() -> None:
    start = cioutput.section_start("proxy", "proxy: build envoy")
    assert re.fullmatch(
        r"\x1b\[0Ksection_start:\d+:istiobuild_proxy\[collapsed=true\]\r\x1b\[0Kproxy: build envoy\n", start
    )
    assert re.fullmatch(r"\x1b\[0Ksection_end:\d+:istiobuild_proxy\r\x1b\[0K\n", cioutput.section_end("proxy"))
    assert cioutput.section_name("a b/c:d") == "istiobuild_a_b_c_d"


def test_ci_flavor_decides_the_framing(tmp_path: Path) -> None:
    def stage(env: dict[str, str]) -> str:
        out = io.StringIO()
        console = Console(stream=out, tty=False, env=env)
        console.start("proxy", "build envoy", tmp_path / "none.log")
        console.info("inside")
        console.done("proxy", 1.25)
        console.skip("istio", "up to date")
        return out.getvalue()

    github = stage({"GITHUB_ACTIONS": "true"}).splitlines()
    assert github[0] == "::group::proxy: build envoy" and github[3] == "::endgroup::"
    assert github[1].endswith("] start proxy: build envoy") and github[4].endswith("] done proxy in 1.2s")
    gitlab = stage({"GITLAB_CI": "true"})
    assert "section_start:" in gitlab and "section_end:" in gitlab and "::" not in gitlab
    plain = stage({})
    assert "::" not in plain and "\x1b" not in plain
    assert [line.split("] ", 1)[1] for line in plain.splitlines()] == [
        "start proxy: build envoy", "inside", "done proxy in 1.2s", "skip istio: up to date",
    ]  # fmt: skip


def test_failed_stage_closes_its_group_and_annotates_stage_message_log_and_tail(tmp_path: Path) -> None:
    out = io.StringIO()
    console = Console(stream=out, tty=False, env={"GITHUB_ACTIONS": "true"})
    log = tmp_path / "example-x86_64-istio.log"
    console.start("istio", "build istio", log)
    error = StepFailed("stage istio: make build failed (exit 2)", hint="# pkg\nmain.go:32:1: syntax error", log=log)
    console.failed("istio", 3.0, error)
    lines = out.getvalue().splitlines()
    assert lines[2] == "::endgroup::"
    assert lines[3] == (
        f"::error title=stage istio failed::make build failed (exit 2) (log: {log})"
        "%0A# pkg%0Amain.go:32:1: syntax error"
    )
    assert console.results == [
        StageResult(name="istio", state="failed", seconds=3.0, log=log, began=console.results[0].began)
    ]
    console.error(error)  # the same failure again, on its way out of the pipeline: not annotated twice
    assert out.getvalue().count("::error") == 1


# -- the progress parser and the warnings, on real output


def feed(text: str) -> list[progress.Progress]:
    tracker = progress.Tracker()
    seen = []
    for line in text.splitlines():
        before = tracker.current
        now = tracker.feed(line)
        if now is not None and now is not before:
            seen.append(now)
    return seen


def test_bazel_action_counter_from_real_output() -> None:
    seen = feed(BAZEL_REMOTE_CACHE_DOWN)
    assert [(p.what, p.done, p.total) for p in seen] == [("bazel actions", 0, 1)] + [
        ("bazel actions", n, 5) for n in (1, 2, 3, 4)
    ]
    assert seen[-1].fraction == 0.8
    # the example's own build: one counter; the ninja lines of its wee8 genrule and `Done.` are not progress
    assert [(p.done, p.total) for p in feed(EXAMPLE_PROXY_LOG)] == [(0, 4)]


def test_bazel_groups_digits_in_large_builds() -> None:
    # a real counter line of the capture, with the numbers of a real envoy build as bazel's %,d prints them
    line = next(x for x in BAZEL_REMOTE_CACHE_DOWN.splitlines() if x.startswith("[4 / 5]"))
    large = line.replace("[4 / 5]", f"[{4321:,} / {9876:,}]")
    assert (progress.Tracker().feed(large) or progress.Progress(what="", done=0)).total == 9876
    assert progress.Tracker().feed(line.replace("[4 / 5]", "[4.321 / 9.876]")) == progress.Progress(
        what="bazel actions", done=4321, total=9876
    )


def test_docker_build_steps_from_real_output() -> None:
    seen = feed(DOCKER_BUILD_LOG)
    assert [(p.done, p.total) for p in seen] == [(n, 5) for n in range(1, 6)]
    assert seen[0].what == "docker build steps (istio/pilot:example-amd64-wf118da28)"


GO_FILES = {
    "go.mod": "module example.com/m\n\ngo 1.19\n",
    "main.go": 'package main\n\nimport (\n\t"example.com/m/a"\n\t"example.com/m/b"\n)\n\nfunc main() {\n\ta.A()\n\tb.B()\n}\n',
    "a/a.go": "package a\n\nfunc A() {}\n",
    "b/b.go": "package b\n\nfunc B() {}\n",
}


def go_build(tmp_path: Path, flag: str) -> str:
    """A real `go build -v` or `-x` of a three-package module, with an empty build cache: its output."""
    module = tmp_path / f"module{flag}"
    for name, text in GO_FILES.items():
        (module / name).parent.mkdir(parents=True, exist_ok=True)
        (module / name).write_text(text)
    env = {"GOCACHE": str(tmp_path / f"cache{flag}"), "GOPATH": str(tmp_path / "gopath"), "GOFLAGS": "",
           "GO111MODULE": "on", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local", "HOME": str(tmp_path)}  # fmt: skip
    log = tmp_path / f"go{flag}.log"
    run(["go", "build", flag, "-o", str(tmp_path / "bin"), "."], cwd=module, env=env, log=log, what="go build")
    return log.read_text()


def test_go_packages_counted_from_real_go_build(tmp_path: Path) -> None:
    verbose = feed(go_build(tmp_path, "-v"))  # import paths; only domain-qualified ones are told apart for sure
    assert verbose[-1] == progress.Progress(what="Go packages", done=3)
    commands = go_build(tmp_path, "-x")  # what istio's gobuild.sh prints with VERBOSE=1: every compile
    compiles = commands.count("/compile -o ")  # Go 1.19 ships the standard library compiled: a, b and main
    assert compiles == 3 and feed(commands)[-1] == progress.Progress(what="Go packages", done=compiles)
    assert all(p.total is None for p in verbose)  # no total is known: a spinner with the count


def test_warnings_from_real_bazel_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "proxy.log"
    log.write_text(EXAMPLE_PROXY_LOG)
    start = progress.size(log)
    with log.open("a") as fh:
        fh.write(BAZEL_REMOTE_CACHE_DOWN * 3)  # repeated: each warning once
    expected = ["Reading from Remote Cache: Connection refused: /127.0.0.1:1",
                "Writing to Remote Cache: 4 errors during bulk transfer"]  # fmt: skip
    assert progress.warnings(log, start) == expected
    assert progress.warnings(log, progress.size(log)) == [] and progress.warnings(tmp_path / "missing") == []
    for chunk in (7, 64, 333):  # a warning and its reason split across reads
        monkeypatch.setattr(progress, "SCAN_CHUNK", chunk)
        assert progress.warnings(log, start) == expected, chunk


def test_warnings_become_annotations_on_github_and_lines_elsewhere(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    log.write_text("old run\n" + BAZEL_REMOTE_CACHE_DOWN)  # the log is appended across runs
    for env, expected in (({"GITHUB_ACTIONS": "true"}, "::warning::proxy: bazel: Reading from Remote Cache: "),
                          ({}, "warning: proxy: bazel: Reading from Remote Cache: ")):  # fmt: skip
        out = io.StringIO()
        console = Console(stream=out, tty=False, env=env)
        console.start("proxy", "build envoy", log)
        console.done("proxy", 1.0)
        assert expected not in out.getvalue()  # only what this run's stage wrote counts
        console.start("proxy", "build envoy", log)
        with log.open("a") as fh:
            fh.write(BAZEL_REMOTE_CACHE_DOWN)
        console.done("proxy", 1.0)
        assert out.getvalue().count(expected) == 1


def test_log_follower_returns_complete_new_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "step.log"
    log.write_text("before\n")
    follower = progress.LogFollower(log)
    assert follower.lines() == []
    with log.open("a") as fh:
        fh.write("[1 / 5] Executing genrule //:step0\n[2 / 5] Exec")
    assert follower.lines() == ["[1 / 5] Executing genrule //:step0"]
    with log.open("a") as fh:
        fh.write("uting genrule //:step1\n")
    assert follower.lines() == ["[2 / 5] Executing genrule //:step1"]
    log.write_text("new\n")  # replaced: read from its start
    assert follower.lines() == ["new"]
    monkeypatch.setattr(progress, "FOLLOW_MAX", 100)
    monkeypatch.setattr(progress, "TAIL", 30)
    with log.open("a") as fh:
        fh.write("x" * 200 + "\n[9 / 9] last\n")
    assert follower.lines()[-1] == "[9 / 9] last"  # a flood: only its newest part is read
    assert progress.LogFollower(tmp_path / "not-yet").lines() == []


# -- the live view, the summary, rich only on a TTY


def test_live_view_shows_a_progress_bar_then_a_spinner_with_elapsed_time(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    log.write_text("an earlier run\n[1 / 2] old\n")
    view = LiveView("proxy: make build_envoy", log)
    with log.open("a") as fh:
        fh.write(BAZEL_REMOTE_CACHE_DOWN)
    view.update(BAZEL_REMOTE_CACHE_DOWN.splitlines()[-1])  # the runner samples the newest line only
    shown = render(view)
    assert "proxy: make build_envoy 0:00:0" in shown
    assert re.search(r"bazel actions +━+.* 4/5 +80% +0:00:0\d", shown), shown
    assert "INFO: Build completed successfully, 5 total actions" in shown
    view.update("example.com/m/a")
    view.update("example.com/m/b")
    assert re.search(r"2 Go packages +0:00:0\d", render(view)), render(view)
    assert "starting..." in render(LiveView("istio: make build", tmp_path / "new.log"))


@pytest.mark.parametrize("width", [40, 80, 200])
def test_live_view_shows_the_log_path_whole_or_without_its_start(tmp_path: Path, width: int) -> None:
    """The panel never outgrows the terminal; a path too long for it loses its start, never the log's name."""
    log = tmp_path / "a-rather-long-directory-name-for-the-logs-of-this-build" / "example-x86_64-proxy.log"
    for path in (log, Path("proxy.log")):
        shown = render(LiveView("proxy: make build_envoy", path), width)
        assert all(len(line) <= width for line in shown.splitlines()), shown
        bottom = re.fullmatch(r"╰─+ (…?)(\S+) ─+╯", shown.splitlines()[-1])
        assert bottom, shown
        elided, tail = bottom.groups()
        assert str(path).endswith(tail) and path.name in tail
        assert (elided == "…") == (len(str(path)) > width - 6) and len(elided + tail) == min(len(str(path)), width - 6)


def test_console_live_runs_on_a_tty_only(tmp_path: Path) -> None:
    out = io.StringIO()
    with Console(stream=out, tty=True, env={}).live("proxy: make", tmp_path / "p.log") as on_line:
        assert on_line is not None
        on_line("[1 / 5] Executing genrule //:step0")
    assert "proxy: make" in out.getvalue()
    with Console(stream=io.StringIO(), tty=False, env={}).live("proxy: make", tmp_path / "p.log") as none:
        assert none is None


def summary_of(tmp_path: Path, error: str = "") -> BuildSummary:
    ok = ImageResult(
        reference="h/pilot:t-amd64", image_id="sha256:" + "1" * 64, digest="", findings=((True, "platform"),)
    )
    bad = ImageResult(reference="h/proxyv2:t-amd64", image_id="", digest="sha256:" + "2" * 64,
                      findings=((True, "platform"), (False, "envoy --version failed: exit 1")))  # fmt: skip
    stages = (StageResult(name="checkout", state="up to date"), StageResult(name="verify", state="failed", seconds=2.5))
    return BuildSummary(title="example for x86_64", stages=stages, images=(ok, bad), out_dir=tmp_path,
                        record=tmp_path / "build-record.json", error=error)  # fmt: skip


def test_summary_plain_rich_and_markdown(tmp_path: Path) -> None:
    one, two = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    summary = summary_of(tmp_path, error="stage verify failed")
    plain = plain_summary(summary)
    assert plain[0].endswith("summary: example for x86_64, failed: stage verify failed")
    assert "  checkout   up to date" in plain and "  verify     failed     2.5s" in plain
    assert f"  image h/pilot:t-amd64 {one} 1 checks passed" in plain
    assert f"  image h/proxyv2:t-amd64 - digest {two} 1 of 2 checks FAILED: envoy --version failed: exit 1" in plain
    shown = render(rich_summary(summary), width=100, crop=False)  # as Console.finish prints it
    assert shown.startswith("example for x86_64: failed: stage verify failed\n")
    rows = [line.split("│") for line in shown.splitlines() if line.startswith("│") and line.count("│") == 5]
    assert one in "".join(r[2].strip() for r in rows) and two in "".join(
        r[3].strip() for r in rows
    )  # folded, never cut
    assert "│ verify   │ failed     │ 2.5s │" in shown and f"\nbuild record: {tmp_path}/build-record.json\n" in shown
    narrow = render(rich_summary(summary), width=40, crop=False).splitlines()  # the path longer than the terminal
    assert narrow[-1] == f"build record: {tmp_path}/build-record.json"  # one line, the terminal wraps it
    assert all(len(line) <= 40 for line in narrow[:-1])  # the rest fits, the digests folded
    markdown = cioutput.markdown(summary)
    assert "| verify | failed | 2.5 s |" in markdown and "| checkout | up to date |  |" in markdown
    assert "| image | image ID | registry digest | verification |" in markdown
    assert f"| `h/proxyv2:t-amd64` |  | `{two}` | 1 of 2 checks FAILED: envoy --version failed: exit 1 |" in markdown
    assert "- **FAILED** `h/proxyv2:t-amd64`: envoy --version failed: exit 1" in markdown
    assert cioutput.outputs(summary)["images"] == f'{{"h/pilot:t-amd64":"{one}","h/proxyv2:t-amd64":"{two}"}}'
    unpushed = dataclasses.replace(summary, images=summary.images[:1])
    assert "| image | image ID | verification |" in cioutput.markdown(unpushed)
    assert "registry digest" not in render(rich_summary(unpushed))


def test_rich_is_imported_on_a_tty_only() -> None:
    code = (
        "import io, sys\n"
        "import istiobuild.tasks\n"
        "assert 'istiobuild.console' not in sys.modules\n"
        "from istiobuild.console import Console\n"
        "c = Console(stream=io.StringIO(), tty=False, env={})\n"
        "c.start('proxy', 'x'); c.done('proxy', 1.0)\n"
        "assert 'rich' not in sys.modules, 'rich imported without a TTY'\n"
        "Console(stream=io.StringIO(), tty=True, env={}).info('x')\n"
        "assert 'rich' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO / "src", capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr

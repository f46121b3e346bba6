"""The CI pipelines (GitHub Actions, GitLab CI, Jenkins): each validated with a real tool (actionlint with
shellcheck, GitLab's JSON schema, Groovy's parser), its structure checked (per-arch runners, the cache key,
the manifest after the builds), every istiobuild command it runs checked against the task collection, and its
scripts run for real on the example, with and without the signing key: matrix and cache-key as they are, build
as --dry-run, the signing-key handling and openssl as they are, and the manifest job against a throwaway registry
holding per-arch images with attached provenance signed by that key (what the build jobs leave behind)."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import REPO, keypair, one_error
from istiobuild import matrix, provenance, signing
from istiobuild.arch import Arch
from istiobuild.layout import Layout
from istiobuild.provenance import Dependency
from istiobuild.tasks import ns
from test_images import docker, start_registry

pytestmark = pytest.mark.slow
WORKFLOW = REPO / ".github/workflows/istiobuild.yml"
CALLERS = sorted((REPO / "ci/github").glob("*.yml"))
GITLAB = REPO / "ci/gitlab-ci.yml"
JENKINS = REPO / "ci/Jenkinsfile"
KEY = re.compile(r"^istiobuild-bazel-example-(aarch64|x86_64)-[0-9a-f]{16}$")
_SOME = Layout(workdir=Path("/w"), cache=Path("/c"), release="r", arch=Arch.X86_64)
CACHED = [str(p.relative_to(_SOME.cache)) for p in matrix.cached_dirs(_SOME)]  # what the CI caches hold
NAMES = ("pilot", "proxyv2")  # the example's images on both arches: what its manifest joins
BASH = ("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c")  # GitHub's `shell: bash`; GitLab's is alike
JENKINS_SH = ("sh", "-xe", "-c")  # Jenkins' `sh` step


# -- the registry and the keys: what the build jobs leave for the manifest job


@dataclasses.dataclass(frozen=True, kw_only=True)
class Signed:
    """A throwaway registry with <hub>/<name>:example-<goarch> for NAMES and both arches, each with a provenance
    attached as `invoke build --push --signing-key` attaches it, signed by `key` (the CI secret); `pub` is its public
    half made here, `other` a key that signed nothing."""

    hub: str
    registry: str
    key: Path
    pub: Path
    other: Path

    def text(self, key: Path | None = None) -> str:
        return (key or self.key).read_text()

    def body(self) -> str:
        """A line of the private key, to look for in what the pipelines print."""
        return self.text().splitlines()[1]


def build_provenance(ref: str, digest: str, arch: Arch, hub: str) -> dict[str, Any]:
    """What the record stage writes for a pushed, verified image (docs/provenance.md), this image its subject."""
    now = dt.datetime.now(tz=dt.timezone.utc)
    return provenance.statement(
        subjects=[provenance.image_subject(ref, manifest_digest=digest)],
        external={"release": "example", "arch": arch.value, "toolchain": "clang", "pageSize": "4k", "hub": hub,
                  "tag": "example"},
        internal={},
        dependencies=[provenance.tool_dependency("clang", "14.0.6")],
        builder_id="https://istiobuild.github.io/builders/local/v1",
        builder_version={"istiobuild": "test"},
        invocation_id=f"urn:uuid:{uuid.uuid4()}",
        started=now,
        finished=now,
        byproducts=[Dependency(name="verify.json", digest={"sha256": "0" * 64},
                               annotations={"verification": "passed"})],
    )  # fmt: skip


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Signed]:
    tmp = tmp_path_factory.mktemp("signed")
    key, pub = keypair(tmp, "ci")
    other, _ = keypair(tmp, "other")
    address, registry = start_registry(tmp / "registry")
    hub = f"{address}/istiobuild-ci"
    (tmp / "context").mkdir()
    (tmp / "context/hello.txt").write_text("hello\n")
    (tmp / "context/Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\n")
    local = f"istiobuild-ci-tiny:{uuid.uuid4().hex[:8]}"
    try:
        for arch in Arch:
            subprocess.run(
                ["docker", "build", "-q", "--platform", arch.oci_platform, "-t", f"{local}-{arch.goarch}",
                 str(tmp / "context")],
                check=True, capture_output=True, env={"DOCKER_BUILDKIT": "0", "PATH": os.environ["PATH"]},
            )  # fmt: skip
            for name in NAMES:
                ref = f"{hub}/{name}:example-{arch.goarch}"
                docker("tag", f"{local}-{arch.goarch}", ref)
                digest = next(w for w in docker("push", ref).split() if w.startswith("sha256:"))
                envelope = signing.sign(build_provenance(ref, digest, arch, hub), key)
                signing.attach(envelope, f"{hub}/{name}", digest, insecure=True, scratch=tmp / "scratch", log=None)
                docker("rmi", ref)
            docker("rmi", f"{local}-{arch.goarch}")
        yield Signed(hub=hub, registry=address, key=key, pub=pub, other=other)
    finally:
        registry.terminate()
        registry.wait(timeout=30)


# -- running the scripts: `invoke` is this checkout's, a build only as --dry-run


def installed(bin_dir: Path) -> Path:
    """What the install steps the tests skip (venv, pip install -e .) leave behind: an `invoke` running this
    checkout's tasks (a build only as --dry-run: nothing is built or pushed), a venv `activate` putting it on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    run = f'exec {shlex.quote(sys.executable)} -m invoke --search-root {shlex.quote(str(REPO))} "$@"'
    (bin_dir / "invoke").write_text(f'#!/bin/sh\nif [ "$1" = build ]; then set -- "$@" --dry-run; fi\n{run}\n')
    (bin_dir / "invoke").chmod(0o755)
    (bin_dir / "activate").write_text(f'PATH={shlex.quote(str(bin_dir))}:"$PATH"; export PATH\n')
    return bin_dir


_INSTALL = re.compile(r"bash ci/setup\.sh|python3? -m venv|pip install|GITHUB_PATH|^export PATH=")


def install_only(script: str) -> bool:
    """The scripts the tests skip: every line installs istiobuild or the tools, nothing else."""
    lines = [line.strip() for line in script.splitlines() if line.strip()]
    return bool(lines) and all(_INSTALL.search(line) for line in lines)


def shell(argv: Sequence[str], script: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ISTIOBUILD_")}
    return subprocess.run(
        [*argv, script], env=base | dict(env), cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


# -- shell: the `invoke` and `openssl` commands of a script, as words (quotes removed, variables still $NAME)

_WORD = r"""(?:"[^"\n]*"|'[^'\n]*'|[^\s"'()|;&<>]+)"""
_INVOKE = re.compile(rf"(?:^|[\s;&|(])invoke[ \t]+(?P<args>{_WORD}(?:[ \t]+{_WORD})*)", re.M)
_OPENSSL = re.compile(rf"(?:^|[\s;&|(])openssl[ \t]+(?P<args>{_WORD}(?:[ \t]+{_WORD})*)", re.M)


def unquote(word: str) -> str:
    for q in ("'''", '"""', "'", '"'):
        if len(word) >= 2 * len(q) and word.startswith(q) and word.endswith(q):
            return word[len(q) : -len(q)]
    return word


def commands(pattern: re.Pattern[str], script: str) -> list[list[str]]:
    return [[unquote(w) for w in re.findall(_WORD, m["args"])] for m in pattern.finditer(script)]


def invoke_commands(script: str) -> list[list[str]]:
    """Every `invoke TASK ...` in a script."""
    return commands(_INVOKE, script)


def expand(text: str, env: Mapping[str, str]) -> str:
    """$NAME and ${NAME}; a variable the pipeline does not define fails the test."""

    def one(m: re.Match[str]) -> str:
        assert m[1] in env, f"${m[1]} is not defined where the pipeline uses it"
        return env[m[1]]

    return re.sub(r"\$\{?(\w+)\}?", one, text)


def check_flags(words: list[str]) -> None:
    """The task exists in istiobuild.tasks.ns and takes every flag given, each with a value where it needs one."""
    task, args = words[0], words[1:]
    assert task in ns.task_names, f"`invoke {task}` is not an istiobuild task"
    kinds = {"--" + a.names[0]: a.kind for a in ns[task].get_arguments()}
    for i, word in enumerate(args):
        if word.startswith("--"):
            assert word in kinds, f"`invoke {task}` has no flag {word} (it has {sorted(kinds)})"
            if kinds[word] is not bool:
                assert i + 1 < len(args) and not args[i + 1].startswith("--"), f"{task} {word} needs a value"


def check_openssl(words: list[str]) -> None:
    """Only `openssl pkey` reading the signing key's file: never prompting (-passin pass:), either checking it
    (-noout) or writing its public half (-pubout -out FILE)."""
    assert words[:2] == ["pkey", "-in"] and "signing" in words[2].lower(), words
    assert words[3:5] == ["-passin", "pass:"], f"openssl must not prompt for a password: {words}"
    assert words[5:] in (["-noout"], ["-pubout", "-out", words[-1]]), words


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def run_tool(name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `bash ci/setup.sh`"
    return subprocess.run([found, *args], cwd=cwd, capture_output=True, text=True, check=False)


def pipeline_texts() -> dict[str, str]:
    return {
        "github": WORKFLOW.read_text(),
        "gitlab": "\n".join(s for job in load(GITLAB).values() if isinstance(job, dict) for s in job.get("script", [])),
        "jenkins": "\n".join(jenkins_shell(parse_groovy(JENKINS.read_text()))),
    }


def test_every_pipeline_uses_only_existing_tasks_flags_and_openssl_commands() -> None:
    texts = pipeline_texts()
    tasks = {w[0] for text in texts.values() for w in invoke_commands(text)}
    assert tasks == {"matrix", "cache-key", "build", "manifest"}
    for name, text in texts.items():
        found = invoke_commands(text)
        for words in found:
            check_flags(words)
        joins = [w for w in found if w[0] == "manifest"]
        assert len(joins) == 2, f"{name}: one join with the key, one without"
        keyed, unkeyed = sorted(joins, key=lambda w: "--allow-unverified" in w)
        assert {"--key", "--signing-key"} <= set(keyed) and "--allow-unverified" not in keyed, keyed
        assert "--allow-unverified" in unkeyed and "--key" not in unkeyed, unkeyed
        assert keyed[: keyed.index("--key")] == unkeyed[: unkeyed.index("--allow-unverified")]  # the same join
        openssl = commands(_OPENSSL, text)
        assert any("-pubout" in w for w in openssl) and any("-noout" in w for w in openssl), name
        for words in openssl:
            check_openssl(words)


def test_secrets_reach_tools_through_stdin_or_files_only() -> None:
    for path in (WORKFLOW, *CALLERS, GITLAB, JENKINS):
        text = path.read_text()
        for line in re.findall(r"docker login +-[^\n]*", text):  # the commands, not the prose
            assert "--password-stdin" in line and " -p " not in line and "--password " not in line, line
    for job in load(WORKFLOW)["jobs"].values():
        for step in job["steps"]:
            assert "secrets." not in step.get("run", ""), step  # secrets only in `with:` and `env:`
            for line in step.get("run", "").splitlines():  # the key's text: a test and printf, both bash builtins
                if "$SIGNING_KEY" in line:
                    assert re.match(r'\s*(if \[ -n "\$SIGNING_KEY" \]; then|printf .* "\$SIGNING_KEY" > )', line), line


# -- GitHub Actions


def test_actionlint_with_shellcheck_passes_the_workflow_and_its_callers(tmp_path: Path) -> None:
    assert shutil.which("shellcheck"), "actionlint checks every run: script with shellcheck when it is on PATH"
    files = [str(p.relative_to(REPO)) for p in (WORKFLOW, *CALLERS)]
    proc = run_tool("actionlint", "-oneline", *files, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the linter is live: a caller passing an input or secret the workflow lacks, an unquoted variable
    (tmp_path / ".git").mkdir()
    (tmp_path / ".github/workflows").mkdir(parents=True)
    shutil.copy(WORKFLOW, tmp_path / ".github/workflows/istiobuild.yml")
    bad = CALLERS[0].read_text().replace("      runner: hosted", "      runners: hosted")
    (tmp_path / "caller.yml").write_text(bad.replace("      signing_key:", "      signing_keys:"))
    unquoted = WORKFLOW.read_text().replace('echo "key=$key" >> "$GITHUB_OUTPUT"', 'echo "key=$key" >> $GITHUB_OUTPUT')
    (tmp_path / "unquoted.yml").write_text(unquoted)
    proc = run_tool("actionlint", "-oneline", "caller.yml", "unquoted.yml", cwd=tmp_path)
    assert 'input "runners" is not defined' in proc.stdout and "SC2086" in proc.stdout, proc.stdout
    assert 'secret "signing_keys" is not defined' in proc.stdout, proc.stdout


def test_the_reusable_workflow_never_runs_by_itself_and_its_callers_pick_runners() -> None:
    wf = load(WORKFLOW)
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert list(on) == ["workflow_call"]
    assert {"releases", "arches", "hub", "push", "runner"} <= set(on["workflow_call"]["inputs"])
    secrets = on["workflow_call"]["secrets"]
    assert {"registry_username", "registry_password", "signing_key"} <= set(secrets)
    assert secrets["signing_key"]["required"] is False
    jobs = wf["jobs"]
    assert jobs["build"]["needs"] == "matrix" and jobs["build"]["runs-on"] == "${{ matrix.runner }}"
    assert jobs["build"]["strategy"]["matrix"]["include"] == "${{ fromJSON(needs.matrix.outputs.include) }}"
    assert "build" in jobs["manifest"]["needs"]
    runners = {}
    for caller in CALLERS:
        data = load(caller)
        assert list(data.get("on", data.get(True))) == ["workflow_dispatch"]
        (job,) = data["jobs"].values()
        assert job["uses"] == "./.github/workflows/istiobuild.yml"
        assert job["secrets"]["signing_key"] == "${{ secrets.ISTIOBUILD_SIGNING_KEY }}"
        runners[caller.stem] = job["with"]["runner"]
    assert runners == {"hosted": "hosted", "self-hosted": "self-hosted"}


def uses(job: Mapping[str, Any], action: str) -> list[Mapping[str, Any]]:
    return [s for s in job["steps"] if str(s.get("uses", "")).startswith(action + "@")]


def evaluate(text: str, ctx: Mapping[str, Mapping[str, Any]]) -> str:
    """`${{ scope.name }}` only: what the pipeline's env values and paths use."""

    def one(m: re.Match[str]) -> str:
        scope, _, name = m[1].partition(".")
        value = ctx[scope][name]
        return str(value).lower() if isinstance(value, bool) else str(value)

    return re.sub(r"\$\{\{\s*([\w-]+\.[\w-]+)\s*\}\}", one, str(text))


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobRun:
    env: dict[str, str]  # the job's environment at its end ($GITHUB_ENV applied)
    outputs: dict[str, dict[str, str]]  # $GITHUB_OUTPUT by step id
    last: subprocess.CompletedProcess[str]  # the last step run (the failed one, if one failed)
    printed: str  # everything the steps printed


def run_github_job(job: Mapping[str, Any], ctx: Mapping[str, Mapping[str, Any]], runner_temp: Path) -> JobRun:
    """A job's `run:` steps in order, as GitHub's bash runs them (`if:` aside), up to the first that fails; the
    steps that only install are skipped, `installed` stands in for them."""
    files = {name: runner_temp / name.lower() for name in ("GITHUB_ENV", "GITHUB_OUTPUT")}
    bin_dir = installed(runner_temp / "istiobuild-venv/bin")
    env = {k: evaluate(v, ctx) for k, v in job.get("env", {}).items()}
    env |= {"RUNNER_TEMP": str(runner_temp), "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "DOCKER_CONFIG": str(runner_temp / "docker")}  # fmt: skip
    outputs: dict[str, dict[str, str]] = {}
    printed, proc = [], None
    for step in job["steps"]:
        if "run" not in step or install_only(step["run"]):
            continue
        for f in files.values():
            f.write_text("")
        step_env = env | {k: evaluate(v, ctx) for k, v in step.get("env", {}).items()}
        proc = shell(BASH, step["run"], step_env | {k: str(f) for k, f in files.items()}, runner_temp)
        printed.append(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            break
        env |= dict(line.split("=", 1) for line in files["GITHUB_ENV"].read_text().splitlines())
        if "id" in step:
            outputs[step["id"]] = dict(line.split("=", 1) for line in files["GITHUB_OUTPUT"].read_text().splitlines())
    assert proc is not None
    return JobRun(env=env, outputs=outputs, last=proc, printed="".join(printed))


def github_inputs(hub: str) -> dict[str, Any]:
    spec = load(WORKFLOW).get("on", load(WORKFLOW).get(True))["workflow_call"]["inputs"]
    return {name: s.get("default") for name, s in spec.items()} | {"releases": "example", "hub": hub, "push": True}


@pytest.mark.parametrize("with_key", [True, False], ids=["signing_key", "no-signing_key"])
def test_the_workflow_runs_its_jobs_on_the_example(signed: Signed, tmp_path: Path, with_key: bool) -> None:
    """Every step's script for real (the build as a dry run), with and without the signing_key secret."""
    jobs, inputs = load(WORKFLOW)["jobs"], github_inputs(signed.hub)
    secrets = {"remote_cache": "", "signing_key": signed.text() if with_key else ""}
    run = run_github_job(jobs["matrix"], {"inputs": inputs}, tmp_path / "matrix")
    include, joins = json.loads(run.outputs["matrix"]["include"]), json.loads(run.outputs["matrix"]["manifests"])
    assert [(e["arch"], e["runner"]) for e in include] == [("aarch64", "ubuntu-24.04-arm"), ("x86_64", "ubuntu-24.04")]
    assert joins == [{"release": "example", "toolchain": "clang", "tag": "example", "arches": "aarch64,x86_64"}]
    printed = ""
    for entry in include:
        temp = tmp_path / entry["arch"]
        ctx = {"inputs": inputs, "matrix": entry, "secrets": secrets}
        run = run_github_job(jobs["build"], ctx, temp)
        printed += run.printed
        assert run.last.returncode == 0, run.printed
        assert run.outputs["key"]["key"] == entry["cache_key"] and KEY.match(run.outputs["key"]["key"])
        out = Layout(workdir=Path(run.env["ISTIOBUILD_WORKDIR"]), cache=Path(), release="example",
                     arch=Arch(entry["arch"])).out_dir  # fmt: skip
        check_build_signing(run.env, run.printed, out, temp / "istiobuild-signing.pem" if with_key else None)
        check_build_artifacts(jobs["build"], ctx | {"env": run.env}, out)
    for entry in joins:
        run = run_github_job(jobs["manifest"], {"inputs": inputs, "matrix": entry, "secrets": secrets}, tmp_path / "j")
        printed += run.printed
        workdir = Path(run.env["ISTIOBUILD_WORKDIR"])
        pub = tmp_path / "j/istiobuild-signing.pub" if with_key else None
        check_join(run.last, signed, workdir / "manifest-example", pub, warning="::warning::")
        (upload,) = uses(jobs["manifest"], "actions/upload-artifact")
        paths = evaluate(upload["with"]["path"], {"env": run.env, "matrix": entry}).splitlines()
        assert {str(workdir / "manifest-example" / n) for n in ("provenance.json", "provenance.dsse.json")} <= {*paths}
    assert signed.body() not in printed


def check_build_signing(env: Mapping[str, str], printed: str, out: Path, key_file: Path | None) -> None:
    """The key is a file only its owner may read (0600 from GitHub and GitLab, Jenkins' 0400), named by
    ISTIOBUILD_SIGNING_KEY, and the build's plan signs with it."""
    if key_file is None:
        assert "ISTIOBUILD_SIGNING_KEY" not in env
        assert f"{out}/provenance.json (in-toto Statement v1, SLSA Provenance v1); unsigned" in printed, printed
        return
    assert env["ISTIOBUILD_SIGNING_KEY"] == str(key_file)
    assert key_file.stat().st_mode & 0o777 in (0o600, 0o400)
    assert f"sign it with {key_file} into {out}/provenance.dsse.json" in printed, printed


def check_build_artifacts(build: Mapping[str, Any], ctx: Mapping[str, Mapping[str, Any]], out: Path) -> None:
    (restore,) = uses(build, "actions/cache/restore")
    assert restore["with"]["key"] == "${{ steps.key.outputs.key }}"
    for save in (*uses(build, "actions/cache/save"), restore):
        assert save["with"]["path"].splitlines() == [f"${{{{ env.ISTIOBUILD_CACHE_DIR }}}}/{d}" for d in CACHED]
    (upload,) = uses(build, "actions/upload-artifact")
    paths = evaluate(upload["with"]["path"], ctx).splitlines()
    assert f"{out}/" in paths and f"{out.parent}/logs/" in paths  # provenance(.dsse).json are in out
    assert not [p for p in paths if p.startswith("!") and "provenance" in p]


def check_join(proc: subprocess.CompletedProcess[str], signed: Signed, out: Path, pub: Path | None, *,
               warning: str) -> None:  # fmt: skip
    """With the key: every image verified by its public half (written by the pipeline), the indexes' provenance
    signed; without: a warning, every image joined unverified, the provenance unsigned."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    joined = [line for line in proc.stdout.splitlines() if line.startswith(f"{signed.hub}/")]
    assert [line.split(": ", 1)[0] for line in joined] == [f"{signed.hub}/{n}:example" for n in NAMES], proc.stdout
    if pub is None:
        assert any(line.startswith(warning) and "unverified" in line for line in proc.stdout.splitlines()), proc.stdout
        assert all(line.count("NOT verified (--allow-unverified)") == 2 for line in joined), joined
        assert (out / "provenance.json").is_file() and not (out / "provenance.dsse.json").exists()
        return
    assert pub.read_text() == signed.pub.read_text()  # the pipeline's openssl made the key's public half
    key_id = signing.key_id(signed.pub)[:16]
    assert all(line.count(f"signed by key {key_id}") == 2 for line in joined), joined
    statement = signing.verify(json.loads((out / "provenance.dsse.json").read_text()), signed.pub)
    assert {s["name"] for s in statement["subject"]} == {f"{signed.hub}/{n}:example" for n in NAMES}


def test_the_workflow_refuses_images_its_key_did_not_sign(signed: Signed, tmp_path: Path) -> None:
    """The secret holds another key than the one that signed the images' provenance: the join is refused."""
    jobs, inputs = load(WORKFLOW)["jobs"], github_inputs(signed.hub)
    entry = {"release": "example", "toolchain": "clang", "tag": "example", "arches": "aarch64,x86_64"}
    ctx = {"inputs": inputs, "matrix": entry, "secrets": {"signing_key": signed.text(signed.other)}}
    run = run_github_job(jobs["manifest"], ctx, tmp_path)
    line = one_error(run.last)
    assert f"{signed.hub}/pilot:example-arm64" in line and "is not verified: signed by key" in line, line
    assert "wrong key" in line and "--allow-unverified" in run.last.stderr, run.last.stderr


# -- GitLab CI


def resolve_extends(config: Mapping[str, Any]) -> dict[str, Any]:
    """GitLab's `extends`: hashes merged deeply, everything else replaced, parents in order, the job last."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {k: merge(base[k], v) if k in base else v for k, v in over.items()} | {
                k: v for k, v in base.items() if k not in over
            }
        return copy.deepcopy(over)

    def resolved(name: str) -> dict[str, Any]:
        job = dict(config[name])
        parents = job.pop("extends", [])
        merged: dict[str, Any] = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            merged = merge(merged, resolved(parent))
        out: dict[str, Any] = merge(merged, job)
        return out

    keywords = {"stages", "variables", "workflow", "default", "include"}
    return {k: v if k in keywords else resolved(k) for k, v in config.items() if not k.startswith(".")}


def test_gitlab_pipeline_matches_gitlab_schema_also_with_extends_resolved(tmp_path: Path) -> None:
    resolved = tmp_path / "resolved.yml"
    resolved.write_text(yaml.safe_dump(resolve_extends(load(GITLAB))))
    for path in (GITLAB, resolved):
        proc = run_tool("check-jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(path))
        assert proc.returncode == 0, proc.stdout + proc.stderr


def run_gitlab_job(job: Mapping[str, Any], env: Mapping[str, str], project: Path) -> subprocess.CompletedProcess[str]:
    """before_script and script, then after_script, as gitlab-runner's bash runs them; the before_script lines
    that only install are skipped (`installed` stands in for them)."""
    bin_dir = installed(project / ".istiobuild/venv/bin")
    env = dict(env) | {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    lines = [line for line in job["before_script"] if not install_only(line)] + job["script"]
    proc = shell(BASH, "\n".join(lines), env, project)
    if "after_script" in job:
        assert shell(BASH, "\n".join(job["after_script"]), env, project).returncode == 0
    return proc


def file_variable(project: Path, name: str, value: str) -> Path:
    """A File-type CI/CD variable as gitlab-runner's bash writes it (`printf '%s' VALUE > <builds dir>.tmp/NAME`),
    under the docker executor's umask 0000."""
    path = project.parent / f"{project.name}.tmp" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value)
    path.chmod(0o666)
    return path


@pytest.mark.parametrize("with_key", [True, False], ids=["file-variable", "no-variable"])
def test_gitlab_pipeline_runs_its_jobs_on_the_example(signed: Signed, tmp_path: Path, with_key: bool) -> None:
    config = load(GITLAB)
    jobs = resolve_extends(config)
    project = tmp_path / "project"
    predefined = {"CI_PROJECT_DIR": str(project), "CI_REGISTRY_IMAGE": signed.hub, "CI_REGISTRY": signed.registry,
                  "CI_REGISTRY_USER": "ci", "CI_REGISTRY_PASSWORD": "secret", "CI_PIPELINE_SOURCE": "web"}  # fmt: skip
    pipeline = {k: expand(v, predefined) for k, v in config["variables"].items()} | {"RELEASE": "example"}
    if with_key:  # GitLab drops the PEM's last newline (printf '%s'): istiobuild and openssl read it all the same
        key = file_variable(project, "ISTIOBUILD_SIGNING_KEY", signed.text().rstrip("\n"))
        pipeline["ISTIOBUILD_SIGNING_KEY"] = str(key)
    assert jobs["manifest"]["needs"] == [{"job": f"build:{a.value}", "artifacts": False} for a in Arch]
    printed = ""
    for arch in Arch:
        key_job, build_job = jobs[f"cache-key:{arch.value}"], jobs[f"build:{arch.value}"]
        assert key_job["tags"] == build_job["tags"] == [f"${arch.value.upper()}_RUNNER_TAG"]
        assert build_job["needs"] == [f"cache-key:{arch.value}"]
        proc = run_gitlab_job(key_job, predefined | pipeline | key_job["variables"], project)
        assert proc.returncode == 0 and key_job["artifacts"]["reports"]["dotenv"] == "cache-key.env", proc.stderr
        dotenv = dict(line.split("=", 1) for line in (project / "cache-key.env").read_text().splitlines())
        assert KEY.match(dotenv["BAZEL_CACHE_KEY"]) and build_job["cache"]["key"] == "$BAZEL_CACHE_KEY"
        env = predefined | pipeline | build_job["variables"] | dotenv
        cache_dir = Path(env["ISTIOBUILD_CACHE_DIR"]).relative_to(project)
        assert build_job["cache"]["paths"] == [f"{cache_dir}/{d}/" for d in CACHED]
        proc = run_gitlab_job(build_job, env, project)
        printed += proc.stdout + proc.stderr
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = Layout(workdir=Path(env["ISTIOBUILD_WORKDIR"]), cache=Path(), release="example", arch=arch).out_dir
        assert f"{out.relative_to(project)}/" in [expand(p, env) for p in build_job["artifacts"]["paths"]]
        check_build_signing(env, proc.stderr, out, Path(env["ISTIOBUILD_SIGNING_KEY"]) if with_key else None)
    env = predefined | pipeline | jobs["manifest"].get("variables", {})
    proc = run_gitlab_job(jobs["manifest"], env, project)
    printed += proc.stdout + proc.stderr
    out = Path(env["ISTIOBUILD_WORKDIR"]) / "manifest-example"
    check_join(proc, signed, out, project / ".istiobuild/signing.pub" if with_key else None, warning="warning:")
    paths = [expand(p, env) for p in jobs["manifest"]["artifacts"]["paths"]]
    assert {f"{out.relative_to(project)}/{n}" for n in ("provenance.json", "provenance.dsse.json")} <= set(paths)
    assert signed.body() not in printed


# -- Jenkins: a small parser of the Jenkinsfile's blocks and statements; Groovy's own parser for the syntax

_GROOVY = re.compile(
    r"""(?P<comment>//[^\n]*|/\*.*?\*/)
      | (?P<string>'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
      | (?P<newline>\n) | (?P<word>[A-Za-z_][\w.]*) | (?P<punct>[{}()\[\],:=]) | (?P<space>[ \t\r]+) | (?P<other>.)""",
    re.S | re.X,
)


class Node:
    """A statement (its head's tokens) and the block after it, if any."""

    def __init__(self, head: list[tuple[str, str]], children: list[Node]) -> None:
        self.head, self.children = head, children
        self.name = head[0][1] if head else ""

    def strings(self) -> list[str]:
        return [unquote(text) for kind, text in self.head if kind == "string"]

    def kwargs(self) -> dict[str, str]:
        h = self.head
        return {h[i][1]: unquote(h[i + 2][1]) for i in range(len(h) - 2) if h[i + 1][1] == ":"}

    def find(self, name: str) -> Iterator[Node]:
        for child in self.children:
            if child.name == name:
                yield child
            yield from child.find(name)

    def child(self, name: str) -> Node:
        (found,) = [c for c in self.children if c.name == name]
        return found


def parse_groovy(text: str) -> Node:
    tokens = [(m.lastgroup or "", m.group()) for m in _GROOVY.finditer(text) if m.lastgroup not in ("comment", "space")]
    children, end = _block(tokens, 0)
    assert end == len(tokens), f"unbalanced braces at token {end}"
    return Node([], children)


def _block(tokens: list[tuple[str, str]], i: int) -> tuple[list[Node], int]:
    nodes: list[Node] = []
    head: list[tuple[str, str]] = []
    depth = 0
    while i < len(tokens) and not (depth == 0 and tokens[i][1] == "}"):
        kind, text = tokens[i]
        if depth == 0 and text == "{":
            children, i = _block(tokens, i + 1)
            assert i < len(tokens), "a block is not closed"
            nodes.append(Node(head, children))
            head = []
        elif depth == 0 and kind == "newline":
            nodes += [Node(head, [])] if head else []
            head = []
        elif kind != "newline":
            depth += (kind == "punct" and text in "([") - (kind == "punct" and text in ")]")
            head.append((kind, text))
        i += 1
    return nodes + ([Node(head, [])] if head else []), i


def jenkins_shell(root: Node) -> list[str]:
    return [s for node in root.find("sh") for s in node.strings()]


def environment(node: Node, values: Mapping[str, str]) -> dict[str, str]:
    """An `environment { NAME = "..." }` block, with ${params.X} and ${env.X} resolved from `values`."""
    out = {}
    for stmt in node.child("environment").children:
        assert [k for k, _ in stmt.head] == ["word", "punct", "string"], stmt.head
        out[stmt.name] = resolve(unquote(stmt.head[2][1]), values)
    return out


def resolve(text: str, values: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(?:params|env)\.(\w+)\}", lambda m: values[m[1]], text)


def test_groovy_parses_the_jenkinsfile_and_rejects_a_broken_one(tmp_path: Path) -> None:
    broken = tmp_path / "Jenkinsfile"
    broken.write_text(JENKINS.read_text().rstrip().removesuffix("}"))
    script = "new GroovyShell().parse(new File(args[0]))"
    good = run_tool("groovy", "-e", script, str(JENKINS))
    assert good.returncode == 0, good.stderr
    bad = run_tool("groovy", "-e", script, str(broken))
    assert bad.returncode != 0 and "startup failed" in bad.stderr, bad.stderr
    with pytest.raises(AssertionError, match="not closed"):
        parse_groovy(broken.read_text())


def signing_binding(root: Node) -> dict[str, str]:
    """`withSigningKey`: the file credential's binding when SIGN is checked, nothing otherwise."""
    (helper,) = [n for n in root.children if n.head[:2] == [("word", "def"), ("word", "withSigningKey")]]
    when, otherwise = helper.children
    assert [t for _, t in when.head] == ["if", "(", "params.SIGN", ")"] and otherwise.name == "else"
    (binding,) = when.children
    assert binding.name == "withCredentials" and [t for _, t in binding.head][3] == "file", binding.head
    body = [("word", "body"), ("punct", "("), ("punct", ")")]
    assert [c.head for c in binding.children] == [c.head for c in otherwise.children] == [body]
    return binding.kwargs()


Bindings = tuple[Mapping[str, str], ...]


def jenkins_steps(node: Node, bound: Bindings = ()) -> Iterator[tuple[Node, Bindings]]:
    """The `sh` steps of a block in order, each with the credential bindings around it (`withCredentials`'s
    arguments; `withSigningKey` as {"signing": ...})."""
    for child in node.children:
        if child.name == "sh":
            yield child, bound
        elif child.name == "withCredentials":
            yield from jenkins_steps(child, (*bound, child.kwargs()))
        elif child.name == "withSigningKey":
            yield from jenkins_steps(child, (*bound, {"signing": "yes"}))
        else:
            yield from jenkins_steps(child, bound)


def run_jenkins_stage(
    stage: Node, env: Mapping[str, str], key: Mapping[str, str], workspace: Path
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every `sh` of a stage (post included) with `sh -xe` in the workspace, credentials bound as Jenkins binds
    them (`key`: the signing key's binding, empty when SIGN is off); the install step only installs (`installed`
    stands in for it). Each script's process; the first failure fails the test."""
    installed(workspace / ".istiobuild/venv/bin")
    done = {}
    for node, bound in jenkins_steps(stage):
        script = node.strings()[0]
        if "REGISTRY_PASSWORD" in script or "SIGNING_KEY" in script:
            assert node.head[1][1].startswith("'"), "single quotes: Groovy must not interpolate a secret"
        if install_only(script):
            continue
        creds = dict(env)
        for b in bound:
            if b.get("credentialsId") == "istiobuild-registry":
                creds |= {b["usernameVariable"]: "ci", b["passwordVariable"]: "secret"}
            if "signing" in b:
                creds |= key
        done[script] = shell(JENKINS_SH, script, creds, workspace)
        assert done[script].returncode == 0, done[script].stdout + done[script].stderr
    return done


def secret_file(workspace: Path, text: str) -> Path:
    """A Secret file credential as Jenkins binds it: mode 0400 in a 0700 directory next to the workspace."""
    directory = workspace.parent / f"{workspace.name}@tmp/secretFiles/{uuid.uuid4()}"
    directory.mkdir(parents=True, mode=0o700)
    path = directory / "istiobuild-signing.pem"
    path.write_text(text)
    path.chmod(0o400)
    return path


def archived(node: Node, values: Mapping[str, str]) -> list[str]:
    (archive,) = node.find("archiveArtifacts")
    return [resolve(p.strip(), values) for p in archive.kwargs()["artifacts"].split(",")]


@pytest.mark.parametrize("sign", [True, False], ids=["SIGN", "no-SIGN"])
def test_jenkinsfile_builds_each_arch_on_its_agents_in_parallel_then_joins(
    signed: Signed, tmp_path: Path, sign: bool
) -> None:
    root = parse_groovy(JENKINS.read_text())
    (pipeline,) = root.find("pipeline")
    assert pipeline.child("agent").head[1][1] == "none"
    params = {n.kwargs()["name"]: n.kwargs()["defaultValue"] for n in pipeline.child("parameters").children}
    assert params["SIGN"] == "true"  # signed unless unchecked
    workspace = tmp_path / "workspace"
    given = {"RELEASE": "example", "HUB": signed.hub, "REGISTRY": signed.registry, "CACHE_DIR": str(tmp_path / "cache")}
    values = params | given | {"WORKSPACE": str(workspace)}
    binding = signing_binding(root)
    assert binding == {"credentialsId": "istiobuild-signing-key", "variable": "ISTIOBUILD_SIGNING_KEY"}
    key = {binding["variable"]: str(secret_file(workspace, signed.text()))} if sign else {}
    top = environment(pipeline, values)
    stages = pipeline.child("stages").children
    assert [s.strings()[0] for s in stages] == ["build", "manifest"]
    arch_stages = stages[0].child("parallel").children
    assert [s.strings()[0] for s in arch_stages] == ["aarch64", "x86_64"]
    labels = {"aarch64": "linux && arm64", "x86_64": "linux && amd64"}
    printed = ""
    for stage in arch_stages:
        arch = stage.strings()[0]
        assert stage.child("agent").child("label").strings() == [labels[arch]]
        env = values | top | environment(stage, values)
        assert env["ARCH"] == arch
        procs = run_jenkins_stage(stage, env, key, workspace)
        stage_printed = "".join(p.stdout + p.stderr for p in procs.values())
        printed += stage_printed
        assert KEY.match(json.loads((workspace / f".istiobuild/cache-key-{arch}.json").read_text())["key"])
        out = Layout(workdir=Path(env["ISTIOBUILD_WORKDIR"]), cache=Path(), release="example", arch=Arch(arch)).out_dir
        check_build_signing(env | key, stage_printed, out, Path(key[binding["variable"]]) if sign else None)
        assert f"{out.relative_to(workspace)}/**" in archived(stage, values)
    manifest = stages[1]
    assert manifest.child("agent").child("label").strings() == [labels["x86_64"]]
    env = values | top | environment(manifest, values)
    out = Path(env["ISTIOBUILD_WORKDIR"]) / "manifest-example"
    procs = run_jenkins_stage(manifest, env, key, workspace)
    printed += "".join(p.stdout + p.stderr for p in procs.values())
    (join,) = [proc for script, proc in procs.items() if "invoke manifest" in script]
    check_join(join, signed, out, workspace / ".istiobuild/signing.pub" if sign else None, warning="warning:")
    patterns = archived(manifest, values)
    for name in ("provenance.json", "provenance.dsse.json"):
        assert any(fnmatch.fnmatch(str((out / name).relative_to(workspace)), p) for p in patterns), patterns
    assert signed.body() not in printed

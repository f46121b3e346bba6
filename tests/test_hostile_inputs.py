"""Hostile and clumsy inputs, end to end: every row of docs/hostile-inputs.md runs the real CLI once.

Each bad input is one `error:` line, the documented exit code and no traceback, before any work:
nothing under the test's directory is created or changed (every file and directory hashed with its
mtime), an injected `touch CANARY` never runs, no image or container of the row's workdir appears,
the test registry's `hostile-inputs/` repositories stay as they were, and a credential in a value is
never echoed. A few rows are valid but unusual values that must pass (`plan` exits 0).

ROWS is the document's table: `test_doc_ids_are_the_table_ids` and
`test_doc_rows_are_rendered_from_the_table` fail when the two drift apart (every cell of the
document is rendered from its row, so edit both).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import subprocess
import urllib.request
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from helpers import REPO, invoke, one_error

DOC = REPO / "docs" / "hostile-inputs.md"
SECRET = "S3CRET"
REGISTRY = "127.0.0.1:5000"
HUB = f"{REGISTRY}/hostile-inputs"  # a registry namespace no other test uses
TOKENS = re.compile(r"\b(TMP|WORK|CANARY)\b")
KEEP = ("TMP", "WORK", "CANARY", "docker", "registry", SECRET)  # the "left untouched" vocabulary, in doc order
SETUPS = {
    "": "",
    "file": "echo x > WORK;",
    "workdir": "mkdir -p WORK/logs; echo old > WORK/logs/old.log;",
}


@dataclasses.dataclass(frozen=True)
class Row:
    """One row: what the user does, the message (fragments, in order), the exit code, what stays untouched."""

    id: str
    args: tuple[str, ...]
    message: tuple[str, ...]  # fragments of the error line, in order (stdout fragments for exit 0)
    keep: frozenset[str]  # besides TMP, which every row checks
    hint: str = ""  # a fragment of stderr after the error line
    exit: int = 2
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, bytes], ...] = ()  # written into TMP (the current directory) first
    setup: str = ""  # a key of SETUPS: WORK made before the run
    refs: tuple[str, ...] = ()  # docker images that must not exist before or after


def row(
    id_: str,
    args: Iterable[str],
    message: str | tuple[str, ...],
    keep: str = "",
    *,
    hint: str = "",
    exit_: int = 2,
    env: Mapping[str, str] | None = None,
    files: Mapping[str, str | bytes] | None = None,
    setup: str = "",
    refs: tuple[str, ...] = (),
) -> Row:
    return Row(
        id=id_,
        args=tuple(args),
        message=(message,) if isinstance(message, str) else message,
        keep=frozenset({"TMP", *keep.split()} | ({"WORK"} if setup else set())),
        hint=hint,
        exit=exit_,
        env=tuple((env or {}).items()),
        files=tuple((k, v.encode() if isinstance(v, str) else v) for k, v in (files or {}).items()),
        setup=setup,
        refs=refs,
    )


PLAN = ("plan", "--release", "example", "--arch", "x86_64", "--workdir", "WORK")
BUILD = ("build", "--release", "example", "--arch", "x86_64", "--toolchain", "gcc", "--workdir", "WORK")
CHECKOUT = ("checkout", "--release", "example", "--workdir", "WORK")
TOML = "istiobuild.toml"
PYPROJECT = "pyproject.toml"
REF = "is not a docker image reference"
PREFIX = "is not a docker repository prefix"
NOT_REPO = "is not a repository URL or path"
HELPER = "it uses git's remote-helper form 'ext::'"
SHELL = "upstream Makefiles pass it through a shell"

ROWS: list[Row] = [
    # -- injection: every value that reaches make, a shell, git or docker, from every layer ----------------
    row("inj-cli-hub", [*BUILD, "--hub", "x;touch CANARY"],
        f"--hub 'x;touch CANARY' {PREFIX}: it contains ';'", "CANARY docker"),
    row("inj-cli-tag", [*BUILD, "--tag", "1.0;touch CANARY"],
        "--tag '1.0;touch CANARY' is not a docker tag: it contains ';'", "CANARY docker"),
    row("inj-cli-tag-subst", [*BUILD, "--tag", "$(touch CANARY)"],
        "--tag '$(touch CANARY)' is not a docker tag: it contains '$'", "CANARY docker"),
    row("inj-env-tag-push", [*BUILD, "--push", "--hub", HUB], "ISTIOBUILD_TAG '`touch CANARY`' is not a docker tag: "
        "it contains '`'", "CANARY docker registry", env={"ISTIOBUILD_TAG": "`touch CANARY`"}),
    row("inj-cli-remote-cache", [*BUILD, "--remote-cache", "http://h/;touch CANARY"],
        "--remote-cache 'http://h/;touch CANARY' is not a usable URL: it contains ';' in its path", "CANARY"),
    row("inj-env-mirror", CHECKOUT, f"ISTIOBUILD_MIRROR '--upload-pack=touch CANARY' {NOT_REPO}: it starts with '-'",
        "CANARY", env={"ISTIOBUILD_MIRROR": "--upload-pack=touch CANARY"}),
    row("inj-cli-mirror-ext", [*CHECKOUT, "--mirror", "ext::sh -c touch% CANARY"],
        f"--mirror 'ext::sh -c touch% CANARY' {NOT_REPO}: {HELPER}", "CANARY"),
    row("inj-toml-repos-envoy", BUILD, f"repos.envoy in TMP/{TOML} 'ext::sh -c touch% CANARY' {NOT_REPO}: {HELPER}",
        "CANARY", files={TOML: '[repos]\nenvoy = "ext::sh -c touch% CANARY"\n'}),
    row("inj-env-repos-istio", BUILD,
        f"ISTIOBUILD_REPOS_ISTIO '-oProxyCommand=touch CANARY' {NOT_REPO}: it starts with '-'",
        "CANARY", env={"ISTIOBUILD_REPOS_ISTIO": "-oProxyCommand=touch CANARY"}),
    row("inj-env-jvm-heap", BUILD, "ISTIOBUILD_JVM_HEAP '3g; touch CANARY' is not a heap size", "CANARY",
        env={"ISTIOBUILD_JVM_HEAP": "3g; touch CANARY"}, setup="workdir"),
    row("inj-toml-gn", BUILD, f"gn in TMP/{TOML} 'gn;touch CANARY' contains ';'", "CANARY",
        files={TOML: 'gn = "gn;touch CANARY"\n'}),
    row("inj-env-ninja", BUILD, "ISTIOBUILD_NINJA '$(touch CANARY)' contains '$'", "CANARY",
        env={"ISTIOBUILD_NINJA": "$(touch CANARY)"}),
    row("inj-env-bazel-version", BUILD, "ISTIOBUILD_BAZEL_VERSION '1;touch CANARY' is not a bazel version", "CANARY",
        env={"ISTIOBUILD_BAZEL_VERSION": "1;touch CANARY"}),
    row("inj-env-target-kernel", BUILD, "ISTIOBUILD_TARGET_KERNEL 'page_size=64k;touch CANARY' has page_size "
        "'64k;touch CANARY', not one of 4k, 16k, 64k", "CANARY",
        env={"ISTIOBUILD_TARGET_KERNEL": "page_size=64k;touch CANARY"}),
    row("inj-toml-base-images", BUILD,
        f"replacement for 'debian:bookworm-slim' under base_images.x86_64 in TMP/{TOML} 'x;touch CANARY' {REF}: "
        "it contains ';'", "CANARY docker",
        files={TOML: '[base_images.x86_64]\n"debian:bookworm-slim" = "x;touch CANARY"\n'}),
    row("inj-pyproject-hub", BUILD, f"hub in TMP/{PYPROJECT} [tool.istiobuild] 'x;touch CANARY' {PREFIX}: "
        "it contains ';'", "CANARY docker", files={PYPROJECT: '[tool.istiobuild]\nhub = "x;touch CANARY"\n'}),
    row("inj-env-cache-dir", BUILD, ("ISTIOBUILD_CACHE_DIR '/tmp/c;touch CANARY' contains ';'", SHELL), "CANARY",
        env={"ISTIOBUILD_CACHE_DIR": "/tmp/c;touch CANARY"}),
    row("inj-cli-builder", [*BUILD, "--in-container", "--builder", "--privileged"],
        f"--builder '--privileged' {REF}", "docker"),
    row("inj-cli-downloads", [*BUILD, "--downloads", "-x"], "--downloads '-x' starts with '-'"),
    row("inj-cli-workdir-space", ["build", "--release", "example", "--workdir", "my work"],
        ("--workdir '", f"contains a space: {SHELL}")),
    row("inj-cli-workdir-semicolon", ["build", "--release", "example", "--workdir", "w;touch CANARY"],
        ("--workdir '", f"contains ';': {SHELL}"), "CANARY"),
    row("inj-manifest-names", ["manifest", "--hub", HUB, "--names", "a;touch CANARY"],
        (f"--names '{HUB}/a;touch", f"{REF}: it contains ';'"), "CANARY registry"),
    row("inj-manifest-tag", ["manifest", "--hub", HUB, "--tag", "1.0;touch CANARY"],
        "--tag '1.0;touch CANARY' is not a docker tag: it contains ';'", "CANARY registry"),
    row("inj-host-builder-name", ["host-builder", "--name", "x;touch CANARY", "--workdir", "WORK"],
        f"'x;touch CANARY' {REF}: it contains ';'", "CANARY docker"),
    row("inj-doctor-toolchain", ["doctor", "--release", "example", "--toolchain", "gcc;touch CANARY",
        "--workdir", "WORK"], "unknown toolchain 'gcc;touch CANARY'", "CANARY"),
    # -- clumsy: typos, wrong case, wrong kind, out of range --------------------------------------------
    row("hub-upper-case", [*PLAN, "--hub", "Istio"], f"--hub 'Istio' {PREFIX}: it has upper case letters",
        setup="workdir"),
    row("hub-trailing-slash", [*PLAN, "--hub", "istio/"], f"--hub 'istio/' {PREFIX}: it ends with '/'"),
    row("tag-space", [*PLAN, "--tag", "a b"], "--tag 'a b' is not a docker tag: it contains a space"),
    row("tag-empty", [*PLAN, "--tag", ""], "--tag is empty; leave the flag out or give a tag"),
    row("jobs-huge", [*PLAN, "--jobs", "100000"], "--jobs 100000 is beyond any machine"),
    row("jobs-negative", [*PLAN, "--jobs", "-1"], ("--jobs", "-1", "is negative")),
    row("jobs-fraction", [*PLAN, "--jobs", "1.5"], ("--jobs", "1.5", "is not a whole number")),
    row("page-size-5k", [*PLAN, "--page-size", "5k"], "--page-size '5k' is not a page size; use one of auto, 4k, 64k"),
    row("patch-page-size-16k", ["patch", "--release", "example", "--arch", "x86_64", "--workdir", "WORK",
        "--page-size", "16k"], "--page-size '16k' is not a page size", setup="workdir"),
    row("target-kernel-typo", [*PLAN, "--target-kernel", "pagesize=64k"],
        "--target-kernel 'pagesize=64k' has an unknown key 'pagesize' (known: page_size, va_bits)"),
    row("target-kernel-16k", [*PLAN, "--target-kernel", "page_size=16k"],
        "--target-kernel 'page_size=16k' names a 16K-page kernel: no patch series supports 16k pages yet"),
    row("target-kernel-contradicts-page-size", ["plan", "--release", "example", "--arch", "aarch64",
        "--workdir", "WORK", "--target-kernel", "page_size=64k", "--page-size", "4k"],
        "--page-size '4k' contradicts --target-kernel 'page_size=64k' (a 64K-page kernel)"),
    row("target-kernel-not-x86_64", [*PLAN, "--target-kernel", "page_size=64k"],
        "target kernel page_size=64k is not an x86_64 kernel", hint="fix --target-kernel"),
    row("arch-sparc", ["plan", "--release", "example", "--arch", "sparc", "--workdir", "WORK"],
        "unknown arch 'sparc'", hint="use one of: aarch64, x86_64"),
    row("release-unknown", ["plan", "--release", "9.9.9", "--workdir", "WORK"], "unknown release '9.9.9'",
        hint="known releases: 1.4.0"),
    row("release-traversal", ["plan", "--release", "../example", "--workdir", "WORK"],
        "release '../example' is not a release name"),
    row("toolchain-unknown", [*PLAN, "--toolchain", "nope"], "unknown toolchain 'nope'", hint="known toolchains:"),
    row("toolchain-traversal", [*PLAN, "--toolchain", "../../etc/passwd"], "unknown toolchain '../../etc/passwd'"),
    row("env-workdir-empty", ["plan", "--release", "example"],
        "ISTIOBUILD_WORKDIR is empty; unset it or give a directory", env={"ISTIOBUILD_WORKDIR": ""}),
    row("env-workdir-newline", ["plan", "--release", "example"],
        ("ISTIOBUILD_WORKDIR '", "contains a newline; choose a path without control characters"),
        env={"ISTIOBUILD_WORKDIR": "w\nx"}),
    row("from-nosuch", [*BUILD, "--from", "nosuch"], "--from 'nosuch' is not a stage", hint="stages: checkout, patch",
        setup="workdir"),
    row("from-publish-without-push", [*BUILD, "--from", "publish"], "stage publish is not part of this plan",
        hint="publish runs only with --push", setup="workdir"),
    row("to-nosuch", [*BUILD, "--to", "nosuch"], "--to 'nosuch' is not a stage", setup="workdir"),
    row("to-publish-without-push", [*BUILD, "--to", "publish"], "--to publish: that stage is not part of this plan"),
    row("in-container-without-builder", [*BUILD, "--in-container"], "--in-container needs a builder image", "docker"),
    row("workdir-is-a-file", PLAN, ("--workdir '", "is a file; remove it, or choose a directory"), setup="file"),
    row("workdir-under-a-file", ["plan", "--release", "example", "--workdir", "WORK/x"],
        ("--workdir '", "cannot be created:", "is not a directory"), setup="file"),
    row("config-unknown-key", PLAN, f"unknown config key 'mirorr' in TMP/{TOML}", hint="did you mean 'mirror'?",
        files={TOML: 'mirorr = "x"\n'}),
    row("env-unknown-variable", PLAN, "unknown environment variable ISTIOBUILD_WORKDRI",
        hint="did you mean 'ISTIOBUILD_WORKDIR'?", env={"ISTIOBUILD_WORKDRI": "WORK"}),
    row("env-unknown-repository", PLAN, "unknown repository 'foo' under 'repos'", env={"ISTIOBUILD_REPOS_FOO": "x"}),
    row("env-push-maybe", PLAN, "ISTIOBUILD_PUSH 'maybe' is not true or false", env={"ISTIOBUILD_PUSH": "maybe"}),
    row("toml-not-utf8", PLAN, f"TMP/{TOML} is not UTF-8 text", files={TOML: b'mirror = "caf\xe9"\n'}),
    row("toml-invalid", PLAN, f"TMP/{TOML} is not valid TOML", files={TOML: "mirror = \n"}),
    row("pyproject-istiobuild-not-a-table", PLAN, f"[tool] istiobuild in TMP/{PYPROJECT} is a number, not a table",
        files={PYPROJECT: "[tool]\nistiobuild = 5\n"}),
    row("toml-jobs-boolean", PLAN, (f"jobs in TMP/{TOML}", "is not a whole number"), files={TOML: "jobs = true\n"}),
    row("verify-bad-reference", ["verify", "--image", "Bad;Ref"], f"--image 'Bad;Ref' {REF}"),
    row("verify-missing-image", ["verify", "--image", "istio/none:x", "--labels"], "image istio/none:x does not exist",
        "docker", refs=("istio/none:x",)),
    row("verify-without-image", ["verify"], "no image to verify", hint="pass --image NAME"),
    row("verify-arch-sparc", ["verify", "--image", "istio/none:x", "--arch", "sparc"], "unknown arch 'sparc'",
        "docker", refs=("istio/none:x",)),
    row("manifest-without-hub", ["manifest"], "manifest needs --hub"),
    row("manifest-bad-hub", ["manifest", "--hub", "A;b"], f"--hub 'A;b' {PREFIX}"),
    row("manifest-arch-sparc", ["manifest", "--hub", HUB, "--arches", "aarch64,sparc"], "unknown arch 'sparc'",
        "registry"),
    row("manifest-one-arch", ["manifest", "--hub", HUB, "--arches", ","], "--arches ',' names fewer than two arches",
        "registry"),
    row("manifest-tag-empty", ["manifest", "--hub", HUB, "--tag", ""], "--tag is empty; leave the flag out",
        "registry"),
    row("manifest-names-empty", ["manifest", "--hub", HUB, "--names", ""], "--names is empty", "registry"),
    row("example-dest-empty", ["example", "--dest", ""], "--dest is empty; leave the flag out"),
    row("push-default-hub", [*BUILD, "--push"], "push needs a hub", "registry", hint="pass --hub"),
    row("downloads-missing", [*PLAN, "--downloads", "/nonexistent/istiobuild-downloads"],
        ("--downloads", "is not a directory")),
    row("check-patches-without-mirrors", ["check-patches"], "no upstream mirrors to check against"),
    row("check-patches-unknown-release", ["check-patches", "--mirrors", "TMP", "--release", "9.9.9"],
        "unknown release '9.9.9'"),
    # -- credentials in a bad value are never echoed -----------------------------------------------------
    row("secret-remote-cache", [*PLAN, "--remote-cache", f"https://user:{SECRET}@host/;x"],
        "--remote-cache 'https://***@host/;x' is not a usable URL: it contains ';' in its path", SECRET),
    row("secret-remote-cache-newline", [*PLAN, "--remote-cache", f"https://user:{SECRET}\n@host/"],
        "--remote-cache 'https://***@host/' is not a usable URL: it has credentials with a character that must be "
        "percent-encoded", SECRET),
    row("secret-header-newline", BUILD,
        "ISTIOBUILD_REMOTE_HEADER (value hidden) contains a newline or a control character", SECRET,
        env={"ISTIOBUILD_REMOTE_HEADER": f"x-api-key={SECRET}\n--config=evil"}),
    row("secret-header-toml", BUILD, f"remote_header in TMP/{TOML} (value hidden) is not NAME=VALUE", SECRET,
        files={TOML: f'remote_header = "x-api-key: {SECRET}"\n'}),
    row("secret-mirror", [*CHECKOUT, "--mirror", f"https://user:{SECRET}@host/a b"],
        f"--mirror 'https://***@host/a b' {NOT_REPO}: it contains a space", SECRET),
    row("secret-hub", [*PLAN, "--hub", f"user:{SECRET}@registry/istio"], f"--hub '***@registry/istio' {PREFIX}",
        SECRET),
    row("secret-unknown-variable", PLAN, "unknown environment variable ISTIOBUILD_REMOTE_HEADR", SECRET,
        env={"ISTIOBUILD_REMOTE_HEADR": f"x-api-key={SECRET}"}),
    # -- reproducible builds: keys, records, provenance ---------------------------------------------------
    # (relative: a value over 80 characters is cut in a message, and TMP's length is not the test's to choose)
    row("key-group-readable", [*BUILD, "--signing-key", "release.pem"],
        "--signing-key 'release.pem' is readable by others than its owner (a private key)",
        hint="chmod 600 release.pem", files={"release.pem": "-----BEGIN PRIVATE KEY-----\n"}),
    row("key-missing", [*BUILD, "--signing-key", "nope.pem"], "--signing-key 'nope.pem' is not a file"),
    row("rebuild-not-json", ["rebuild", "--record", "TMP/record.json", "--workdir", "WORK"],
        "TMP/record.json is not a readable JSON file", files={"record.json": "{not json\n"}),
    row("rebuild-not-a-record", ["rebuild", "--record", "TMP/record.json", "--workdir", "WORK"],
        "TMP/record.json is not a build record", files={"record.json": '{"release": "example"}\n'}),
    row("verify-key-alone", ["verify", "--image", "istio/pilot:x", "--key", "TMP/release.pub"],
        "--key checks the signature of a provenance", hint="pass --provenance FILE with --key"),
    row("verify-provenance-unsigned-key", ["verify", "--image", "istio/pilot:x", "--provenance", "TMP/p.json",
        "--key", "TMP/p.json"], "TMP/p.json is an unsigned statement: --key checks a signature",
        files={"p.json": '{"_type": "https://in-toto.io/Statement/v1"}\n'}),
    # -- valid but unusual: accepted --------------------------------------------------------------------
    row("ok-page-size-4K", [*PLAN, "--page-size", "4K"], "page size 4k", exit_=0),
    row("ok-page-size-AUTO", PLAN, "page size", exit_=0, env={"ISTIOBUILD_PAGE_SIZE": "AUTO"}),
    row("ok-target-kernel-64K", ["plan", "--release", "example", "--arch", "aarch64", "--workdir", "WORK",
        "--target-kernel", "PAGE_SIZE=64K,va_bits=48"], ("page size 64k", "target kernel page_size=64k,va_bits=48"),
        exit_=0),
    row("ok-unusual-hub-and-tag", [*PLAN, "--hub", "127.0.0.1:5000/a/b", "--tag", "1.5.0_rc.1-x"],
        ("tag 1.5.0_rc.1-x", "127.0.0.1:5000/a/b/pilot:1.5.0_rc.1-x-amd64"), exit_=0),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Rendering a row as the document shows it


def _ansi_c(data: bytes) -> str:
    """bash's $'...' for `data`: exact bytes, control characters and non-ASCII as escapes."""
    out = []
    for byte in data:
        char = chr(byte)
        if char in "\\'":
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return "$'" + "".join(out) + "'"


def shell_word(word: str | bytes) -> str:
    """`word` as one shell word, quoted only when it must be."""
    data = word.encode() if isinstance(word, str) else word
    text = data.decode("latin-1")
    if re.fullmatch(r"[A-Za-z0-9_./:=,@%+-]+", text):
        return text
    if re.search(r"[^\x20-\x7e]|'", text):
        return _ansi_c(data)
    return f"'{text}'"


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render_input(r: Row) -> str:
    parts = [SETUPS[r.setup]] if r.setup else []
    for name, content in r.files:
        assert content.endswith(b"\n")
        parts.append(f"echo {shell_word(content[:-1])} > {name};")
    parts += [f"{name}={shell_word(value)}" for name, value in r.env]
    parts += ["invoke", *(shell_word(a) for a in r.args)]
    return _code(" ".join(parts))


def render_cells(r: Row) -> list[str]:
    """The document's cells for `r`: id, input, message, exit code, untouched."""
    message = " … ".join(_code(m) for m in r.message)
    if r.exit == 0:
        message = "stdout: " + message
    if r.hint:
        message += f" (hint: {_code(r.hint)})"
    keep = ", ".join(k for k in KEEP if k in r.keep)
    return [_code(r.id), render_input(r), message, str(r.exit), keep]


def doc_rows() -> list[list[str]]:
    """The cells of every row of the document's table (the one whose header starts with `| id |`)."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| id |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_doc_ids_are_the_table_ids() -> None:
    ids = [cells[0].strip("`") for cells in doc_rows()]
    assert ids == [r.id for r in ROWS]
    assert len(set(ids)) == len(ids)


def test_doc_rows_are_rendered_from_the_table() -> None:
    """Every cell: the exact input, the message fragments, the exit code and the checks."""
    for cells, r in zip(doc_rows(), ROWS, strict=True):
        rendered = render_cells(r)
        assert not any("|" in cell for cell in rendered), r.id
        assert cells == rendered, r.id


def test_every_row_is_checked_for_what_it_promises() -> None:
    for r in ROWS:
        text = " ".join([*r.args, *(v for _, v in r.env), *(c.decode("latin-1") for _, c in r.files)])
        assert ("CANARY" in text) == ("CANARY" in r.keep), r.id
        assert (SECRET in text) == (SECRET in r.keep), r.id
        assert ("WORK" in r.keep) == bool(r.setup), r.id
        assert r.keep <= set(KEEP), r.id
        assert not r.refs or "docker" in r.keep, r.id


# ---------------------------------------------------------------------------------------------
# What must be untouched


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under `root` (itself included): kind, mode, size, mtime, and content or link target."""
    seen: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                extra = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = os.readlink(path)
            else:
                extra = ""
            seen[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, extra)
    return seen


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False, timeout=60)


def docker_state(work: Path, refs: tuple[str, ...]) -> list[str]:
    """What a run for `work` would leave in docker: images under its workdir-unique tag, containers
    mounting it, and any of `refs` that exists. Other builds may run at the same time, so only these."""
    listed = _docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert listed.returncode == 0, listed.stderr
    suffix = "-w" + hashlib.sha256(str(work).encode()).hexdigest()[:8]
    found = [f"image {name}" for name in listed.stdout.split() if name.endswith(suffix)]
    containers = _docker("ps", "-aq", "--filter", f"volume={work}")
    assert containers.returncode == 0, containers.stderr
    found += [f"container {c}" for c in containers.stdout.split()]
    found += [f"image {ref}" for ref in refs if _docker("image", "inspect", ref).returncode == 0]
    return found


def registry_state() -> list[str]:
    """The test registry's repositories under hostile-inputs/."""
    names: list[str] = []
    url = f"http://{REGISTRY}/v2/_catalog?n=1000"
    while url:
        with urllib.request.urlopen(url, timeout=10) as response:
            names += json.load(response).get("repositories") or []
            link = re.match(r"<([^>]+)>", response.headers.get("Link", ""))  # the next page, if any
        url = f"http://{REGISTRY}{link.group(1)}" if link else ""
    return sorted(n for n in names if n.startswith("hostile-inputs/"))


def _make(setup: str, work: Path) -> None:
    if setup == "file":
        work.write_text("x\n")
    elif setup == "workdir":
        (work / "logs").mkdir(parents=True)
        (work / "logs" / "old.log").write_text("old\n")


def _in_order(text: str, fragments: Iterable[str]) -> bool:
    at = 0
    for fragment in fragments:
        found = text.find(fragment, at)
        if found < 0:
            return False
        at = found + len(fragment)
    return True


@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_row(r: Row, tmp_path: Path) -> None:
    canary = Path(f"/tmp/istiobuild-canary-{uuid.uuid4().hex[:12]}")  # lower case: it must not change a message
    work = tmp_path / "work"
    values = {"TMP": str(tmp_path), "WORK": str(work), "CANARY": str(canary)}

    def fill(text: str) -> str:
        return TOKENS.sub(lambda m: values[m.group(1)], text)

    _make(r.setup, work)
    for name, content in r.files:
        (tmp_path / name).write_bytes(fill(content.decode("latin-1")).encode("latin-1"))
    before = snapshot(tmp_path)
    docker_before = docker_state(work, r.refs) if "docker" in r.keep else []
    registry_before = registry_state() if "registry" in r.keep else []
    assert docker_before == []
    try:
        proc = invoke(*(fill(a) for a in r.args), cwd=tmp_path, env={k: fill(v) for k, v in r.env}, timeout=300)
        output = proc.stdout + proc.stderr
        assert proc.returncode == r.exit, output
        assert "Traceback" not in output
        fragments = [fill(m) for m in r.message]
        if r.exit == 0:
            assert not [line for line in proc.stderr.splitlines() if line.startswith("error:")], proc.stderr
            assert _in_order(proc.stdout, fragments), (fragments, proc.stdout[:2000])
        else:
            line = one_error(proc)
            assert _in_order(line, fragments), (fragments, line)
            assert fill(r.hint) in proc.stderr, proc.stderr
        assert SECRET not in output
        assert not canary.exists(), f"{canary}: an injection ran"
        assert snapshot(tmp_path) == before, "the run changed files under the test directory"
        if "docker" in r.keep:
            assert docker_state(work, r.refs) == []
        if "registry" in r.keep:
            assert registry_state() == registry_before
    finally:
        canary.unlink(missing_ok=True)

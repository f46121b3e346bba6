"""The builder images (dockerfiles/): every base image and download pinned and verified, the
guide's tool versions, and a lint for the usual Dockerfile mistakes.

Static checks only: no network, no docker. The Dockerfiles are parsed here (line continuations,
comments, ARG defaults); building them is documented in dockerfiles/README.md.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from istiobuild import release, toolchain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = REPO / "dockerfiles"
CENTOS7 = "builder-centos7.Dockerfile"
MODERN = "builder-modern.Dockerfile"
NAMES = (CENTOS7, MODERN)

SHA256 = re.compile(r"[0-9a-f]{64}")
SHA1 = re.compile(r"[0-9a-f]{40}")
PINNED_IMAGE = re.compile(r"(?P<name>[a-z0-9][a-z0-9._/-]*):(?P<tag>[A-Za-z0-9._-]+)@sha256:(?P<hex>[0-9a-f]{64})")
# pins.toml [artifacts.X.<arch>] -> the Dockerfile ARG suffix
ARCH_SUFFIX = {"x86_64": "_AMD64", "aarch64": "_ARM64", "any": ""}
# Shell variables a RUN may use without declaring them.
AMBIENT = {"PATH", "HOME", "PWD", "HOSTNAME"}
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSW(OR)?D|CREDENTIAL|AUTH|API_?KEY|PRIVATE|COOKIE", re.IGNORECASE)
SECRET_VALUE = re.compile(r"://[^/\s:@]+:[^/\s@]+@|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|-----BEGIN|xox[bp]-")


# ---------------------------------------------------------------------------------------------
# A small Dockerfile parser (enough for these files: the classic builder's syntax, no heredocs)
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line of the instruction's first line
    keyword: str  # upper case
    args: str  # continuation lines joined with a space, comment lines dropped
    stage: int  # -1 before the first FROM, then 0, 1, ...


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile. Inside a continuation, comment and empty lines are dropped, as
    the Docker parser does."""
    instructions: list[Instruction] = []
    stage = -1
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not parts:
            start = number
        continued = stripped.endswith("\\")
        parts.append(stripped[:-1].rstrip() if continued else stripped)
        if continued:
            continue
        joined = " ".join(parts)
        parts = []
        keyword, _, args = joined.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(line=start, keyword=keyword, args=args.strip(), stage=stage))
    assert not parts, "the Dockerfile ends inside a line continuation"
    return instructions


def arg_defaults(instructions: list[Instruction], *, stage: int | None = None) -> dict[str, str]:
    """ARG name -> default ('' when it has none), optionally for one stage only."""
    result: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword != "ARG" or (stage is not None and ins.stage != stage):
            continue
        for token in shlex.split(ins.args):
            name, _, value = token.partition("=")
            result[name] = value
    return result


def runs(instructions: list[Instruction]) -> list[Instruction]:
    return [ins for ins in instructions if ins.keyword == "RUN"]


def without_single_quoted(body: str) -> str:
    """A RUN body with its single-quoted strings blanked (they are literal text, e.g. a script
    written with printf)."""
    return re.sub(r"'[^']*'", "''", body)


@cache
def dockerfile(name: str) -> list[Instruction]:
    return parse((DOCKERFILES / name).read_text())


@cache
def dockerfile_text(name: str) -> str:
    return (DOCKERFILES / name).read_text()


@cache
def pins() -> dict[str, Any]:
    return tomllib.loads((DOCKERFILES / "pins.toml").read_text())


@dataclasses.dataclass(frozen=True)
class Pin:
    """One pinned value of pins.toml and the Dockerfile ARG that carries it."""

    where: str  # e.g. "artifacts.go.x86_64.sha256"
    arg: str
    value: str
    dockerfiles: tuple[str, ...]


def pinned_args() -> Iterator[Pin]:
    data = pins()
    for key, image in data["images"].items():
        files = tuple(image["dockerfiles"])
        yield Pin(f"images.{key}", image["arg"], f"{image['image']}@{image['digest']}", files)
    for key, artifact in data["artifacts"].items():
        files = tuple(artifact["dockerfiles"])
        for arch, suffix in ARCH_SUFFIX.items():
            if arch in artifact:
                entry = artifact[arch]
                where = f"artifacts.{key}.{arch}"
                yield Pin(f"{where}.url", f"{artifact['arg']}_URL{suffix}", entry["url"], files)
                yield Pin(f"{where}.sha256", f"{artifact['arg']}_SHA256{suffix}", entry["sha256"], files)
    for key, repo in data["git"].items():
        files = tuple(repo["dockerfiles"])
        yield Pin(f"git.{key}.repo", f"{repo['arg']}_REPO", repo["repo"], files)
        yield Pin(f"git.{key}.commit", f"{repo['arg']}_COMMIT", repo["commit"], files)


PINNED_ARG = re.compile(r".+_(URL|SHA256)(_AMD64|_ARM64)?|.+_(REPO|COMMIT)|.+_IMAGE")


# ---------------------------------------------------------------------------------------------
# pins.toml
# ---------------------------------------------------------------------------------------------


def test_pins_file_is_well_formed() -> None:
    data = pins()
    assert data["schema"] == 1
    assert set(data) == {"schema", "images", "artifacts", "git"}
    for key, image in data["images"].items():
        assert set(image) <= {"dockerfiles", "arg", "image", "digest", "platforms", "source", "note"}, key
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", image["digest"]), f"images.{key}.digest"
        assert ":" in image["image"] and not image["image"].endswith(":latest"), f"images.{key}: pin an explicit tag"
        assert {"linux/amd64", "linux/arm64/v8"} <= set(image["platforms"]), f"images.{key}: both architectures"
        assert image["source"], f"images.{key}.source"
    for key, artifact in data["artifacts"].items():
        arches = set(artifact) & set(ARCH_SUFFIX)
        assert set(artifact) - arches == {"dockerfiles", "arg", "version"}, f"artifacts.{key}"
        assert arches in ({"any"}, {"x86_64", "aarch64"}), f"artifacts.{key}: 'any', or both x86_64 and aarch64"
        for arch in arches:
            entry = artifact[arch]
            where = f"artifacts.{key}.{arch}"
            assert set(entry) == {"url", "sha256", "source"}, where
            assert entry["url"].startswith("https://"), f"{where}.url must be https"
            assert SHA256.fullmatch(entry["sha256"]), f"{where}.sha256 must be 64 lower-case hex"
            assert artifact["version"] in entry["url"], f"{where}.url does not name version {artifact['version']}"
            assert entry["source"], f"{where}.source: say where the sha256 was published"
    for key, repo in data["git"].items():
        assert set(repo) == {"dockerfiles", "arg", "repo", "commit", "version", "source"}, f"git.{key}"
        assert repo["repo"].startswith("https://"), f"git.{key}.repo"
        assert SHA1.fullmatch(repo["commit"]), f"git.{key}.commit must be a full 40-hex commit"
        assert repo["source"], f"git.{key}.source"


def test_every_sha256_in_pins_is_64_hex() -> None:
    text = (DOCKERFILES / "pins.toml").read_text()
    values = re.findall(r'^\s*(?:sha256|digest)\s*=\s*"([^"]*)"', text, re.MULTILINE)
    expected = [pin for pin in pinned_args() if pin.where.endswith(".sha256") or pin.where.startswith("images.")]
    assert len(values) == len(expected)
    for value in values:
        assert SHA256.fullmatch(value.removeprefix("sha256:")), value


def test_every_pin_is_used_by_a_dockerfile() -> None:
    for pin in pinned_args():
        assert pin.dockerfiles, f"{pin.where}: used by no Dockerfile"
        for name in pin.dockerfiles:
            assert name in NAMES, f"{pin.where}: unknown Dockerfile {name}"
            defaults = arg_defaults(dockerfile(name))
            assert pin.arg in defaults, f"{name} does not declare ARG {pin.arg} ({pin.where})"
            assert defaults[pin.arg] == pin.value, f"{name}: ARG {pin.arg} default differs from pins.toml {pin.where}"
            assert _arg_is_used(dockerfile(name), pin.arg), f"{name}: ARG {pin.arg} is declared but never used"


def _arg_is_used(instructions: list[Instruction], name: str) -> bool:
    for ins in instructions:
        if ins.keyword == "FROM" and f"${{{name}}}" in ins.args:
            return True
        if ins.keyword != "RUN":
            continue
        if f"${{{name}}}" in ins.args or f"${{{name}:" in ins.args:
            return True
        # indirect use: "BAZEL_DIST_${key}_URL" then ${!url_var}
        for prefix, suffix in re.findall(r"([A-Z][A-Z0-9_]*)\$\{[a-z_]+\}([A-Z0-9_]*)", ins.args):
            if re.fullmatch(re.escape(prefix) + r"[A-Za-z0-9_]+" + re.escape(suffix), name):
                return True
    return False


@pytest.mark.parametrize("name", NAMES)
def test_every_download_arg_is_pinned(name: str) -> None:
    """No URL, checksum, commit or base image ARG in a Dockerfile that pins.toml does not know."""
    expected = {pin.arg for pin in pinned_args() if name in pin.dockerfiles}
    declared = {arg for arg in arg_defaults(dockerfile(name)) if PINNED_ARG.fullmatch(arg)}
    assert declared == expected, (
        f"{name}: not in pins.toml: {sorted(declared - expected)}; missing: {sorted(expected - declared)}"
    )


# ---------------------------------------------------------------------------------------------
# base images, downloads, git checkouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_every_from_is_pinned_by_digest(name: str) -> None:
    instructions = dockerfile(name)
    global_args = arg_defaults(instructions, stage=-1)
    froms = [ins for ins in instructions if ins.keyword == "FROM"]
    assert froms
    for ins in froms:
        image = ins.args.split()[0]
        ref = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: global_args.get(m.group(1) or m.group(2), "<undeclared>"), image)
        match = PINNED_IMAGE.fullmatch(ref)
        assert match, f"{name}:{ins.line}: FROM {image} resolves to {ref!r}, not name:tag@sha256:<digest>"
        assert match.group("tag") != "latest", f"{name}:{ins.line}: no latest tags"


# curl/wget in command position (not, say, the curl package in an install list)
DOWNLOAD = re.compile(r"(?:^|;|&&|\|\||\bthen\b|\bdo\b|\belse\b)\s*(curl|wget)\b")
COMMAND_END = re.compile(r";|&&|\|\||\|")


def _downloads(body: str) -> Iterator[tuple[str, str, int]]:
    """(tool, command text, end offset) of every curl/wget command in a RUN body."""
    for match in DOWNLOAD.finditer(body):
        end = COMMAND_END.search(body, match.end())
        stop = end.start() if end else len(body)
        yield match.group(1), body[match.start(1) : stop], stop


def _output_file(tool: str, command: str) -> str | None:
    words = shlex.split(command)
    for i, word in enumerate(words[:-1]):
        if tool == "curl" and (word in ("-o", "--output") or (re.fullmatch(r"-[a-zA-Z]*o", word) is not None)):
            return words[i + 1]
        if tool == "wget" and word in ("-O", "--output-document"):
            return words[i + 1]
    return None


@pytest.mark.parametrize("name", NAMES)
def test_every_download_is_sha256_checked_before_use(name: str) -> None:
    count = 0
    for ins in runs(dockerfile(name)):
        for tool, command, stop in _downloads(ins.args):
            count += 1
            where = f"{name}:{ins.line}: {command.strip()}"
            path = _output_file(tool, command)
            assert path, f"{where}: download to a file (-o/-O), never straight into a pipe"
            if tool == "curl":
                assert re.search(r"(^|\s)-[a-zA-Z]*f", command), f"{where}: curl needs -f (fail on HTTP errors)"
            assert "://" not in command, f"{where}: take the URL from a pinned ARG, not a literal"
            rest = ins.args[stop:]
            check = re.search(r'echo\s+"[^"]*\s' + re.escape(path) + r'"\s*\|\s*sha256sum\s+(-c|--check)\b', rest)
            assert check, f'{where}: not followed by `echo "<sha256>  {path}" | sha256sum -c -`'
            first_use = rest.find(path)
            assert first_use >= check.start(), f"{where}: {path} is used before its sha256 is checked"
    assert count, f"{name}: no downloads found (the parser is broken?)"


@pytest.mark.parametrize("name", NAMES)
def test_no_add_of_remote_urls_without_checksum(name: str) -> None:
    instructions = dockerfile(name)
    for i, ins in enumerate(instructions):
        if ins.keyword not in ("ADD", "COPY"):
            continue
        words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
        sources, dest = words[:-1], words[-1]
        if not any("://" in src for src in sources):
            continue
        assert ins.keyword == "ADD", f"{name}:{ins.line}: COPY cannot fetch URLs"
        following = next((later for later in instructions[i + 1 :] if later.keyword == "RUN"), None)
        checked = following is not None and re.search(
            re.escape(dest) + r'"?\s*\|\s*sha256sum\s+(-c|--check)', following.args
        )
        assert checked, f"{name}:{ins.line}: ADD of a remote URL must be sha256-checked by the next RUN"


@pytest.mark.parametrize("name", NAMES)
def test_git_clones_are_checked_out_at_a_pinned_commit(name: str) -> None:
    for ins in runs(dockerfile(name)):
        for match in re.finditer(r"\bgit clone\b", ins.args):
            rest = ins.args[match.end() :]
            pinned = re.search(r'git checkout\s+(?:-q\s+)?"\$\{(\w+_COMMIT)\}"', rest)
            assert pinned, f"{name}:{ins.line}: git clone without a checkout of a pinned *_COMMIT"
            verified = f'test "$(git rev-parse HEAD)" = "${{{pinned.group(1)}}}"'
            assert verified in rest, f"{name}:{ins.line}: the checkout is not verified with git rev-parse HEAD"


@pytest.mark.parametrize("name", NAMES)
def test_no_latest_tags_or_floating_downloads(name: str) -> None:
    text = dockerfile_text(name) + (DOCKERFILES / "pins.toml").read_text()
    assert not re.search(r":latest\b", text)
    assert "releases/latest" not in text
    assert "/master/" not in text and "/main/" not in text


@pytest.mark.parametrize("name", NAMES)
def test_no_secrets_in_arg_defaults(name: str) -> None:
    for arg, value in arg_defaults(dockerfile(name)).items():
        if SECRET_NAME.search(arg):
            assert not value, (
                f"{name}: ARG {arg} must not have a default (pass secrets at build time, or better not at all)"
            )
        assert not SECRET_VALUE.search(value), f"{name}: ARG {arg} default looks like a credential"


# ---------------------------------------------------------------------------------------------
# the guide's versions and the release matrix
# ---------------------------------------------------------------------------------------------


def _artifact(key: str) -> Mapping[str, Any]:
    result: Mapping[str, Any] = pins()["artifacts"][key]
    return result


def test_release_matrix_bazel_versions_are_built_in_centos7() -> None:
    assert release.get("1.5.0").bazel_version == "2.0.0"
    assert release.get("1.4.7").bazel_version == "1.1.0"
    wanted = {r.bazel_version for r in release.matrix().values() if r.line in ("1.4", "1.5")}
    assert wanted == {"1.1.0", "2.0.0"}
    pinned = {a["version"] for key, a in pins()["artifacts"].items() if key.startswith("bazel-dist-")}
    assert wanted <= pinned
    defaults = arg_defaults(dockerfile(CENTOS7))
    built = set(defaults["BAZEL_VERSIONS"].split())
    assert wanted <= built <= pinned
    assert defaults["BAZEL_DEFAULT_VERSION"] in built
    for version in built:
        key = version.replace(".", "_")
        assert f"BAZEL_DIST_{key}_URL" in defaults and f"BAZEL_DIST_{key}_SHA256" in defaults


def test_go_is_the_guides_1_13_in_both_images() -> None:
    go = _artifact("go")
    assert go["version"] == "1.13.4"  # the guide's go1.13.4
    lines = {r.go for r in release.matrix().values() if r.line in ("1.4", "1.5")}
    assert lines == {"1.13"}
    assert all(go["version"].startswith(f"{v}.") for v in lines)
    for name in NAMES:
        assert arg_defaults(dockerfile(name)).get("GO_VERSION") == go["version"], f"{name}: ARG GO_VERSION"
        assert set(go["dockerfiles"]) == set(NAMES)


def test_centos7_has_gcc_7_3_from_devtoolset_7() -> None:
    text = dockerfile_text(CENTOS7)
    assert re.search(r"\sdevtoolset-7-gcc-c\+\+\s", text)
    assert "grep -F ' 7.3.'" in text  # the build fails unless gcc-7 says 7.3.x
    gcc73 = toolchain.get("gcc-7.3")
    assert gcc73.min_version == "7.3"
    for binary in (gcc73.binaries["cc"], gcc73.binaries["cxx"]):
        assert f"/usr/local/bin/{binary}" in text, f"{binary} (toolchains/gcc-7.3.toml) is not provided"


def test_centos7_has_clang_9_0_1_under_the_profile_names() -> None:
    llvm = _artifact("llvm-project")
    assert llvm["version"] == "9.0.1"
    defaults = arg_defaults(dockerfile(CENTOS7))
    assert defaults["LLVM_VERSION"] == llvm["version"]
    assert defaults["WITH_LLVM"] == "1"
    text = dockerfile_text(CENTOS7)
    assert 'LLVM_ENABLE_PROJECTS="clang;compiler-rt;libcxx;libcxxabi;lld"' in text
    clang9 = toolchain.get("clang-9")
    assert clang9.accepts(llvm["version"])
    for binary in clang9.binaries.values():
        assert re.search(rf"(ln -s \S+ {re.escape(binary)};)|(\b{re.escape(binary)} --version)", text), binary


def test_centos7_has_jdk_8_and_the_guides_tools() -> None:
    text = dockerfile_text(CENTOS7)
    for package in ("java-1.8.0-openjdk-devel", "make", "git", "patch", "python", "libtool", "automake", "autoconf"):
        assert re.search(rf"\s{re.escape(package)}(\s|;)", text), package
    assert "JAVA_HOME=/usr/lib/jvm/java-1.8.0-openjdk" in text
    assert _artifact("ninja")["version"].startswith("1.10.")
    assert pins()["git"]["gn"]["dockerfiles"] == [CENTOS7]
    assert "GN=/usr/local/bin/gn" in text and "NINJA=/usr/local/bin/ninja" in text


def test_modern_has_the_debian_toolchain() -> None:
    text = dockerfile_text(MODERN)
    installs = [ins.args for ins in runs(dockerfile(MODERN)) if "apt-get install" in ins.args]
    assert len(installs) == 1
    packages = set(re.split(r"[\s;]+", installs[0]))
    assert {
        "clang",
        "lld",
        "llvm",
        "libc++-dev",
        "libc++abi-dev",
        "gcc",
        "g++",
        "generate-ninja",
        "ninja-build",
        "default-jdk-headless",
        "git",
        "make",
        "python3",
    } <= packages
    assert _artifact("bazelisk")["dockerfiles"] == [MODERN]
    assert "ln -s bazelisk /usr/local/bin/bazel" in text


def test_readme_says_how_to_build_both_architectures() -> None:
    readme = (DOCKERFILES / "README.md").read_text()
    for name in NAMES:
        for platform in ("linux/arm64", "linux/amd64"):
            assert f"DOCKER_BUILDKIT=0 docker build --platform {platform}" in readme
        assert f"-f dockerfiles/{name}" in readme
    assert "internet" in readme
    assert "pins.toml" in readme


# ---------------------------------------------------------------------------------------------
# lint
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_runs_stop_at_the_first_failure(name: str) -> None:
    instructions = dockerfile(name)
    shells = [ins for ins in instructions if ins.keyword == "SHELL"]
    assert shells and "pipefail" in shells[0].args, f"{name}: SHELL with -o pipefail, for the sha256sum pipes"
    for ins in runs(instructions):
        assert ins.line > shells[0].line, f"{name}:{ins.line}: RUN before the SHELL instruction"
        body = without_single_quoted(ins.args)
        if ";" in body:
            assert re.match(r"set -[a-z]*e", ins.args), f"{name}:{ins.line}: a ';'-separated RUN must start with set -e"


@pytest.mark.parametrize("name", NAMES)
def test_package_caches_are_cleaned_in_the_same_run(name: str) -> None:
    for ins in runs(dockerfile(name)):
        body = ins.args
        where = f"{name}:{ins.line}"
        installs = list(re.finditer(r"\byum\b[^;&|]*\binstall\b[^;&|]*", body))
        for install in installs:
            assert re.search(r"\s-y\b", install.group(0)), f"{where}: yum install without -y"
        if installs:
            last = installs[-1].end()
            assert "yum clean all" in body[last:], f"{where}: yum clean all after the last install"
            assert "rm -rf /var/cache/yum" in body[last:], f"{where}: rm -rf /var/cache/yum after the last install"
        apt = list(re.finditer(r"\bapt-get\b[^;&|]*\binstall\b[^;&|]*", body))
        for install in apt:
            assert re.search(r"\s-y\b", install.group(0)), f"{where}: apt-get install without -y"
            assert "--no-install-recommends" in install.group(0), f"{where}: apt-get install --no-install-recommends"
            assert "apt-get update" in body[: install.start()], f"{where}: apt-get update in the same RUN, first"
        if apt:
            assert "rm -rf /var/lib/apt/lists/*" in body[apt[-1].end() :], f"{where}: apt lists not removed"
        assert not re.search(r"\b(yum|dnf)\s+(-y\s+)?(update|upgrade)\b|apt-get\s+(-y\s+)?(dist-)?upgrade", body), where
        assert not re.search(r"\|\s*(ba)?sh\b", body), f"{where}: never pipe a download into a shell"
        assert "sudo " not in body, f"{where}: no sudo in a Dockerfile"


@pytest.mark.parametrize("name", NAMES)
def test_variables_are_declared_before_use(name: str) -> None:
    """A RUN sees only ARGs declared in its stage (an ARG before FROM is for FROM only) and ENVs."""
    instructions = dockerfile(name)
    for ins in runs(instructions):
        known = set(AMBIENT)
        for earlier in instructions:
            if earlier is ins:
                break
            if earlier.stage != ins.stage:
                continue
            if earlier.keyword in ("ARG", "ENV"):
                known |= {token.partition("=")[0] for token in shlex.split(earlier.args)}
        body = without_single_quoted(ins.args)
        used = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", body))
        assigned = set(re.findall(r"(?:^|[\s;])([A-Z][A-Z0-9_]*)=", body))
        missing = sorted(used - known - assigned)
        assert not missing, f"{name}:{ins.line}: {missing} used before an ARG/ENV declares them"


def test_parser_joins_continuations_and_drops_comments() -> None:
    text = "ARG A=1\n# c\nFROM x:1@sha256:" + "0" * 64 + "\nRUN set -e; \\\n    # inner\n    echo a; \\\n\n    echo b\n"
    instructions = parse(text)
    assert [(i.keyword, i.stage) for i in instructions] == [("ARG", -1), ("FROM", 0), ("RUN", 0)]
    assert instructions[2].args == "set -e; echo a; echo b"
    assert instructions[2].line == 4
    assert arg_defaults(instructions) == {"A": "1"}

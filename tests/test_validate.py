"""Every user value against its grammar, before the first stage: hostile and clumsy values are one
clear line (exit 2), secrets never show, good values pass. Plus the empty-value rule and config
files that are broken in every way a file can be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helpers import invoke, one_error
from istiobuild import grammar as g
from istiobuild import validate as v
from istiobuild.config import Layer, Settings, load, resolve
from istiobuild.errors import ConfigError

SECRET = "s3cr3t"
DIGEST = "sha256:" + "0123456789abcdef" * 4


def settings_with(tmp_path: Path, **values: Any) -> Settings:
    """Resolve `values` as one file layer and validate them, as `config.load` does."""
    values.setdefault("workdir", str(tmp_path / "work"))
    settings, origin = resolve([Layer("test.toml", values)], base=tmp_path)
    v.validate(settings, origin=origin)
    return settings


# (setting, hostile or clumsy value, a piece of the message)
BAD: list[tuple[str, Any, str]] = [
    # hub: make hands HUB=... to sh
    ("hub", "x;touch /tmp/pwned", "';'"),
    ("hub", "$(touch /tmp/pwned)", "'$'"),
    ("hub", "`touch /tmp/pwned`", "'`'"),
    ("hub", "istio|sh", "'|'"),
    ("hub", "istio\ntouch /tmp/pwned", "a newline"),
    ("hub", "my hub", "a space"),
    ("hub", "-istio", "letter or digit"),
    ("hub", "Istio", "upper case"),
    ("hub", "docker.io/MyOrg", "upper case"),
    ("hub", "istio/", "ends with '/'"),
    ("hub", "[::1]:5000/istio", "IPv6 host"),  # docker 20.10 cannot parse it: refused before any stage
    ("hub", "docker.io/istio:1.5", "has a tag"),
    ("hub", "istio:latest", "has a tag"),
    ("hub", f"docker.io/istio@{DIGEST}", "digest"),
    ("hub", "999.1.1.1:5000/istio", "invalid IPv4"),
    ("hub", "localhost:99999/istio", "invalid port"),
    ("hub", "istio//proxy", "empty path component"),
    ("hub", "a___b", "invalid path component"),
    ("hub", "x" * 200, "too long"),
    # tag: TAG=... to sh, and <tag>-<arch>
    ("tag", "1.5 0", "a space"),
    ("tag", "1.5;touch /tmp/pwned", "';'"),
    ("tag", "$(id)", "'$'"),
    ("tag", "`id`", "'`'"),
    ("tag", "-rc1", "must start with"),
    ("tag", "a" * 121, "at most 120"),
    # image references
    ("builder", "Builder:1", "upper case"),
    ("builder", "builder:1;id", "';'"),
    ("builder", "--privileged", "letter or digit"),
    ("builder", "builder@sha256:abc", "digest"),
    ("builder", "builder:a b", "invalid tag"),
    ("base_images", {"aarch64": {"debian:bookworm-slim": "x;touch /tmp/pwned"}}, "';'"),
    ("base_images", {"aarch64": {"Debian": "debian"}}, "upper case"),
    ("base_images", {"arm64": {"debian": "debian"}}, "not an arch"),
    # remote_cache: bazel flag inside BAZEL_BUILD_ARGS (sh), or the secret flag file
    ("remote_cache", "ftp://cache.example.com", "scheme 'ftp'"),
    ("remote_cache", "HTTPS://cache.example.com", "lower case"),
    ("remote_cache", "https://cache.example.com/x;touch /tmp/pwned", "';'"),
    ("remote_cache", "https://cache.example.com/$(id)", "'$'"),
    ("remote_cache", "https://cache.example.com/`id`", "'`'"),
    ("remote_cache", "--remote_cache=x", "starts with '-'"),
    ("remote_cache", "cache.example.com:9092", "has no scheme"),
    ("remote_cache", f"https://user:{SECRET} x@cache.example.com/b", "credentials"),
    ("remote_cache", f"https://user:{SECRET}\n@cache.example.com/b", "credentials"),
    ("remote_cache", f"https://user:a/{SECRET}@cache.example.com/b", "percent-encoded"),
    ("remote_cache", f"ftp://user:{SECRET}@cache.example.com/b", "scheme"),
    ("remote_cache", f"user:{SECRET}@cache.example.com", "has no scheme"),
    # repositories: git's argv
    ("mirror", "--upload-pack=touch /tmp/x", "starts with '-'"),
    ("mirror", "ext::sh -c touch% /tmp/x", "remote-helper"),
    ("mirror", "fd::3", "remote-helper"),
    ("mirror", "ssh://-oProxyCommand=touch/x", "invalid host"),
    ("mirror", "git@-oProxyCommand=x:y", "invalid host"),
    ("mirror", "https://git.example.com/a b", "a space"),
    ("mirror", "/srv/mirrors\n", "a newline"),
    ("mirror", "gopher://git.example.com/x", "scheme 'gopher'"),
    ("mirror", f"https://user:{SECRET}@git.example.com/a\tb", "a tab"),
    ("repos", {"proxy": "--upload-pack=touch /tmp/x"}, "starts with '-'"),
    ("repos", {"envoy": "ext::sh -c id"}, "remote-helper"),
    ("repos", {"istio": "host:"}, "no path"),
    # paths: make variables and bazel flags
    ("workdir", "w;touch /tmp/pwned", "';'"),
    ("workdir", "my work", "a space"),
    ("workdir", "w$(id)", "'$'"),
    ("workdir", "w\nx", "a newline"),
    ("workdir", "-w", "starts with '-'"),
    ("workdir", "w\x00x", "a NUL byte"),
    ("cache_dir", "c`id`", "'`'"),
    ("cache_dir", "c d", "a space"),
    ("downloads", "--downloads", "starts with '-'"),
    ("downloads", "d\x07x", "a control character"),
    ("downloads", "/nonexistent/istiobuild-downloads", "is not a directory"),
    # numbers, programs, versions, header
    ("jobs", 100000, "beyond any machine"),
    ("jobs", 1025, "1..1024"),
    ("jvm_heap", "3g; rm -rf /", "not a heap size"),
    ("jvm_heap", "3 g", "not a heap size"),
    ("jvm_heap", "0g", "not a heap size"),
    ("jvm_heap", "100m", "too small"),
    ("jvm_heap", "512g", "beyond any machine"),
    ("gn", "gn;touch /tmp/pwned", "';'"),
    ("gn", "$(id)", "'$'"),
    ("ninja", "-ninja", "starts with '-'"),
    ("bazel", "bazel --foo", "a space"),
    ("bazel", "bin/bazel", "relative path"),
    ("bazel_version", "2.0.0;id", "not a bazel version"),
    ("bazel_version", "latest", "not a bazel version"),
    ("page_size", "16k", "not a page size"),
    ("remote_header", f"x-api-key: {SECRET}", "NAME=VALUE"),
    ("remote_header", f"x-api-key={SECRET}\n--config=evil", "newline"),
    ("remote_header", f"x-api key={SECRET}", "NAME=VALUE"),
]


@pytest.mark.parametrize(("key", "value", "why"), BAD, ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(BAD)])
def test_bad_values_are_one_clear_line(tmp_path: Path, key: str, value: Any, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings_with(tmp_path, **{key: value})
    text = err.value.render()
    assert "\n" not in text, text
    assert err.value.exit_code == 2
    assert f"{key} in test.toml" in text or f"{key}." in text, text  # names the setting where it was set
    assert why in text, text
    assert SECRET not in text, text
    assert "; " in text  # ... what to do


# (setting, good value)
GOOD: list[tuple[str, Any]] = [
    ("hub", "127.0.0.1:5000/istio"),
    ("hub", "docker.io/istio"),
    ("hub", "istio"),
    ("hub", "localhost:5000"),
    ("hub", "localhost/istio"),
    ("hub", "registry.local:5000/me/istio"),
    ("hub", "a__b/c-d.e/f--g"),
    ("tag", "1.5.0"),
    ("tag", "1.5.0-rc.1_x"),
    ("tag", "_dev"),
    ("tag", "a" * 120),
    ("builder", "istiobuild/host-builder:amd64"),
    ("builder", f"docker.io/library/debian@{DIGEST}"),
    ("builder", f"localhost:5000/b:1@{DIGEST}"),
    ("base_images", {"aarch64": {"gcr.io/distroless/cc:latest": "discolix/cc:latest"}}),
    ("remote_cache", "grpc://localhost:9092"),
    ("remote_cache", "https://user:tok@cache.example.com/x"),
    ("remote_cache", "grpcs://[::1]:9092"),
    ("remote_cache", "http://10.0.0.1:8080/cache/a-b_c.d"),
    ("mirror", "https://git.example.com/istio"),
    ("mirror", "https://token@git.example.com/istio"),
    ("mirror", "git@github.com:istio"),
    ("mirror", "ssh://git@git.example.com:2222/istio"),
    ("mirror", "git://git.example.com/istio"),
    ("mirror", "file:///srv/mirrors"),
    ("mirror", "/srv/mirrors"),
    ("mirror", "./mirrors"),
    ("repos", {"proxy": "https://github.com/istio/proxy.git", "envoy": "/srv/envoy.git"}),
    ("cache_dir", "cache"),
    ("downloads", "downloads with spaces"),  # relative to tmp_path, made by the test
    ("jobs", 0),
    ("jobs", 1024),
    ("jvm_heap", "512m"),
    ("jvm_heap", "3G"),
    ("jvm_heap", "256g"),
    ("gn", "/usr/bin/gn"),
    ("ninja", "ninja-build"),
    ("bazel", "bazelisk"),
    ("bazel_version", "2.0.0"),
    ("bazel_version", "4.2.1-rc1"),
    ("bazel_version", "4"),
    ("remote_header", "x-api-key=tok en"),
]


@pytest.mark.parametrize(("key", "value"), GOOD)
def test_good_values_pass(tmp_path: Path, key: str, value: Any) -> None:
    if key == "downloads":
        value = str(tmp_path / value)
        Path(value).mkdir()
    settings = settings_with(tmp_path, **{key: value})
    assert getattr(settings, key) == value or key == "cache_dir"


def test_defaults_pass(tmp_path: Path) -> None:
    settings_with(tmp_path)


def test_page_size_is_case_insensitive(tmp_path: Path) -> None:
    assert settings_with(tmp_path, page_size="64K").page_size == "64k"
    settings, _ = load({}, cwd=tmp_path, env={"ISTIOBUILD_PAGE_SIZE": "AUTO"})
    assert settings.page_size == "auto"


def test_hub_and_tag_together_leave_room(tmp_path: Path) -> None:
    hub = "h" * 100
    settings_with(tmp_path, hub=hub, tag="1.5.0")
    with pytest.raises(ConfigError, match="would pass 255 characters"):
        settings_with(tmp_path, hub=hub, tag="t" * 120)


def test_secrets_are_redacted() -> None:
    assert g.redact("https://user:tok@host/x") == "https://***@host/x"
    assert g.redact("grpcs://tok@host:1") == "grpcs://***@host:1"
    assert g.redact("user:tok@host") == "***@host"
    assert g.redact("git@github.com:istio/proxy") == "git@github.com:istio/proxy"
    assert g.redact("https://host/x") == "https://host/x"
    with pytest.raises(ConfigError) as err:
        v.check_remote_header(f"x-api-key: {SECRET}")
    assert SECRET not in err.value.render() and "(value hidden)" in err.value.render()


def test_is_docker_reference() -> None:
    good = ["debian", "debian:bookworm-slim", "gcr.io/distroless/cc:latest", "localhost:5000", f"a/b@{DIGEST}"]
    bad = ["", "Debian", "a/", "a:b c", "a@sha256:xyz", "a;b", "-a", "a//b", "x" * 256]
    assert all(g.is_docker_reference(x) for x in good)
    assert not any(g.is_docker_reference(x) for x in bad)


@pytest.mark.timeout(10)
def test_grammars_do_not_backtrack() -> None:
    """docker's own path regex ([-]* separators) backtracks exponentially in Python: 26 chars took seconds."""
    for text in ("a" * 5000 + "!", "a-" * 5000 + "!", "a." * 5000 + ":"):
        assert not g.is_docker_reference(text)
        with pytest.raises(ConfigError):
            g.check_hub(text)


def test_setting_names_follow_where_they_were_set() -> None:
    assert g.setting_name("hub", g.CLI_SOURCE) == "--hub"
    assert g.setting_name("jvm_heap", g.CLI_SOURCE) == "--jvm-heap"
    assert g.setting_name("workdir", g.ENV_SOURCE) == "ISTIOBUILD_WORKDIR"
    assert g.setting_name("repos", g.ENV_SOURCE, "proxy") == "ISTIOBUILD_REPOS_PROXY"
    assert g.setting_name("repos", "/x/istiobuild.toml", "proxy") == "repos.proxy in /x/istiobuild.toml"
    assert g.setting_name("tag") == "tag"


def test_values_from_the_environment_and_the_command_line_are_named_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ISTIOBUILD_HUB 'a;b' "):
        load({}, cwd=tmp_path, env={"ISTIOBUILD_HUB": "a;b"})
    with pytest.raises(ConfigError, match=r"^--tag 'a b' "):
        load({"tag": "a b", "workdir": str(tmp_path / "w")}, cwd=tmp_path, env={})
    with pytest.raises(
        ConfigError,
        match=r"^ISTIOBUILD_REPOS_ENVOY '--upload-pack=x' is not a repository URL or path: it starts with '-'",
    ):
        load({}, cwd=tmp_path, env={"ISTIOBUILD_REPOS_ENVOY": "--upload-pack=x"})


# -- directories -------------------------------------------------------------------------------


def test_workdir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "w").write_text("")
    with pytest.raises(ConfigError, match="is a file; remove it, or choose a directory"):
        settings_with(tmp_path, workdir="w")
    with pytest.raises(ConfigError, match=r"cannot be created: .*/w is not a directory"):
        settings_with(tmp_path, workdir="w/sub")


def test_read_only_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(v.os, "access", lambda path, mode: Path(path).name != "ro")
    with pytest.raises(ConfigError, match="cache_dir in test.toml '.*/ro' is read-only"):
        settings_with(tmp_path, cache_dir="ro")
    with pytest.raises(ConfigError, match="cannot be created: .*/ro is read-only"):
        settings_with(tmp_path, workdir="ro/new/deeper")


def test_missing_workdir_under_a_writable_parent(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, workdir="a/b/c")
    assert settings.workdir == tmp_path / "a" / "b" / "c"
    assert not settings.workdir.exists()  # validation creates nothing


# -- the empty-value rule ----------------------------------------------------------------------

EMPTY = [
    ({"workdir": ""}, {}, "--workdir is empty; leave the flag out or give a directory"),
    ({"hub": ""}, {}, "--hub is empty; leave the flag out or give a registry prefix"),
    ({}, {"ISTIOBUILD_WORKDIR": ""}, "ISTIOBUILD_WORKDIR is empty; unset it or give a directory"),
    ({}, {"ISTIOBUILD_TAG": "  "}, "ISTIOBUILD_TAG is empty; unset it"),
    ({}, {"ISTIOBUILD_JOBS": ""}, "ISTIOBUILD_JOBS is empty; unset it"),
    ({}, {"ISTIOBUILD_PUSH": ""}, "ISTIOBUILD_PUSH is empty"),
    ({}, {"ISTIOBUILD_REPOS_PROXY": ""}, "ISTIOBUILD_REPOS_PROXY is empty"),
    ({}, {"ISTIOBUILD_REMOTE_HEADER": ""}, "ISTIOBUILD_REMOTE_HEADER is empty"),
]


@pytest.mark.parametrize(("cli", "env", "message"), EMPTY)
def test_explicitly_empty_values_are_errors(
    tmp_path: Path, cli: dict[str, Any], env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(cli, cwd=tmp_path, env=env)
    assert err.value.render().startswith(f"error: {message}")
    assert "\n" not in err.value.render()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tag = ""\n', "tag in {file} is empty; remove it or give a tag"),
        ('[repos]\nproxy = ""\n', "repos.proxy in {file} is empty"),
        ('[base_images.aarch64]\n"debian" = ""\n', "base_images.aarch64 in {file} is empty"),
        ('workdir = ""\n', "workdir in {file} is empty; remove it or give a directory"),
    ],
)
def test_empty_values_in_files_are_errors(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "istiobuild.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load({}, cwd=tmp_path, env={})
    assert err.value.message.startswith(message.format(file=tmp_path / "istiobuild.toml"))


def test_unset_values_keep_their_defaults(tmp_path: Path) -> None:
    cli = {"hub": None, "tag": None, "builder": None, "workdir": None, "jobs": None}
    settings, origin = load(cli, cwd=tmp_path, env={})
    assert (settings.hub, settings.tag, settings.builder, settings.jobs) == ("istio", "", "", 0)
    assert settings.workdir == tmp_path / "istiobuild-work"
    assert not origin


# -- config files broken in every way ----------------------------------------------------------

BROKEN_FILES: list[tuple[str, bytes, str]] = [
    ("istiobuild.toml", b'mirror = "caf\xe9"\n', "is not UTF-8 text"),
    ("pyproject.toml", b'[tool.istiobuild]\nmirror = "\xff\xfe"\n', "is not UTF-8 text"),
    ("istiobuild.toml", b"mirror = \n", "is not valid TOML"),
    ("pyproject.toml", b"[tool]\nistiobuild = 5\n", "[tool] istiobuild in"),
    ("pyproject.toml", b'tool = "x"\n', "[tool] in"),
    ("pyproject.toml", b"[tool.istiobuild]\njobs = true\n", "not a whole number"),
    ("pyproject.toml", b"[tool.istiobuild]\njobs = 2.5\n", "not a whole number"),
    ("pyproject.toml", b"[tool.istiobuild]\njobs = [1]\n", "not a whole number"),
    ("pyproject.toml", b"[tool.istiobuild]\nmirror = 5\n", "is a number, not a string"),
    ("pyproject.toml", b"[tool.istiobuild]\nworkdir = [1]\n", "not a string"),
    ("pyproject.toml", b'[tool.istiobuild]\nrepos = "x"\n', "is not a table"),
    ("pyproject.toml", b"[tool.istiobuild]\nrepos = {proxy = 5}\n", "must be a string"),
    ("pyproject.toml", b"[tool.istiobuild]\nbase_images = {aarch64 = 5}\n", "must map image names"),
    ("pyproject.toml", b'[tool.istiobuild]\nbase_images = "x"\n', "not a table"),
    ("pyproject.toml", b'[tool.istiobuild]\npush = "maybe"\n', "not true or false"),
    ("pyproject.toml", b"[tool.istiobuild]\nremote_header = 12345\n", "(value hidden)"),
    ("istiobuild.toml", b"workdir = 1979-05-27\n", "not a string"),
]


@pytest.mark.parametrize(("name", "content", "message"), BROKEN_FILES)
def test_broken_config_files_are_one_line(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load({}, cwd=tmp_path, env={})
    text = err.value.render()
    assert message in text, text
    assert "\n" not in text, text
    assert "12345" not in text


def test_unreadable_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = tmp_path / "istiobuild.toml"
    own.write_text('mirror = "x"\n')
    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == own:
            raise PermissionError(13, "Permission denied")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ConfigError) as err:
        load({}, cwd=tmp_path, env={})
    assert err.value.render() == f"error: {own} cannot be read (Permission denied); make it readable or remove it"


def test_unusable_home_in_a_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a usable path"):
        load({"workdir": "~no-such-user-here/w"}, cwd=tmp_path, env={})


# -- end to end --------------------------------------------------------------------------------


def test_injection_stops_before_anything_runs(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    work = tmp_path / "w"
    proc = invoke("plan", "--release", "example", "--workdir", str(work), "--hub", f"x;touch {pwned}")
    assert proc.returncode == 2
    line = one_error(proc)
    assert line.startswith("error: --hub 'x;touch ") and "contains ';'" in line
    empty = invoke("plan", "--release", "example", env={"ISTIOBUILD_WORKDIR": ""})
    assert empty.returncode == 2
    assert one_error(empty) == "error: ISTIOBUILD_WORKDIR is empty; unset it or give a directory"
    assert not pwned.exists() and not work.exists()

from __future__ import annotations

from pathlib import Path

import pytest

from istiobuild.config import Layer, env_layer, file_layers, load, resolve
from istiobuild.errors import ConfigError

# One table for the whole precedence: (layers, expected mirror, expected source)
PRECEDENCE = [
    ([], "", None),
    ([Layer("pyproject", {"mirror": "a"})], "a", "pyproject"),
    ([Layer("pyproject", {"mirror": "a"}), Layer("istiobuild.toml", {"mirror": "b"})], "b", "istiobuild.toml"),
    ([Layer("pyproject", {"mirror": "a"}), Layer("env", {"mirror": "c"})], "c", "env"),
    (
        [Layer("istiobuild.toml", {"mirror": "b"}), Layer("env", {"mirror": "c"}), Layer("cli", {"mirror": "d"})],
        "d",
        "cli",
    ),
    ([Layer("env", {"mirror": "c"}), Layer("cli", {})], "c", "env"),
]


@pytest.mark.parametrize(("layers", "mirror", "source"), PRECEDENCE)
def test_precedence(tmp_path: Path, layers: list[Layer], mirror: str, source: str | None) -> None:
    settings, origin = resolve(layers, base=tmp_path)
    assert settings.mirror == mirror
    assert origin.get("mirror") == source


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    settings, _ = resolve([], base=tmp_path)
    assert settings.release == "1.5.0"
    assert settings.arch == ""
    assert settings.toolchain == "clang"
    assert settings.workdir == tmp_path / "istiobuild-work"
    # the cache every workdir shares (docs/cache.md), not one inside the workdir
    assert settings.cache_dir is None and settings.cache == tmp_path / "xdg" / "istiobuild"
    # cache_dir is a path like workdir: relative to the directory the settings came from
    chosen, origin = resolve([Layer("istiobuild.toml", {"cache_dir": "c"})], base=tmp_path)
    assert (chosen.cache, origin["cache_dir"]) == (tmp_path / "c", "istiobuild.toml")


def test_tables_merge_per_key(tmp_path: Path) -> None:
    settings, _ = resolve(
        [
            Layer("file", {"repos": {"proxy": "p1", "envoy": "e1"}, "base_images": {"aarch64": {"a": "b", "c": "d"}}}),
            Layer("env", {"repos": {"envoy": "e2"}, "base_images": {"aarch64": {"c": "x"}}}),
        ],
        base=tmp_path,
    )
    assert settings.repos == {"proxy": "p1", "envoy": "e2"}
    assert settings.base_images == {"aarch64": {"a": "b", "c": "x"}}


def test_unknown_key_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown config key 'mirorr' in f") as err:
        resolve([Layer("f", {"mirorr": "x"})], base=tmp_path)
    assert "did you mean 'mirror'" in err.value.hint


def test_unknown_repo_suggests(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve([Layer("f", {"repos": {"envy": "x"}})], base=tmp_path)
    assert "did you mean 'envoy'" in err.value.hint


def test_bad_types(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="whole number"):
        resolve([Layer("f", {"jobs": "many"})], base=tmp_path)
    with pytest.raises(ConfigError, match="page_size"):
        resolve([Layer("f", {"page_size": "16k"})], base=tmp_path)


def test_env_layer() -> None:
    layer = env_layer(
        {"ISTIOBUILD_WORKDIR": "/w", "ISTIOBUILD_REPOS_ENVOY": "u", "PATH": "/bin", "ISTIOBUILD_UPSTREAM_MIRRORS": "/m"}
    )
    assert layer.values == {"workdir": "/w", "repos": {"envoy": "u"}}
    with pytest.raises(ConfigError) as err:
        env_layer({"ISTIOBUILD_MIRRROR": "x"})
    assert "ISTIOBUILD_MIRROR" in err.value.hint


def test_files_and_load(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.istiobuild]\nmirror = "from-pyproject"\njobs = 3\n')
    (tmp_path / "istiobuild.toml").write_text('mirror = "from-own-file"\nworkdir = "w"\n')
    assert [layer.source.split("/")[-1] for layer in file_layers(tmp_path)] == [
        "pyproject.toml [tool.istiobuild]",
        "istiobuild.toml",
    ]
    settings, origin = load({"jobs": None, "toolchain": "gcc"}, cwd=tmp_path, env={"ISTIOBUILD_JOBS": "5"})
    assert settings.mirror == "from-own-file"
    assert settings.jobs == 5
    assert settings.toolchain == "gcc"
    assert settings.workdir == tmp_path / "w"
    assert origin["jobs"].startswith("environment")


def test_invalid_toml(tmp_path: Path) -> None:
    (tmp_path / "istiobuild.toml").write_text("mirror = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load({}, cwd=tmp_path, env={})


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (Layer("command line", {"release": ""}), "--release is empty; leave the flag out or give a release"),
        (Layer("environment (ISTIOBUILD_*)", {"gn": ""}), "ISTIOBUILD_GN is empty; unset it or give a program"),
        (Layer("f.toml", {"repos": {"envoy": ""}}), "repos.envoy in f.toml is empty; remove it or give a repository"),
    ],
)
def test_empty_values_are_errors_in_every_layer(tmp_path: Path, layer: Layer, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve([layer], base=tmp_path)
    assert err.value.message.startswith(message)


def test_none_on_the_command_line_is_unset(tmp_path: Path) -> None:
    settings, origin = load({"mirror": None, "hub": None}, cwd=tmp_path, env={"ISTIOBUILD_HUB": "docker.io/me"})
    assert (settings.mirror, settings.hub) == ("", "docker.io/me")
    assert origin["hub"].startswith("environment")


def test_load_validates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--hub 'x;id' is not a docker repository prefix"):
        load({"hub": "x;id"}, cwd=tmp_path, env={})

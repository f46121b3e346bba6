from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))  # this checkout's package, whatever else is installed

from istiobuild.config import Layer, Settings, resolve  # noqa: E402

# The suite may itself run under GitHub Actions or GitLab CI: its builds must not write into that job's summary,
# outputs or log sections (tests/test_ci_output.py sets these variables itself, per build).
for _name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_OUTPUT", "GITHUB_ENV", "GITLAB_CI"):
    os.environ.pop(_name, None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """In CI a skipped real-tool test is a failure; only `upstream` tests may skip (no mirrors in CI)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped and item.get_closest_marker("upstream") is None:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (a skipped real-tool test is a failure): {report.longrepr}"


@pytest.fixture
def no_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything starts a process."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"subprocess started: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "run", refuse)
    monkeypatch.setattr(os, "system", refuse)


@pytest.fixture
def settings_for(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(**values: object) -> Settings:
        values.setdefault("workdir", str(tmp_path / "work"))
        settings, _ = resolve([Layer("test", values)], base=tmp_path)
        return settings

    return make


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("ISTIOBUILD_") and name != "ISTIOBUILD_UPSTREAM_MIRRORS":
            monkeypatch.delenv(name)
    yield


@pytest.fixture(scope="session", autouse=True)
def _session_cache_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The default cache ($XDG_CACHE_HOME/istiobuild) is never the real ~/.cache: a session dir for session-
    and module-scoped fixtures; each test then gets an empty one of its own (`_cache_home`), as when the cache
    lived in the workdir. Tests that share a cache between workdirs do it on purpose, in one test or with
    ISTIOBUILD_CACHE_DIR (tests/test_cache.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache-session")))
        yield


@pytest.fixture(autouse=True)
def _cache_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(scope="session")
def example_upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The miniature proxy, envoy and istio repositories, generated once per session (read-only)."""
    from istiobuild import example

    dest = tmp_path_factory.mktemp("upstream") / "example-upstream"
    example.generate(dest)
    return dest


@pytest.fixture
def upstream_copy(example_upstream: Path, tmp_path: Path) -> Path:
    """A private copy of the miniature upstream that a test may change (move tags, delete repos)."""
    import shutil

    dest = tmp_path / "upstream"
    shutil.copytree(example_upstream, dest, symlinks=True)
    return dest


def _docker_ids(*args: str) -> set[str]:
    import shutil as _shutil

    if _shutil.which("docker") is None:
        return set()
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    return set(proc.stdout.split()) if proc.returncode == 0 else set()


@pytest.fixture(scope="session", autouse=True)
def _docker_cleanup() -> Iterator[None]:
    """Remove every container and image the suite created; leave what was there before alone.

    Only when no other test session uses this docker daemon (each holds a shared lock while it runs): another
    session's images and containers are new to this one too, and removing them would break its builds."""
    import fcntl

    lock = os.open("/tmp/istiobuild-tests-docker.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(lock, fcntl.LOCK_SH)
    containers = _docker_ids("ps", "-aq", "--no-trunc")
    images = _docker_ids("images", "-aq", "--no-trunc")
    yield
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return
    os.close(lock)
    new_containers = _docker_ids("ps", "-aq", "--no-trunc") - containers
    if new_containers:
        subprocess.run(["docker", "rm", "-f", *new_containers], capture_output=True, check=False)
    new_images = _docker_ids("images", "-aq", "--no-trunc") - images
    if new_images:
        subprocess.run(["docker", "rmi", "-f", *new_images], capture_output=True, check=False)

"""bazel's remote cache and executor for the proxy stage: the flags, a check before bazel starts, the hit report.

Flags without secrets go on bazel's command line, so the plan shows them; a cache or executor URL with
credentials and the remote header go to the stage's 0600 rc file, never argv (stages/proxy.py BazelFiles).

A cache bazel cannot use: bazel 4.2.3 builds on without an HTTP cache that is down or refuses it (it only
warns, per action), but stops at start when a gRPC cache or executor does not answer its capabilities call,
unless --remote_local_fallback, with which it warns and builds without them. istiobuild chooses "build on,
one warning line" for every cache (ReportRemoteCache, after the build): it passes --remote_local_fallback
with a gRPC cache. Not with an executor, where that flag would also run failed remote actions locally: bazel
stops, and CheckEndpoints says which endpoint is down in one line before bazel starts (docs/remote-cache.md).
"""

from __future__ import annotations

import dataclasses
import re
import socket
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from istiobuild import secrets
from istiobuild.config import Settings
from istiobuild.errors import StepFailed
from istiobuild.steps import Action

if TYPE_CHECKING:
    from istiobuild.executor import Executor

CONNECT_TIMEOUT = 10.0  # seconds, CheckEndpoints
GRPC_DEFAULT_PORT = 443  # gRPC's default when the URL names none
# The make command's echo in the stage log ("+ [cwd] ... make build_envoy ..."): this run's output follows it.
_RUN_START = re.compile(rb"^\+ (?:.* )?make build_envoy .*$", re.M)
# bazel's summary, e.g. "INFO: 13 processes: 4 remote cache hit, 9 internal." (bazel >= 1.0)
_PROCESSES = re.compile(rb"^INFO: (\d+) process(?:es)?(?:: ([^\n]*?))?\.?$", re.M)
_WARNINGS = (
    b"WARNING: Reading from Remote Cache",
    b"WARNING: Writing to Remote Cache",
    b"WARNING: Failed to query remote execution capabilities",  # a gRPC cache, with --remote_local_fallback
)
_REFUSED = re.compile(rb"\b(401 Unauthorized|403 Forbidden|UNAUTHENTICATED|PERMISSION_DENIED)\b")
_UNREACHABLE = re.compile(rb"(Connection refused|UnknownHostException|No route to host|timed out|UNAVAILABLE)")


def enabled(settings: Settings) -> bool:
    """Whether bazel talks to a remote cache (or an executor, which is its cache when no cache is given)."""
    return bool(settings.remote_cache or settings.remote_executor)


def _urls(settings: Settings) -> list[tuple[str, str]]:
    pairs = (("remote_cache", settings.remote_cache), ("remote_executor", settings.remote_executor))
    return [(flag, url) for flag, url in pairs if url]


def _secret(url: str) -> bool:
    return bool(secrets.split_credentials(url)[1])


def has_secrets(settings: Settings) -> bool:
    return bool(settings.remote_header) or any(_secret(url) for _, url in _urls(settings))


def secret_flags(settings: Settings) -> list[str]:
    """The flags that carry secrets (a URL with credentials, the remote header): for the 0600 rc file only."""
    flags = [f"--{flag}={url}" for flag, url in _urls(settings) if _secret(url)]
    if settings.remote_header:
        flags.append(f"--remote_header={settings.remote_header}")
    return flags


def shown_secret_flags(settings: Settings) -> tuple[str, ...]:
    """secret_flags as the plan shows them: credentials and the header's value as ***."""
    flags = [f"--{flag}={secrets.redact_url(url)}" for flag, url in _urls(settings) if _secret(url)]
    if settings.remote_header:
        flags.append(f"--remote_header={settings.remote_header.partition('=')[0]}=***")
    return tuple(flags)


def register_secrets(settings: Settings) -> None:
    """Mask the executor URL's credentials in every log, like the cache URL's (Executor.secrets)."""
    userinfo = secrets.split_credentials(settings.remote_executor)[1]
    if userinfo:
        secrets.register_secret(userinfo, *filter(None, [userinfo.partition(":")[2]]))


def _ignores_disk(bazel_version: str) -> bool:
    """bazel 3.x-5.x know --incompatible_remote_results_ignore_disk: without it --noremote_upload_local_results
    also keeps results out of the local --disk_cache (bazel #8216). 6.0 made it the default, 8 removed it;
    1.x/2.x (the 1.4.x/1.5.x proxies) are not known to have it, so they go without."""
    major = bazel_version.split(".", 1)[0]
    return major.isdigit() and 3 <= int(major) <= 5


def public_flags(settings: Settings, bazel_version: str) -> list[str]:
    """The remote flags without secrets, for bazel's command line (and so the plan)."""
    flags = [f"--{flag}={url}" for flag, url in _urls(settings) if not _secret(url)]
    if settings.remote_cache.startswith("grpc") and not settings.remote_executor:
        flags.append("--remote_local_fallback")  # a gRPC cache bazel cannot reach: warn and build on, like HTTP
    if enabled(settings) and not settings.remote_upload:
        flags.append("--noremote_upload_local_results")
        if _ignores_disk(bazel_version):
            flags.append("--incompatible_remote_results_ignore_disk")
    if settings.remote_executor and settings.remote_platform:
        flags += [f"--remote_default_exec_properties={pair}" for pair in settings.remote_platform.split(",")]
    return flags


def notes(settings: Settings, toolchain_bin: Path) -> list[str]:
    """What the plan says about the remote cache and executor."""
    out = []
    if enabled(settings):
        where = secrets.redact_url(settings.remote_cache or settings.remote_executor)
        use = "read and written" if settings.remote_upload else "read only (--remote-upload off)"
        out.append(
            f"remote cache {where}: {use}; bazel's action keys hold PATH, CC, CXX, AR and NM, which name the "
            f"toolchain links in {toolchain_bin}: machines share hits with the same cache directory path and PATH"
        )
    if settings.remote_executor:
        shown = secrets.redact_url(settings.remote_executor)
        props = settings.remote_platform or "none"
        out.append(f"remote executor {shown} (untested here: docs/remote-cache.md), platform properties: {props}")
    return out


def before_build(settings: Settings) -> list[Action]:
    """With an executor: CheckEndpoints for it and a gRPC cache (without one, bazel builds on without a cache)."""
    if not settings.remote_executor:
        return []
    what = {"remote_cache": "remote cache", "remote_executor": "remote executor"}
    endpoints = tuple(
        (what[flag], secrets.split_credentials(url)[0]) for flag, url in _urls(settings) if url.startswith("grpc")
    )
    return [CheckEndpoints(endpoints=endpoints)]


def after_build(settings: Settings, log: Path) -> list[Action]:
    """ReportRemoteCache, when bazel had a remote cache."""
    if not enabled(settings):
        return []
    return [ReportRemoteCache(log=log, url=secrets.redact_url(settings.remote_cache or settings.remote_executor))]


@dataclasses.dataclass(frozen=True, kw_only=True)
class CheckEndpoints(Action):
    """With an executor bazel stops at start when it or a gRPC cache is down: say which in one line, first."""

    endpoints: tuple[tuple[str, str], ...]  # (what, URL without credentials)

    def render(self) -> str:
        urls = ", ".join(f"the {what} {url}" for what, url in self.endpoints)
        return f"connect to {urls} (TCP, {CONNECT_TIMEOUT:.0f} s): bazel stops at start when one is down"

    def perform(self, ex: Executor) -> None:
        for what, url in self.endpoints:
            parts = urllib.parse.urlsplit(url)
            try:
                with socket.create_connection((parts.hostname or "", parts.port or GRPC_DEFAULT_PORT), CONNECT_TIMEOUT):
                    pass
            except OSError as exc:
                raise StepFailed(
                    f"the {what} {url} cannot be reached ({exc.strerror or exc}), and bazel stops without it",
                    hint=f"start it or correct --{what.replace(' ', '-')}; leave it out to build without it",
                ) from None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportRemoteCache(Action):
    """After the build: bazel's remote cache hits, and once, why it could not use the cache if it warned."""

    log: Path
    url: str  # the cache (or executor) URL, credentials as ***

    def render(self) -> str:
        return (
            f"read bazel's output of this run in {self.log}: report its cache hits (from 'INFO: N processes: "
            "M remote cache hit, ...'; bazel counts hits of the local --disk_cache in) and, in one line, why it "
            "built without the remote cache if it warned that it could not use it"
        )

    def perform(self, ex: Executor) -> None:
        text = this_run(self.log)
        lines = [hits_line(text)]
        warned = sum(text.count(w) for w in _WARNINGS)
        if warned:
            warning = (
                f"bazel could not use the remote cache {self.url}: {reason(text)}; it built without it "
                f"({warned} warning{'s' if warned > 1 else ''}). Details in {self.log}"
            )
            ex.console.warning(warning)
            lines.append(f"warning: {warning}")
        ex.console.info(lines[0])
        with self.log.open("a") as fh:
            fh.write("".join(f"[istiobuild] {line}\n" for line in lines))


def this_run(log: Path) -> bytes:
    """The stage log from the last run's make command on (the log is appended to by every run)."""
    data = log.read_bytes() if log.exists() else b""
    starts = [m.end() + 1 for m in _RUN_START.finditer(data)]  # the line after the echo
    return data[starts[-1] :] if starts else data


def processes(text: bytes) -> tuple[int, dict[str, int]] | None:
    """bazel's last process summary: the total and each kind ("remote cache hit", "internal", "linux-sandbox")."""
    found = list(_PROCESSES.finditer(text))
    if not found:
        return None
    total, parts = found[-1].groups()
    kinds: dict[str, int] = {}
    for part in (parts or b"").decode(errors="replace").split(", "):
        count, _, kind = part.partition(" ")
        if count.isdigit() and kind:
            kinds[kind] = kinds.get(kind, 0) + int(count)
    return int(total), kinds


def hits_line(text: bytes) -> str:
    """e.g. "remote cache: 4 of 4 actions hit"; the actions are bazel's processes less its internal ones."""
    summary = processes(text)
    if summary is None:
        return "remote cache: bazel printed no process summary (see the log)"
    total, kinds = summary
    ran = total - kinds.get("internal", 0)
    if ran <= 0:
        return "remote cache: no action ran (bazel's outputs were up to date)"
    hits = kinds.get("remote cache hit", 0)
    rest = ", ".join(f"{n} {kind}" for kind, n in kinds.items() if kind not in ("internal", "remote cache hit"))
    return f"remote cache: {hits} of {ran} actions hit" + (f" ({rest} ran)" if rest else "")


def reason(text: bytes) -> str:
    """Why bazel could not use the cache, from its first warning's detail."""
    start = min((i for i in (text.find(w) for w in _WARNINGS) if i >= 0), default=0)
    detail = text[start : start + 4000]
    refused, unreachable = _REFUSED.search(detail), _UNREACHABLE.search(detail)
    if refused:
        why = refused.group(1).decode()
        return f"it refused bazel's requests ({why}): check the remote header and the URL's credentials"
    if unreachable:
        return f"it is unreachable ({unreachable.group(1).decode()}): is it running, is the URL right?"
    return "its requests failed"

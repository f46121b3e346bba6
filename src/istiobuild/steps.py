"""Typed plan steps: a command that runs exactly as printed, or a named action with typed arguments."""

from __future__ import annotations

import abc
import dataclasses
import enum
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from istiobuild.arch import Arch
from istiobuild.config import Settings
from istiobuild.layout import Layout
from istiobuild.modes import Mode
from istiobuild.release import Component, Release
from istiobuild.sources import Source
from istiobuild.toolchain import Toolchain

if TYPE_CHECKING:
    from istiobuild.executor import Executor


class StageName(enum.Enum):
    CHECKOUT = "checkout"
    PATCH = "patch"
    TOOLCHAIN = "toolchain"
    PROXY = "proxy"
    ISTIO = "istio"
    IMAGES = "images"
    VERIFY = "verify"
    RELEASE = "release"
    PUBLISH = "publish"
    RECORD = "record"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Command:
    """An external command: the executor runs argv in cwd with the caller's clean environment plus env."""

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str = ""

    def render(self) -> str:
        """A line that can be pasted into a shell and runs the same command."""
        delta = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        prefix = f"env {delta} " if delta else ""
        return f"(cd {shlex.quote(str(self.cwd))} && {prefix}{shlex.join(self.argv)})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Action(abc.ABC):
    """Work istiobuild does itself (git plumbing, docker API, file placement), shown as what it does."""

    @abc.abstractmethod
    def render(self) -> str:
        """What the action does, in words, with every argument."""

    @abc.abstractmethod
    def perform(self, ex: Executor) -> None:
        """Do it (never called on a dry run)."""


Step = Command | Action


@dataclasses.dataclass(frozen=True, kw_only=True)
class Stage:
    """One stage of the plan: its steps and what its stamp covers."""

    name: StageName
    summary: str
    steps: tuple[Step, ...]
    reads: tuple[Path, ...] = ()  # checkouts whose working-tree state is an input
    consumes: tuple[Path, ...] = ()  # files whose sha256 is an input
    produces: tuple[Path, ...] = ()  # files whose sha256 is recorded and re-checked before a skip
    trees: tuple[Path, ...] = ()  # checkouts whose resulting working tree is an output (patch)
    heads: tuple[Path, ...] = ()  # checkouts whose HEAD commit is an output (checkout)
    images: tuple[str, ...] = ()  # images whose IDs are outputs
    secret_files: tuple[Path, ...] = ()  # removed when the stage ends, however it ends
    bazel_roots: tuple[Path, ...] = ()  # bazel servers that belong to the stage's commands
    notes: tuple[str, ...] = ()


def encode(obj: Any) -> Any:
    """Plan objects as JSON-ready data (actions carry their class name and what they do)."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = {f.name: encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        if isinstance(obj, Action):
            data = {"action": type(obj).__name__, "does": obj.render(), **data}
        elif isinstance(obj, Command):
            data = {"command": obj.render(), **data}
        return data
    if isinstance(obj, Mapping):
        return {str(k): encode(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list, frozenset, set)):
        return [encode(v) for v in obj]
    return obj


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanInput:
    """Everything a stage's plan is made from (pure data: no I/O)."""

    release: Release
    arch: Arch
    host: Arch  # what the stage commands run on: the target itself in a builder container (native or emulated)
    mode: Mode  # native, cross or emulated (modes.decide)
    toolchain: Toolchain
    settings: Settings
    layout: Layout
    sources: Mapping[Component, Source]
    page_size: str
    allocator: str  # envoy's: tcmalloc or gperftools (kernel.choose_allocator)
    tag: str
    ci: bool = False

    def checkout(self, component: Component) -> Path:
        return self.layout.checkout(component)

    @property
    def arch_tag(self) -> str:
        """The per-arch tag of the final images (`manifest` joins them)."""
        return f"{self.tag}-{self.arch.goarch}"

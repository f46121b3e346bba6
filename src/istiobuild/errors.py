"""The error hierarchy. Every failure a user can cause is one of these; the CLI prints one message."""

from __future__ import annotations

from pathlib import Path


class IstiobuildError(Exception):
    """A failure with a message for humans: what failed, why, what to do, where the log is."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", log: Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.log = log

    def render(self) -> str:
        parts = [f"error: {self.message}"]
        if self.hint:
            parts.append(self.hint)
        if self.log is not None:
            parts.append(f"full log: {self.log}")
        return "\n".join(parts)


class UsageError(IstiobuildError):
    """Bad input on the command line or in config."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file or environment variable is wrong."""


class DataError(IstiobuildError):
    """A shipped data file (release matrix, series, toolchain profile) is invalid."""

    exit_code = 3


class SourceError(IstiobuildError):
    """Fetching or checking out an upstream repository failed."""

    exit_code = 4


class PatchError(IstiobuildError):
    """A patch series does not apply."""

    exit_code = 5


class ToolError(IstiobuildError):
    """A required tool is missing, too old or failed."""

    exit_code = 6


class StepFailed(IstiobuildError):
    """A build step exited non-zero."""

    exit_code = 7


class Interrupted(IstiobuildError):
    """The user pressed Ctrl-C."""

    exit_code = 130

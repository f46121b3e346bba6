"""The one choke point for side effects: every planned step runs (or, on a dry run, is only shown) here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from istiobuild.config import Settings
from istiobuild.console import Console
from istiobuild.layout import Layout
from istiobuild.release import Release
from istiobuild.run import Result, run
from istiobuild.steps import Action, Command, Stage, Step


@dataclasses.dataclass(kw_only=True)
class Executor:
    """Runs steps for one build; actions reach the build's settings, paths and console through it."""

    settings: Settings
    release: Release
    layout: Layout
    console: Console
    dry_run: bool = False
    force: bool = False
    allow_modified: bool = False
    stage: Stage | None = None
    _docker: Any = None

    @property
    def log(self) -> Path:
        return self.layout.log(self.stage.name.value if self.stage else "build")

    def secrets(self) -> list[str]:
        """Values that must never reach a log or the screen."""
        from istiobuild import secrets

        found = [self.settings.remote_header]
        urls = (self.settings.remote_cache, self.settings.remote_executor, self.settings.mirror)
        for url in (*urls, *self.settings.repos.values()):
            userinfo = secrets.split_credentials(url)[1]
            found += [userinfo, userinfo.partition(":")[2]] if userinfo else []  # never the bare user name
        return [s for s in found if s]

    def step(self, step: Step) -> None:
        if self.dry_run:
            self.console.info(("would run: " if isinstance(step, Command) else "would ") + step.render())
            return
        if isinstance(step, Command):
            self.command(step)
        else:
            assert isinstance(step, Action)
            step.perform(self)

    def command(self, cmd: Command) -> Result:
        """A planned command, logged in full to the stage's log, its tail on screen when it fails."""
        title = f"{self.stage.name.value if self.stage else 'build'}: {' '.join(cmd.argv[:2])}"
        with self.console.live(title, self.log) as on_line:
            return run(
                cmd.argv,
                cwd=cmd.cwd,
                env=cmd.env,
                log=self.log,
                secrets=self.secrets(),
                on_line=on_line,
                bazel_roots=self.stage.bazel_roots if self.stage else (),
                what=f"stage {title}",
            )

    def docker(self) -> Any:
        """The docker SDK client (connected on first use)."""
        if self._docker is None:
            from istiobuild import dockerapi

            self._docker = dockerapi.client()
        return self._docker

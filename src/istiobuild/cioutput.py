"""What CI systems make of output: GitHub Actions workflow commands, job summary and outputs; GitLab sections.

GitHub Actions (GITHUB_ACTIONS=true): `::group::`/`::endgroup::` fold a stage, `::error`/`::warning`
annotate the run (data and properties escaped as the workflow-command spec says), Markdown appended
to $GITHUB_STEP_SUMMARY is the job summary, `name=value` lines appended to $GITHUB_OUTPUT are the
step's outputs (a value with a line break uses the `name<<DELIMITER` form). GitLab CI (GITLAB_CI=true):
collapsible sections. Everything written here passes through the secrets redactor first.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from istiobuild.secrets import redact

if TYPE_CHECKING:
    from istiobuild.console import BuildSummary, ImageResult

Flavor = Literal["github", "gitlab", ""]


def flavor(env: Mapping[str, str]) -> Flavor:
    """Which CI system runs us, from the variables each one sets ("" = none we write for)."""
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    if env.get("GITLAB_CI") == "true":
        return "gitlab"
    return ""


# -- GitHub Actions workflow commands


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: str) -> str:
    """One workflow command line, e.g. `::error title=stage proxy failed::make failed (log: ...)`."""
    props = ",".join(f"{k}={escape_property(redact(v))}" for k, v in properties.items())
    return f"::{name}{' ' + props if props else ''}::{escape_data(redact(message))}\n"


def group(title: str) -> str:
    return command("group", title)


def endgroup() -> str:
    return "::endgroup::\n"


def _append(path: str, text: str) -> None:
    if path:
        with Path(path).open("a", encoding="utf-8") as fh:
            fh.write(redact(text))


def write_summary(env: Mapping[str, str], markdown: str) -> None:
    _append(env.get("GITHUB_STEP_SUMMARY", ""), markdown)


def output_lines(name: str, value: str) -> str:
    """`name=value`, or the multi-line form with a delimiter that is not in the value."""
    if "\n" not in value and "\r" not in value:
        return f"{name}={value}\n"
    delimiter = f"ghadelimiter_{os.urandom(16).hex()}"
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def write_outputs(env: Mapping[str, str], outputs: Mapping[str, str]) -> None:
    _append(env.get("GITHUB_OUTPUT", ""), "".join(output_lines(k, redact(v)) for k, v in outputs.items()))


# -- GitLab CI sections


def section_name(text: str) -> str:
    """GitLab allows letters, digits, '_', '.' and '-' in a section name."""
    return "istiobuild_" + re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def section_start(name: str, title: str) -> str:
    """A collapsed section: the stage's output folds away under its title; its `done` line follows the end."""
    return f"\x1b[0Ksection_start:{int(time.time())}:{section_name(name)}[collapsed=true]\r\x1b[0K{redact(title)}\n"


def section_end(name: str) -> str:
    return f"\x1b[0Ksection_end:{int(time.time())}:{section_name(name)}\r\x1b[0K\n"


# -- the end of a build on GitHub: job summary and outputs


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    names = list(head)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def verdict(image: ImageResult) -> str:
    """`4 checks passed`, or what failed."""
    failed = [what for ok, what in image.findings if not ok]
    if not image.findings:
        return "not verified"
    if not failed:
        return f"{len(image.findings)} checks passed"
    return f"{len(failed)} of {len(image.findings)} checks FAILED: " + "; ".join(failed)


def markdown(summary: BuildSummary) -> str:
    """The job summary: stages with times and cache state, images with IDs/digests and verification, the record."""
    status = f"failed: {summary.error}" if summary.error else "built"
    lines = [f"### istiobuild: {summary.title}, {_cell(status)}", ""]
    lines += _table(
        ("stage", "result", "time"),
        ((s.name, s.state, f"{s.seconds:.1f} s" if s.state != "up to date" else "") for s in summary.stages),
    )
    if summary.images:
        pushed = any(i.digest for i in summary.images)  # a digest column only when the build pushed
        head = ("image", "image ID", *(("registry digest",) if pushed else ()), "verification")
        rows = (
            (_code(i.reference), _code(i.image_id), *((_code(i.digest),) if pushed else ()), verdict(i))
            for i in summary.images
        )
        lines += ["", *_table(head, rows)]
        findings = [
            f"- {'ok' if ok else '**FAILED**'} `{i.reference}`: {what}"
            for i in summary.images
            for ok, what in i.findings
        ]
        if findings:
            lines += ["", "<details><summary>verification findings</summary>", "", *findings, "", "</details>"]
    lines += ["", f"build record: `{summary.record}`" if summary.record else f"output: `{summary.out_dir}`", "", ""]
    return "\n".join(lines)


def outputs(summary: BuildSummary) -> dict[str, str]:
    """record (when the build wrote one), out, and images as compact JSON {reference: digest or image ID}."""
    found = {"record": str(summary.record)} if summary.record else {}
    images = {i.reference: i.identity for i in summary.images if i.identity}
    return {**found, "out": str(summary.out_dir), "images": json.dumps(images, separators=(",", ":"))}

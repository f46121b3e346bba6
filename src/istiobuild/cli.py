"""The `istiobuild` console script: the same tasks as `invoke` in a checkout."""

from __future__ import annotations

import difflib

from invoke.exceptions import Exit, ParseError
from invoke.program import Program

from istiobuild import __version__
from istiobuild.tasks import OPTIONS, flag, ns


class IstiobuildProgram(Program):
    """invoke's program, but a flag it does not know is one `error:` line and exit 2, like any bad input."""

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            text = str(exc)
            unknown = text.split("'")[1] if text.count("'") >= 2 else ""
            known = [flag(n) for n in OPTIONS]
            close = difflib.get_close_matches(unknown, known, n=1)
            if unknown in known:  # a flag of another task
                hint = "this task does not take it; `istiobuild --help <task>` lists the flags each task takes"
            else:
                hint = f"did you mean {close[0]}?" if close else "`istiobuild --help <task>` lists the flags"
            what = f"unknown option {unknown}" if unknown.startswith("-") else text.rstrip("!")
            raise Exit(f"error: {what}\n{hint}", code=2) from None


def main() -> None:
    IstiobuildProgram(namespace=ns, version=__version__, name="istiobuild", binary="istiobuild").run()


if __name__ == "__main__":
    main()

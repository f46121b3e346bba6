"""The `istiobuild` console script: the same tasks as `invoke` in a checkout."""

from __future__ import annotations

from invoke.program import Program

from istiobuild import __version__
from istiobuild.tasks import ns


def main() -> None:
    Program(namespace=ns, version=__version__, name="istiobuild", binary="istiobuild").run()


if __name__ == "__main__":
    main()

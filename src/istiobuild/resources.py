"""Where the shipped data (releases/, patches/, toolchains/, examples/) lives.

In a checkout (editable install) it is the repository root; in a wheel it is istiobuild/_data.
"""

from __future__ import annotations

import functools
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_DATA_DIRS = ("releases", "patches", "toolchains", "examples")


@functools.cache
def data_root() -> Path:
    """The directory holding releases/, patches/, toolchains/ and examples/."""
    checkout = _PACKAGE.parent.parent
    if (checkout / "releases").is_dir() and (checkout / "patches").is_dir():
        return checkout
    return _PACKAGE / "_data"


def data_dir(name: str) -> Path:
    assert name in _DATA_DIRS, name
    return data_root() / name


def relative(path: Path) -> str:
    """A data path as the user sees it in the repository (patches/envoy/...)."""
    try:
        return path.resolve().relative_to(data_root()).as_posix()
    except ValueError:
        return str(path)

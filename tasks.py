"""invoke tasks for istiobuild: thin wrappers over the importable package (src/istiobuild)."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from istiobuild.tasks import ns
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from istiobuild.tasks import ns

__all__ = ["ns"]

"""invoke tasks for istiobuild: thin wrappers over the importable package (src/istiobuild).

`invoke` in this checkout always runs this checkout's package, whatever else is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from istiobuild.tasks import ns

__all__ = ["ns"]

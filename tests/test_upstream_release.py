"""The release defaults and the archive layout of every real release that has them, against the real istio tree.

For each release: the generated patch that sets the default hub and tag is made on the real files after the arch's
patch series (1.5.x: istio's own operator/scripts/run_update_charts.sh regenerates operator/pkg/vfs/assets.gen.go
with go-bindata) and `git apply --check`s with the series; every file and directory the archive takes exists at
the pin, and every file it takes that names the upstream hub (`hub: gcr.io/istio-testing`) is one the patch sets;
`plan` names the files. Needs ISTIOBUILD_UPSTREAM_MIRRORS (see tests/test_upstream.py); skipped otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import invoke
from istiobuild import release, upstream
from istiobuild.arch import Arch

MIRRORS = os.environ.get("ISTIOBUILD_UPSTREAM_MIRRORS", "")
WITH_DEFAULTS = [v for v, r in release.matrix().items() if not r.example and r.defaults is not None]

pytestmark = [
    pytest.mark.upstream,
    pytest.mark.skipif(not MIRRORS or not Path(MIRRORS).is_dir(), reason="ISTIOBUILD_UPSTREAM_MIRRORS not set"),
]


@pytest.mark.parametrize("version", WITH_DEFAULTS)
def test_defaults_patch_and_archive_sources_on_the_real_tree(version: str, tmp_path: Path) -> None:
    rel = release.get(version)
    assert rel.defaults is not None
    outcome = upstream.check_defaults(rel, Path(MIRRORS), Arch.AARCH64, tmp_path, tmp_path / "log")
    assert set(rel.defaults.files) <= set(outcome.files)
    assert set(rel.defaults.generated) <= set(outcome.files)
    assert outcome.missing_sources == ()
    assert outcome.unlisted == (), f"the archive would ship these naming {rel.defaults.hub}: {outcome.unlisted}"
    print(f"{version}: {len(outcome.files)} files, patch {outcome.patch_bytes} bytes: {', '.join(outcome.files)}")


@pytest.mark.parametrize("version", ["1.4.7", "1.5.0"])
def test_plan_names_the_files_that_set_the_defaults(version: str, tmp_path: Path) -> None:
    proc = invoke(
        "plan", "--release", version, "--arch", "aarch64", "--host", "aarch64", "--workdir", str(tmp_path),
        "--hub", "registry.example/istio",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rel = release.get(version)
    assert rel.defaults is not None
    for path, tag in rel.defaults.files.items():
        assert f"{path} (hub gcr.io/istio-testing, tag {tag})" in proc.stdout
    assert f"istio-{version}-linux-arm64.tar.gz" in proc.stdout
    if rel.defaults.regenerate:
        assert "regenerate operator/pkg/vfs/assets.gen.go by running `bash operator/scripts/run_update_charts.sh`" in (
            proc.stdout
        )

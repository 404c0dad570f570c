"""pyproject builds a wheel and an sdist that carry the entry point and everything shipped."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: the build uses the venv's setuptools instead of fetching one.
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation",
         "--outdir", str(out), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )
    return out


def test_wheel_has_the_package_its_data_and_the_entry_point(dist: Path) -> None:
    [wheel] = dist.glob("wattgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("wattgate/cli.py", "wattgate/daemon/app.py", "wattgate/boards/rk3588.py",
                   "wattgate/data/face.png", "wattgate/py.typed"):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "bench/"))]
    [entry_points] = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "wattgate = wattgate.cli:main" in text


def test_sdist_has_what_distributors_build_from(dist: Path) -> None:
    [sdist] = dist.glob("wattgate-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for needed in ("pyproject.toml", "LICENSE", "README.md", "config.toml",
                   "systemd/wattgate.service", "systemd/wattgate.socket",
                   "systemd/60-wattgate.rules", "docs/protocol.md",
                   "packaging/debian/control", "wattgate/data/face.png"):
        assert needed in names, needed

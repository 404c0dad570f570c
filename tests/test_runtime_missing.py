"""A machine without a TFLite runtime (a fresh Debian install: neither wheel is packaged,
README.Debian): `run` and `check-config` say so and exit 69, which the unit's
RestartPreventExitStatus= does not retry; an ImportError's traceback and exit 1 had systemd
restart the daemon every RestartSec=.

This machine has a runtime, so each run hides it: a directory first on PYTHONPATH holds an
`ai_edge_litert` and a `tflite_runtime` package whose import fails, as a missing one does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import tree_snapshot, write_config
from tests.fixtures.boards import materialize
from wattgate.drivers.inference import default_model_path

MISSING = "no TFLite runtime installed"


@pytest.fixture
def no_runtime(tmp_path: Path) -> dict[str, str]:
    """The environment of a wattgate process that finds no TFLite runtime."""
    hidden = tmp_path / "hidden"
    for package in ("ai_edge_litert", "tflite_runtime"):
        (hidden / package).mkdir(parents=True)
        (hidden / package / "__init__.py").write_text(
            f"raise ImportError('{package} is hidden from this test')\n")
    path = os.pathsep.join(p for p in (str(hidden), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def wattgate(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattgate.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_check_config_names_the_missing_runtime(tmp_path: Path,
                                                no_runtime: dict[str, str]) -> None:
    config = write_config(tmp_path / "config.toml", tmp_path)
    config.write_text(config.read_text()
                      + f'[model.variants.small]\npath = "{default_model_path()}"\n')
    assert wattgate(dict(os.environ), "check-config", str(config)).returncode == 0
    proc = wattgate(no_runtime, "check-config", str(config))
    assert proc.returncode == 69, proc.stderr
    assert f"  model: {MISSING}: install 'ai-edge-litert'" in proc.stderr
    assert proc.stderr.count(MISSING) == 1  # the machine's, said once, not for each variant
    assert "Traceback" not in proc.stderr


def test_run_exits_69_and_leaves_the_board_as_it_found_it(tmp_path: Path,
                                                          no_runtime: dict[str, str]) -> None:
    root = materialize("rk3588", tmp_path / "board")
    before = tree_snapshot(root)
    config = write_config(tmp_path / "config.toml", tmp_path,
                          power={"sysfs_root": str(root)}, camera={"source": "synthetic:empty"})
    proc = wattgate(no_runtime, "run", "--config", str(config))
    assert proc.returncode == 69, proc.stderr
    assert f"wattgate: model: {MISSING}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert tree_snapshot(root) == before

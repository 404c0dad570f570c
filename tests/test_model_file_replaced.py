"""A loaded model does not depend on its file: an update that copies a new model over the
file in place (``cp new.tflite model.tflite``: truncate, then write, same inode) changes
nothing in the running model until it is loaded again, and a file truncated while the model
runs does not kill the process.

Real TFLite files from tests/tflite_builder.py: two classifiers that differ only in a
constant (every score 0.2, every score 0.7), so the scores say which file's weights ran."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.tflite_builder import mean_rgb_model
from wattgate.drivers.inference import Model

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    """(model.tflite holding the 0.2 model, the 0.7 model beside it), both the same size."""
    old = mean_rgb_model(tmp_path / "old.tflite", bias=0.2, gain=0.0)
    new = mean_rgb_model(tmp_path / "new.tflite", bias=0.7, gain=0.0)
    assert old.stat().st_size == new.stat().st_size
    model = tmp_path / "model.tflite"
    shutil.copyfile(old, model)
    return model, new


def scores(model: Model) -> list[float]:
    return [round(d.score, 3) for d in model.infer(np.zeros((32, 32, 3), np.uint8)).detections]


def test_a_new_model_copied_over_the_file_does_not_change_the_loaded_one(
    models: tuple[Path, Path],
) -> None:
    path, new = models
    model = Model.load(str(path), score_threshold=0.0)
    assert scores(model) == [0.2, 0.2, 0.2]
    inode = path.stat().st_ino
    shutil.copyfile(new, path)  # as cp does: the same file, truncated and written again
    assert path.stat().st_ino == inode
    assert scores(model) == [0.2, 0.2, 0.2]
    assert scores(Model.load(str(path), score_threshold=0.0)) == [0.7, 0.7, 0.7]


def test_a_model_runs_on_while_its_file_is_truncated_and_rewritten(
    models: tuple[Path, Path],
) -> None:
    """Run in a child process: with the file mapped, an inference over a truncated file
    dies of SIGBUS, which must fail this test rather than kill the test session."""
    path, new = models
    code = textwrap.dedent(f"""
        import shutil
        import numpy as np
        from wattgate.drivers.inference import Model
        model = Model.load({str(path)!r}, score_threshold=0.0)
        frame = np.zeros((32, 32, 3), np.uint8)
        def scores():
            return [round(d.score, 3) for d in model.infer(frame).detections]
        print("loaded", scores(), flush=True)
        open({str(path)!r}, "wb").close()  # cp's window: truncated, not yet written
        print("truncated", scores(), flush=True)
        shutil.copyfile({str(new)!r}, {str(path)!r})
        print("rewritten", scores(), flush=True)
    """)
    child = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines() == [
        "loaded [0.2, 0.2, 0.2]", "truncated [0.2, 0.2, 0.2]", "rewritten [0.2, 0.2, 0.2]"]

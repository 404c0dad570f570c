"""A model nothing refers to any more is freed at once, by reference counting.

A Model holds its TFLite interpreter, and with it the tensor arena, the XNNPACK thread
pool and any delegate's handle on an accelerator. A reload that changes the camera or the
model, and a switch of model variant, drop the old Model: if it sat in a reference cycle,
all of that stayed until the cycle collector happened to run, so a daemon reloaded a few
times grew by threads and megabytes, and a new interpreter could find the accelerator still
held by the old one.
"""

from __future__ import annotations

import gc
import os
import weakref
from pathlib import Path
from typing import Any

from tests.conftest import write_config
from wattgate.drivers.inference import Model, default_model_path

#: Threads a daemon may start over its life besides those it had once it answered (a
#: worker that starts late); each interpreter kept alive added one or more per reload.
THREAD_MARGIN = 3


def test_a_dropped_model_is_freed_without_the_cycle_collector() -> None:
    """With the collector off, the last reference going frees the model and its preparer."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        model = Model.load(str(default_model_path()), threads=1)
        ref = weakref.ref(model)
        del model
        assert ref() is None, "the model outlived its last reference (a reference cycle)"
    finally:
        if was_enabled:
            gc.enable()


def test_a_model_used_and_then_dropped_is_freed_without_the_cycle_collector() -> None:
    """Running the model (its own preparer makes the input) leaves nothing that keeps it."""
    import numpy as np

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        model = Model.load(str(default_model_path()), threads=1)
        model.infer(np.zeros((48, 64, 3), np.uint8))
        preparer = model.preparer((64, 48), spares=1)
        model.run(preparer.prepare(np.zeros((48, 64, 3), np.uint8)))
        ref = weakref.ref(model)
        del model, preparer
        assert ref() is None, "the model outlived its last reference (a reference cycle)"
    finally:
        if was_enabled:
            gc.enable()


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_reloads_that_change_the_model_do_not_pile_up_threads(
    start_daemon: Any, tmp_path: Path
) -> None:
    """Ten reloads alternating model.threads between 1 and 2 each load a new interpreter
    and drop the old one: the daemon's thread count stays where it was."""
    camera = {"source": "synthetic:empty", "width": 320, "height": 240}
    daemon = start_daemon(camera=camera, model={"threads": 2})
    pid = daemon.proc.pid
    with daemon.connect() as client:
        client.request("status")
        start = threads_of(pid)
        for i in range(10):
            write_config(daemon.config, daemon.config.parent, camera=camera,
                         model={"threads": 1 + i % 2})
            reply = client.request("reload")
            assert reply["reloaded"], reply
            client.request("status")
        after = threads_of(pid)
    assert daemon.stop() == 0
    assert after <= start + THREAD_MARGIN, (start, after)


def test_a_model_swapped_out_of_a_pipeline_is_freed_at_once() -> None:
    """A variant switch hands the pipeline a new model; the capture thread's preparer held
    the old one (and its interpreter) until the next frame the gate let through, which on
    an idle scene is the next heartbeat."""
    from tests.test_infer_failures import OddFrames
    from wattgate.config import GateConfig
    from wattgate.daemon.pipeline import Pipeline
    from wattgate.policies.gating import MotionGate

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        old = Model.load(str(default_model_path()), threads=1)
        pipeline = Pipeline(OddFrames(bad=0, good=1), MotionGate(GateConfig()), old,
                            on_result=lambda _: None, on_motion=lambda *_: None)
        ref = weakref.ref(old)
        pipeline.swap_model(Model.load(str(default_model_path()), threads=1))
        del old
        assert ref() is None, "the swapped-out model outlived the swap"
    finally:
        if was_enabled:
            gc.enable()

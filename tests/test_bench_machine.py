"""Every benchmark reads the machine (its "load average at start") before it measures.

The 1-minute load average taken after a run counts the run's own load, so a quiet machine
would be reported as a contended one. Only the order of two calls is checked here: the
module's `machine` and its first step of work are replaced by markers that stop the run,
because the real ones would take the run's full length to tell the order apart.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest


class MachineRead(Exception):
    """machine() was called: the run stops there."""


class WorkStarted(Exception):
    """The measurement began before machine() was called."""


FIRST_WORK = {"bench.gate": "measure", "bench.quality": "measure", "bench.idle": "daemon",
              "bench.footprint": "daemon", "bench.pipeline": "make_scene",
              "bench.fanout": "make_scene"}


@pytest.mark.parametrize("module", sorted(FIRST_WORK))
def test_machine_is_read_before_the_measurement(module: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    bench = importlib.import_module(module)

    def machine() -> Any:
        raise MachineRead

    def work(*args: Any, **kwargs: Any) -> Any:
        raise WorkStarted

    monkeypatch.setattr(bench, "machine", machine)
    monkeypatch.setattr(bench, FIRST_WORK[module], work)
    with pytest.raises(MachineRead):
        bench.run(quick=True)

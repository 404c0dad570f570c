"""A devfreq device without available_frequencies: its range is what min_freq/max_freq read
before the daemon wrote them, not what a later discovery reads.

The controller discovers the board at every start: the first one, a structural reload
(after its own restore) and the start after a crash (after the journal's restore). A
restore the kernel refuses (EBUSY: a driver busy just then) leaves the daemon's own
narrower min/max in the files while the journal keeps the originals. A discovery that
took the range from those files scaled every profile's "100%" to the narrowed ceiling
for the whole run.

A plain file cannot answer EBUSY, so ``Busy`` refuses writes to chosen attributes while
the test says so, the way the kernel's store() would (as FaultyIO does); everything else
is the rk3588 tree with the NPU's table removed.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from tests.fixtures.boards import materialize
from tests.test_power_controller import MOTION, NPU, make, read
from wattgate.drivers.sysfs import OsIO

NPU_MAX = f"{NPU}/max_freq"


class Busy:
    """OS I/O that refuses writes to the attributes in ``busy`` (changed at will) with
    EBUSY."""

    def __init__(self, root: Path) -> None:
        self._os = OsIO()
        self._root = root
        self.busy: set[str] = set()

    def read_text(self, path: Path) -> str:
        return self._os.read_text(path)

    def write_text(self, path: Path, data: str) -> None:
        if os.path.realpath(path) in {os.path.realpath(self._root / a) for a in self.busy}:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        self._os.write_text(path, data)


def tableless_rk3588(root: Path) -> Path:
    """rk3588 with an NPU devfreq that lists no frequencies (a driver without an OPP
    table shows available_frequencies empty); min/max_freq give the range then."""
    materialize("rk3588", root)
    (root / NPU / "available_frequencies").write_text("\n")
    return root


def test_a_refused_restore_at_start_does_not_narrow_the_range(tmp_path: Path) -> None:
    root = tableless_rk3588(tmp_path / "sys")
    crashed, _ = make(tmp_path)
    crashed.start(0.0)
    assert read(root, NPU_MAX) == "300000000"  # idle: npu_max_hz 0% of 300 MHz - 1 GHz
    del crashed  # SIGKILL: the journal stays behind
    io = Busy(root)
    io.busy.add(NPU_MAX)
    pc, _ = make(tmp_path, io=io)
    pc.start(10.0)  # the journal's restore of max_freq is refused: 300 MHz stays
    assert read(root, NPU_MAX) == "300000000"
    io.busy.clear()
    assert pc.caps.npu is not None
    assert (pc.caps.npu.min_hz, pc.caps.npu.max_hz) == (300_000_000, 1_000_000_000)
    pc.on_gate(MOTION, 11.0)  # active: npu_max_hz 100%
    assert pc.settle(10.0)
    assert read(root, NPU_MAX) == "1000000000"
    pc.stop()
    assert read(root, NPU_MAX) == "1000000000"


def test_a_refused_restore_on_a_structural_reload_does_not_narrow_the_range(
    tmp_path: Path,
) -> None:
    root = tableless_rk3588(tmp_path / "sys")
    io = Busy(root)
    pc, _ = make(tmp_path, io=io)
    pc.start(0.0)
    assert read(root, NPU_MAX) == "300000000"  # idle
    changed = make(tmp_path, power={"runtime_pm_devices": ["/sys/devices/platform/dmc"]})[0]
    io.busy.add(NPU_MAX)
    pc.reload(changed.cfg, 2.0)  # structural: its stop's restore of max_freq is refused
    io.busy.clear()
    assert read(root, NPU_MAX) == "300000000"
    assert pc.caps.npu is not None and pc.caps.npu.max_hz == 1_000_000_000
    pc.on_gate(MOTION, 3.0)
    assert pc.settle(10.0)
    assert read(root, NPU_MAX) == "1000000000"
    pc.stop()
    assert read(root, NPU_MAX) == "1000000000"

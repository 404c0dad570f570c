"""A RAPL counter whose energy_uj read takes longer than a tick (a contended MSR read, a
virtualised RAPL) still gives the board's watts. Its answer comes a tick late and, on the
tick between, the one before stands in marked stale: paired with that tick's time it made
0 W, the next answer was divided by the wrong interval (double), and the tick psys first
became slow published package-0 as the whole board.

The slow counter is a real FIFO in place of psys's energy_uj, answered by a thread a while
after each read opens it, with the energy a steady draw would have used by then."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.boards import materialize
from wattgate.daemon.power_inputs import InputReader, stop_reading
from wattgate.drivers.sysfs import Sysfs

WATTS = 5.0
# Half the daemon's 1 s tick: the reader knows no tick, only the time between its reads,
# so what counts is that a read outlasts one tick and not two (by half a tick either way,
# room for a busy machine).
TICK_S = 0.5
SLOW_READ_S = 0.75


class SlowCounter:
    """A FIFO energy_uj: each read is answered `delay` seconds after it opens, with the
    microjoules WATTS has used since the start. Each answer ends with a fresh FIFO put in
    place: the next writer on the same one kept the reader from its end of file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.unlink()
        os.mkfifo(path)
        self.delay = 0.0
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._answer, daemon=True)
        self._thread.start()

    def _answer(self) -> None:
        while not self._stop.is_set():
            with open(self.path, "w", encoding="ascii") as fifo:  # waits for a reader
                if self._stop.wait(self.delay):
                    return
                used_uj = int(WATTS * 1e6 * (time.monotonic() - self.start)) + 1_000_000
                with contextlib.suppress(BrokenPipeError):
                    fifo.write(f"{used_uj}\n")
                    fresh = self.path.with_name("energy_uj.next")
                    os.mkfifo(fresh)
                    fresh.replace(self.path)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):  # let a writer waiting for a reader go
            os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
        self._thread.join(10)


@pytest.fixture
def slow_psys(tmp_path: Path) -> Iterator[tuple[Path, SlowCounter]]:
    root = materialize("intel-mtl", tmp_path / "sys")
    counter = SlowCounter(
        root / "devices/virtual/powercap/intel-rapl/intel-rapl:1/energy_uj")
    yield root, counter
    counter.close()
    stop_reading()


@pytest.mark.parametrize("slow_from", [0, 3], ids=["slow-from-the-start", "slow-later"])
def test_a_slow_psys_read_gives_the_board_watts_every_tick(
    slow_psys: tuple[Path, SlowCounter], slow_from: int,
) -> None:
    """Slow from the start, psys has not answered yet (its name unknown): package-0 does
    not stand in for it either."""
    root, counter = slow_psys
    reader = InputReader(Sysfs(root), {})
    seen: list[tuple[object, object, bool]] = []
    for tick in range(12):
        if tick == slow_from:
            counter.delay = SLOW_READ_S
        begun = time.monotonic()
        inputs = reader.read(begun)
        seen.append((inputs.meter_w, inputs.meter_source,
                     "powercap:intel-rapl:1" in inputs.stale))
        time.sleep(max(0.0, TICK_S - (time.monotonic() - begun)))
    for watts, source, _ in seen:
        assert source in (None, "RAPL psys"), seen  # never the package as the whole board
        assert watts is None or 3.0 < float(str(watts)) < 7.0, seen  # not 0 W, not double
    slow = seen[slow_from:]
    assert sum(w is not None for w, _, _ in slow) >= 4, seen
    assert any(stale and w is not None for w, _, stale in slow), seen  # the last watts

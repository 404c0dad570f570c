"""A frequency limit is written back at restore even when it reads as its original.

Since Linux 5.3 a cpufreq limit is a frequency QoS request, and a devfreq one a PM QoS
request: scaling_max_freq / max_freq show the lowest of all max requests, a cooling
device's cap among them, and scaling_min_freq / min_freq the highest floor clamped to that.
The daemon's raised ceiling read at a cap equal to the user's limit looked like the
original, so the restore called it unchanged, dropped the journal, and left the daemon's
request in the kernel: once the SoC cooled down the board ran above the user's ceiling.

The one thing not real here is the kernel's aggregation of requests, which a plain file
tree does not do (a file keeps the last text written): ``CappedLimits`` keeps each limit's
request apart from a cap and shows what the kernel would. The trees are the rk3588
fixture's, the journal, its lock and the controller real.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import pytest

from tests.fixtures.boards import materialize
from tests.test_power_controller import CPU, MOTION, NPU, make, read
from wattgate.daemon.power import PowerController
from wattgate.daemon.rollback import JournaledWriter, SysfsJournal, take_over
from wattgate.drivers.sysfs import OsIO, Sysfs

BIG = f"{CPU}/policy4"
PAIRS = {"scaling_min_freq": ("scaling_min_freq", "scaling_max_freq"),
         "scaling_max_freq": ("scaling_min_freq", "scaling_max_freq"),
         "min_freq": ("min_freq", "max_freq"),
         "max_freq": ("min_freq", "max_freq")}


class CappedLimits(OsIO):
    """Plain file I/O that shows frequency limits the way the kernel aggregates them: a
    store to a floor or ceiling is a request kept apart, and the file shows the ceiling
    request held down to the cap (if any), the floor request held down to that ceiling
    (cpufreq: policy->max / policy->min from freq QoS; devfreq: devfreq_get_freq_range).
    A limit never stored to is taken as requested at what its file showed first."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}  # real path of a limit file -> its request
        self.caps: dict[str, int] = {}  # real path of the directory -> the cap

    @staticmethod
    def _pair(directory: Path, name: str) -> Optional[tuple[Path, Path]]:
        names = PAIRS.get(name)
        if names is None:
            return None
        return directory / names[0], directory / names[1]

    def write_text(self, path: Path, data: str) -> None:
        real = Path(os.path.realpath(path))
        pair = self._pair(real.parent, real.name)
        if pair is None:
            super().write_text(path, data)
            return
        self._requested(pair)
        self.requests[str(real)] = int(data.strip())
        self._show(real.parent, pair)

    def cap(self, directory: Path, value: Optional[int]) -> None:
        """A cooling device's cap on ``directory``'s ceiling set (or, None, lifted)."""
        real = Path(os.path.realpath(directory))
        pair = self._pair(real, "max_freq" if (real / "max_freq").exists()
                          else "scaling_max_freq")
        assert pair is not None
        self._requested(pair)
        if value is None:
            self.caps.pop(str(real), None)
        else:
            self.caps[str(real)] = value
        self._show(real, pair)

    def _requested(self, pair: tuple[Path, Path]) -> None:
        for limit in pair:
            self.requests.setdefault(str(limit), int(limit.read_text()))

    def _show(self, directory: Path, pair: tuple[Path, Path]) -> None:
        floor, ceiling = pair
        top = min(self.requests[str(ceiling)], self.caps.get(str(directory), 1 << 62))
        super().write_text(ceiling, f"{top}\n")
        super().write_text(floor, f"{min(self.requests[str(floor)], top)}\n")


# (limit, the user's value, what the daemon raises it to, the ceiling the cap sets)
LIMITS = [
    (f"{BIG}/scaling_max_freq", 1416000, 2400000, 1416000),
    (f"{BIG}/scaling_min_freq", 1416000, 2400000, 1416000),
    (f"{NPU}/max_freq", 600000000, 1000000000, 600000000),
    (f"{NPU}/min_freq", 600000000, 800000000, 600000000),
]


@pytest.mark.parametrize(("limit", "user", "raised", "capped"), LIMITS,
                         ids=[limit.rsplit("/", 2)[-2] + "/" + limit.rsplit("/", 1)[-1]
                              for limit, *_ in LIMITS])
def test_a_limit_reading_its_original_under_a_cap_is_written_back(
    tmp_path: Path, limit: str, user: int, raised: int, capped: int
) -> None:
    io = CappedLimits()
    root = materialize("rk3588", tmp_path / "sys")
    fs = Sysfs(root, io)
    fs.write_raw(limit, f"{user}\n")  # the user's own request, before any daemon
    journal = SysfsJournal(tmp_path / "journal", fs)
    JournaledWriter(journal).write(limit, str(raised), always=True)
    io.cap((root / limit).parent, capped)
    assert read(root, limit) == str(user)  # reads as the original: proves nothing

    report = journal.restore()
    assert limit in report.restored and limit not in report.unchanged
    assert not journal.path.exists()
    io.cap((root / limit).parent, None)  # the SoC cooled down
    assert read(root, limit) == str(user)


def user_limits(root: Path) -> dict[str, str]:
    """Ceilings of the user's below the hardware's: policy4 at 1416000, the NPU at 600 MHz."""
    (root / BIG / "scaling_max_freq").write_text("1416000\n")
    (root / NPU / "max_freq").write_text("600000000\n")
    return {f"{BIG}/scaling_max_freq": "1416000", f"{NPU}/max_freq": "600000000"}


def capped_at_the_originals(io: CappedLimits, root: Path) -> None:
    io.cap(root / BIG, 1416000)
    io.cap(root / NPU, 600000000)


def cooled_down(io: CappedLimits, root: Path) -> None:
    io.cap(root / BIG, None)
    io.cap(root / NPU, None)


def raised_over_user_limits(
    tmp_path: Path,
) -> tuple[CappedLimits, PowerController, Path, dict[str, str]]:
    """A controller on a fake RK3588 whose user limits (`user_limits`) its active profile
    has raised to the top: (its IO, it, the tree, the user limits)."""
    io = CappedLimits()
    materialize("rk3588", tmp_path / "sys")
    pc, root = make(tmp_path, io=io)
    users = user_limits(root)
    pc.start(0.0)
    pc.on_gate(MOTION, 1.0)  # the active profile raises both ceilings to the top
    return io, pc, root, users


def test_stop_under_a_cap_at_the_users_limit_gives_the_users_limit_back(
    tmp_path: Path,
) -> None:
    io, pc, root, users = raised_over_user_limits(tmp_path)
    assert read(root, f"{BIG}/scaling_max_freq") == "2400000"
    assert read(root, f"{NPU}/max_freq") == "1000000000"
    capped_at_the_originals(io, root)
    pc.stop()
    cooled_down(io, root)
    assert {attribute: read(root, attribute) for attribute in users} == users


def test_a_restore_after_a_crash_under_a_cap_gives_the_users_limit_back(
    tmp_path: Path,
) -> None:
    """take_over is the restore of the next start and of `wattgate restore` alike."""
    io, pc, root, users = raised_over_user_limits(tmp_path)
    del pc  # SIGKILL: no stop(), the journal stays behind
    capped_at_the_originals(io, root)
    lock, journal, report = take_over(tmp_path / "journal", Sysfs(root, io), create=True)
    lock.release()
    assert set(users) <= set(report.restored), report
    assert journal.attributes == []
    cooled_down(io, root)
    assert {attribute: read(root, attribute) for attribute in users} == users

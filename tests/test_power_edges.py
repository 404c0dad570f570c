"""Defects found in the power-control path: each test shows one on fake trees of real boards,
with real files and real processes (no mocks unless a test says why)."""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import run_as, tree_snapshot
from tests.fixtures.boards import materialize
from tests.test_power_controller import make
from wattgate.drivers.sysfs import OsIO
from wattgate.policies.gating import GateVerdict

CPU = "devices/system/cpu/cpufreq"
NPU = "class/devfreq/fdab0000.npu"
NPU_DEV = "devices/platform/fdab0000.npu"
MOTION = GateVerdict(True, "motion", 0.1, True, ((0, 0, 10, 10),))
QUIET = GateVerdict(False, "idle", 0.0, False, ())


def read(root: Path, attribute: str) -> str:
    return (root / attribute).read_text().strip()


class Busy(OsIO):
    """EBUSY for stores to one attribute while ``busy`` is set: the answer of a driver that
    refuses a change while it works (a devfreq governor switch during a job), which a plain
    file cannot give."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.busy = True

    def write_text(self, path: Path, data: str) -> None:
        if self.busy and os.path.realpath(path) == os.path.realpath(self.path):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        super().write_text(path, data)


# -- a full journal_dir ------------------------------------------------------------------------


def with_file_limit(limit: int, task: Callable[[], str]) -> str:
    """What task returns, run in a forked child whose files cannot grow past `limit` bytes
    (RLIMIT_FSIZE): a write past it fails with EFBIG for real, as one to a full disk does."""

    def limited() -> str:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core dump
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        return task()

    return run_as(os.geteuid(), os.getegid(), limited)


def test_a_journal_save_cut_short_by_a_full_disk_is_not_taken_for_a_saved_one(
    tmp_path: Path,
) -> None:
    """A write(2) to a filesystem that fills up stores what fits and returns the short
    count, without an error; only the next write fails (ENOSPC on a full tmpfs /run). The
    journal was renamed into place cut off mid-JSON, the sysfs writes went on, and after a
    SIGKILL the next start set the journal aside as unreadable: nothing was restored.

    RLIMIT_FSIZE gives that short write for real, in a child that then dies as SIGKILL
    leaves a daemon (os._exit, no stop())."""
    pc, root = make(tmp_path)
    before = tree_snapshot(root)

    def crash() -> str:
        pc.start(0.0)
        pc.on_gate(MOTION, 1.0)
        return "started"

    # Room for the journal of six knobs (~780 bytes), not seven: the NPU's autosuspend delay
    # is written (100 ms, then 10 ms active; 1000 on the board) and the governor is not.
    # The ceilings written before it are back at their originals once active.
    assert with_file_limit(830, crash) == "started"
    assert tree_snapshot(root) != before  # some knobs were written before the disk filled
    again, _ = make(tmp_path)
    again.start(10.0)
    again.stop()
    assert tree_snapshot(root) == before
    assert not (tmp_path / "journal" / "sysfs-journal.json.corrupt").exists()


# -- a crash whose restore the kernel refused at the next start -------------------------------


def test_an_original_the_start_could_not_restore_is_still_the_original_for_the_run(
    tmp_path: Path,
) -> None:
    """The journal keeps an attribute whose restore was refused (busy) for the next try, but
    the controller read the knob's value right after as its original: the crashed run's
    value. Idle leaves the NPU governor unset, so it was held at the crashed run's
    "performance" for the whole run, and status called that the original."""
    pc, root = make(tmp_path)
    pc.start(0.0)
    pc.on_gate(MOTION, 1.0)  # active: the NPU governor at performance
    assert read(root, f"{NPU}/governor") == "performance"
    del pc  # SIGKILL: no stop(); the journal stays
    io = Busy(root / NPU / "governor")
    again, _ = make(tmp_path, io=io)
    again.start(10.0)  # the restore of the governor is refused
    assert read(root, f"{NPU}/governor") == "performance"
    assert again.status()["knobs"][f"{NPU}/governor"]["original"] == "rknpu_ondemand"
    io.busy = False  # the driver takes stores again
    again.on_gate(MOTION, 11.0)
    again.on_gate(QUIET, 11.1)
    again.tick(20.0)  # idle again: the governor is given back
    assert again.settle(30.0)  # by the writer (a hang guard: the tree takes it at once)
    assert again.activity.state == "idle"
    assert read(root, f"{NPU}/governor") == "rknpu_ondemand"
    again.stop()


# -- more runtime-PM devices ------------------------------------------------------------------

GPU_DEV = "devices/platform/fb000000.gpu"


def test_a_runtime_pm_device_given_as_a_sys_path_follows_the_profile(tmp_path: Path) -> None:
    """power.npu takes "/sys/devices/..."; runtime_pm_devices turned the same spelling into
    "sys/devices/..." under the root, found no power/control there and dropped the device
    without a word: its runtime PM never followed the profile."""
    pc, root = make(tmp_path, power={"runtime_pm_devices": [f"/sys/{GPU_DEV}"],
                                     "profile": "performance"})
    pc.start(0.0)
    assert read(root, f"{GPU_DEV}/power/control") == "on"
    pc.stop()
    assert read(root, f"{GPU_DEV}/power/control") == "auto"



# -- a knob refused at start -------------------------------------------------------------------


def test_a_knob_refused_at_start_is_tried_again_until_it_takes(
    request: pytest.FixtureRequest,
) -> None:
    """udev hands the power attributes to the daemon's user, but the unit is ordered after
    the coldplug events are queued, not after they are handled: the first write can come
    before the chown and get EACCES. A failed knob was tried again only when its wanted
    value changed, so one the state kept wanting stayed unset for the whole run (here the
    idle NPU ceiling, for as long as the camera saw nothing).

    A real permission check, so the controller runs as another user (root passes any mode):
    the tree is that user's, the NPU ceiling read-only until "udev" makes it writable."""
    tmp_path = Path(tempfile.mkdtemp(prefix="wattgate-late-udev-"))  # reachable by that user
    request.addfinalizer(lambda: shutil.rmtree(tmp_path))
    pc_root = tmp_path / "sys"
    materialize("rk3588", pc_root)
    (tmp_path / "journal").mkdir()
    nobody = 65534
    for path in [tmp_path, *tmp_path.rglob("*")]:
        os.lchown(path, nobody, nobody)
    ceiling = pc_root / "devices/platform/fdab0000.npu/devfreq/fdab0000.npu/max_freq"
    ceiling.chmod(0o444)

    def start_then_grant() -> str:
        pc, root = make(tmp_path)
        pc.start(0.0)
        refused = read(root, str(ceiling.relative_to(root)))
        ceiling.chmod(0o644)  # udev's rule has run
        pc.tick(1.0)
        pc.tick(2.0)
        settled = pc.settle(30)  # the writer has made the tick's retry
        state = pc.activity.state
        taken = read(root, str(ceiling.relative_to(root))) if settled else "unsettled"
        pc.stop()
        return f"{state} {refused} {taken} {read(root, str(ceiling.relative_to(root)))}"

    assert run_as(nobody, nobody, start_then_grant) == "idle 1000000000 300000000 1000000000"


class NoAutosuspendIO(OsIO):
    """The kernel's answer for a device whose driver does not use autosuspend:
    autosuspend_delay_ms exists, and both its show and its store give EIO
    (drivers/base/power/sysfs.c). A plain file cannot say EIO, so this I/O does."""

    def __init__(self, root: Path, attribute: str) -> None:
        self.path = os.path.realpath(root / attribute)

    def _check(self, path: Path) -> None:
        if os.path.realpath(path) == self.path:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))

    def read_text(self, path: Path) -> str:
        self._check(path)
        return super().read_text(path)

    def write_text(self, path: Path, data: str) -> None:
        self._check(path)
        super().write_text(path, data)


def test_an_autosuspend_delay_the_driver_does_not_use_is_not_a_knob(tmp_path: Path) -> None:
    """Such a device was driven all the same: every write failed with EIO, was retried for
    the whole run and showed as a failed knob in status, for a setting the device has not."""
    npu_dev = "devices/platform/fdab0000.npu"
    attribute = f"{npu_dev}/power/autosuspend_delay_ms"
    root = materialize("rk3588", tmp_path / "sys")
    pc, _ = make(tmp_path, io=NoAutosuspendIO(root, attribute))
    pc.start(0.0)
    pc.tick(1.0)
    assert attribute not in pc.driven
    assert attribute not in pc.failed
    assert f"{npu_dev}/power/control" in pc.driven  # its runtime PM is still driven
    pc.stop()


def test_a_second_daemon_on_the_same_board_writes_nothing(tmp_path: Path) -> None:
    """Two daemons with their own journal_dir on one board (the service, and `wattgate run`
    with a test config) each journaled the other's settings as the board's originals, and
    whichever stopped last left the other's values behind for good."""
    first, root = make(tmp_path)
    before = tree_snapshot(root)
    first.start(0.0)
    assert first.writes
    second, _ = make(tmp_path, power={"journal_dir": str(tmp_path / "other-journal")})
    second.start(0.0)
    assert not second.writes
    assert not (tmp_path / "other-journal" / "sysfs-journal.json").exists()
    second.stop()
    first.stop()
    assert tree_snapshot(root) == before
    third, _ = make(tmp_path, power={"journal_dir": str(tmp_path / "other-journal")})
    third.start(0.0)  # the board is free again once the first has stopped
    assert third.writes
    third.stop()
    assert tree_snapshot(root) == before


def test_a_journal_that_cannot_be_saved_is_named_as_the_reason_no_knob_is_written(
    tmp_path: Path,
) -> None:
    """A full journal_dir (ENOSPC on a full tmpfs /run) refused every knob, rightly, but each
    refusal read as the store's own: "cannot set .../scaling_max_freq to 816000: [Errno 28]
    No space left on device", a driver problem on every knob, the journal named nowhere.

    RLIMIT_FSIZE fails the journal's first save for real (EFBIG), in a child."""
    pc, root = make(tmp_path)
    before = tree_snapshot(root)

    def start_and_stop() -> str:
        pc.start(0.0)
        pc.stop()
        return "\n".join(pc.failed.values()) or "nothing failed"

    failed = with_file_limit(16, start_and_stop).splitlines()
    journal = tmp_path / "journal" / "sysfs-journal.json"
    assert failed and all(f"cannot be saved in the sysfs journal {journal}" in why
                          and "not written" in why for why in failed), failed
    assert tree_snapshot(root) == before

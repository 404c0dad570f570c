"""A board found under the userspace governor gets its pinned frequency back, not only the
governor.

The userspace governor holds a frequency no other governor keeps: scaling_setspeed
(devfreq: userspace/set_freq, there only while that governor is on). Started again, it
pins whatever frequency the device runs at then (cpufreq_userspace_policy_start: setspeed
= policy->cur; devfreq's governor_userspace likewise), which is the one the daemon's
governor last chose. So the journal keeps the pinned frequency too, and gives it back
after the governor, at a stop and after a crash.

The daemons here run on a fake RK3588 tree; the kernel's part (a governor's start moving
the frequency, setspeed refused under another governor) cannot exist on plain files and
is played by simkernel.WatchIO, put in place of the daemon's file I/O.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import DaemonProcess, pinnable_board, write_config
from wattgate.drivers import cpufreq
from wattgate.simkernel import WatchIO

POLICY = f"{cpufreq.CPUFREQ}/policy0"
NPU = "class/devfreq/fdab0000.npu"
PINNED_KHZ = "1008000"  # a middle OPP of the RK3588's A55 cluster (408..1800 MHz)
PINNED_HZ = "600000000"  # a middle OPP of its NPU (300..1000 MHz)

# The daemon, with every Sysfs it opens on the simulated kernel's I/O.
ON_SIMULATED_KERNEL = """
import sys
import wattgate.drivers.sysfs as sysfs
from wattgate.simkernel import WatchIO
sysfs.OsIO = WatchIO
from wattgate.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def simulated(config: Path) -> list[str]:
    return [sys.executable, "-c", ON_SIMULATED_KERNEL, str(config)]


def pinned_board(tmp_path: Path) -> tuple[Path, Path]:
    """The config of a daemon whose profile is "performance", and its board's sysfs root:
    policy0 and the NPU found under userspace, pinned at a middle frequency."""
    config = pinnable_board(tmp_path, power={"profile": "performance"})
    root = config.parent / "sys"
    from wattgate.drivers.sysfs import Sysfs

    fs = Sysfs(root, WatchIO())  # the kernel's way there: governor first, then the pin
    fs.write(f"{POLICY}/scaling_governor", "userspace")
    fs.write(f"{POLICY}/scaling_setspeed", PINNED_KHZ)
    fs.write(f"{NPU}/governor", "userspace")
    fs.write(f"{NPU}/userspace/set_freq", PINNED_HZ)
    assert (root / POLICY / "scaling_cur_freq").read_text().strip() == PINNED_KHZ
    assert (root / NPU / "cur_freq").read_text().strip() == PINNED_HZ
    return config, root


def read(root: Path, attribute: str) -> str:
    try:
        return (root / attribute).read_text().strip()
    except FileNotFoundError:
        return "(missing)"


def wait_for_performance(daemon: DaemonProcess, root: Path) -> None:
    """Until the daemon has switched policy0 and the NPU to performance, which moves both
    to their top frequency."""
    deadline = time.monotonic() + 60.0
    while (read(root, f"{POLICY}/scaling_governor"), read(root, f"{NPU}/governor")) != (
            "performance", "performance"):
        assert daemon.proc.poll() is None, daemon.log()
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.05)
    assert read(root, f"{POLICY}/scaling_cur_freq") == "1800000"
    assert read(root, f"{POLICY}/scaling_setspeed") == "<unsupported>"
    assert read(root, f"{NPU}/userspace/set_freq") == "(missing)"


def pinned_state(root: Path) -> dict[str, str]:
    return {attribute: read(root, attribute) for attribute in (
        f"{POLICY}/scaling_governor", f"{POLICY}/scaling_setspeed", f"{POLICY}/scaling_cur_freq",
        f"{NPU}/governor", f"{NPU}/userspace/set_freq", f"{NPU}/cur_freq")}


PINNED = {
    f"{POLICY}/scaling_governor": "userspace",
    f"{POLICY}/scaling_setspeed": PINNED_KHZ,
    f"{POLICY}/scaling_cur_freq": PINNED_KHZ,
    f"{NPU}/governor": "userspace",
    f"{NPU}/userspace/set_freq": PINNED_HZ,
    f"{NPU}/cur_freq": PINNED_HZ,
}


def test_a_clean_stop_gives_back_the_pinned_frequency_after_the_governor(
    start_daemon: Any, tmp_path: Path,
) -> None:
    """The daemon drives performance over a pinned policy and NPU; at the stop both are
    under userspace again, pinned where they were, not at the top frequency performance
    left them at."""
    config, root = pinned_board(tmp_path)
    daemon = start_daemon(config=config, argv=simulated)
    wait_for_performance(daemon, root)
    assert daemon.stop() == 0, daemon.log()
    assert pinned_state(root) == PINNED, daemon.log()


def test_a_start_after_a_crash_gives_back_the_pinned_frequency(
    start_daemon: Any, tmp_path: Path,
) -> None:
    """SIGKILLed while it drives performance, the daemon leaves its journal; the next start,
    with a profile that sets nothing, restores the governor and then the pin."""
    config, root = pinned_board(tmp_path)
    daemon = start_daemon(config=config, argv=simulated)
    wait_for_performance(daemon, root)
    daemon.kill()
    journal_dir = config.parent / "journal"
    assert (journal_dir / "sysfs-journal.json").exists()

    run_dir = tmp_path / "after-crash"
    run_dir.mkdir()
    hands_off = write_config(
        run_dir / "config.toml", run_dir,
        power={"sysfs_root": str(root), "journal_dir": str(journal_dir), "profile": "hands_off"},
        profiles={"hands_off": {"description": "sets nothing"}},
    )
    again = start_daemon(config=hands_off, argv=simulated)
    again.connect().close()
    assert pinned_state(root) == PINNED, again.log()
    assert again.stop() == 0, again.log()
    assert pinned_state(root) == PINNED, again.log()


def test_a_pin_waits_in_the_journal_while_its_governor_cannot_go_back(tmp_path: Path) -> None:
    """devfreq's set_freq is there only under userspace: while the restore of the governor
    is refused, the pin is missing, and it stays in the journal with its governor for the
    next try rather than being dropped as an attribute gone for good."""
    from wattgate.daemon.rollback import JournaledWriter, SysfsJournal
    from wattgate.drivers.sysfs import Sysfs

    _, root = pinned_board(tmp_path)
    fs = Sysfs(root, WatchIO())
    journal = SysfsJournal(tmp_path / "journal", fs)
    JournaledWriter(journal).write(f"{NPU}/governor", "performance")
    # userspace unloaded meanwhile: the governor store is refused (EINVAL)
    (root / NPU / "available_governors").write_text("rknpu_ondemand performance\n")
    report = journal.restore()
    assert set(report.failed) == {f"{NPU}/governor", f"{NPU}/userspace/set_freq"}
    assert journal.original(f"{NPU}/userspace/set_freq") == PINNED_HZ + "\n"

    (root / NPU / "available_governors").write_text("userspace performance\n")
    assert journal.restore().ok
    assert (read(root, f"{NPU}/governor"), read(root, f"{NPU}/userspace/set_freq")) == (
        "userspace", PINNED_HZ)

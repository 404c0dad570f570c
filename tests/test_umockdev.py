"""Integration under umockdev: the board's NPU and a camera are udev devices, and the
drivers read and write them through the real /sys path (umockdev redirects /sys and
/dev through LD_PRELOAD, so the checks run in a python subprocess under umockdev-run).

The device description is written by hand in the umockdev-record format:
tests/fixtures/umockdev/rk3588.umockdev (the RK3588 NPU platform device with its
devfreq child and runtime PM, and a UVC camera's video4linux node).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICES = REPO / "tests" / "fixtures" / "umockdev" / "rk3588.umockdev"
UMOCKDEV_RUN = shutil.which("umockdev-run")

pytestmark = pytest.mark.skipif(
    UMOCKDEV_RUN is None,
    reason="umockdev-run is not installed (Debian package umockdev); CI installs it",
)

CHILD = r"""
import json, os, sys
import pyudev
from wattgate.daemon.rollback import JournaledWriter, SysfsJournal
from wattgate.drivers import devfreq, runtime_pm
from wattgate.drivers.accel import find_npu
from wattgate.drivers.inventory import probe, survey_cameras
from wattgate.drivers.sysfs import Sysfs

out = {"umockdev_dir": os.environ.get("UMOCKDEV_DIR")}
ctx = pyudev.Context()
out["udev_devfreq"] = [d.sys_name for d in ctx.list_devices(subsystem="devfreq")]
out["udev_parent"] = [d.parent.sys_name for d in ctx.list_devices(subsystem="devfreq")]
out["cameras"] = [[c.devnode, c.name, c.bus] for c in survey_cameras(ctx).cameras]
out["dev_node_exists"] = os.path.exists("/dev/video0")

fs = Sysfs("/sys")
npu = find_npu(fs)
out["npu"] = [npu.name, npu.vendor, npu.device, npu.devfreq]
dev = devfreq.read_devfreq(fs, npu.devfreq)
out["before"] = [dev.governor, dev.max_hz]

journal = SysfsJournal(sys.argv[1], fs)
w = JournaledWriter(journal)
devfreq.set_governor(w, dev, ["performance"])
devfreq.set_limits(w, dev, max_hz=650_000_000)
runtime_pm.set_control(w, npu.device, "on")
node = pyudev.Devices.from_path(ctx, "/sys/devices/platform/fdab0000.npu/devfreq/fdab0000.npu")
attrs = node.attributes
out["udev_sees_write"] = [attrs.asstring("governor"), attrs.asstring("max_freq")]
out["journal"] = journal.attributes
out["inventory_npu"] = probe("/sys", cameras=survey_cameras(ctx).cameras).accelerator("npu").name
report = journal.restore()
out["restored"] = report.restored
after = devfreq.read_devfreq(fs, npu.devfreq)
control = fs.read("devices/platform/fdab0000.npu/power/control")
out["after"] = [after.governor, after.max_hz, control]
print(json.dumps(out))
"""


def test_drivers_and_udev_under_umockdev(tmp_path: Path) -> None:
    assert UMOCKDEV_RUN is not None
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [UMOCKDEV_RUN, "-d", str(DEVICES), "--", sys.executable, "-c", CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["umockdev_dir"]  # /sys really was the testbed
    assert out["udev_devfreq"] == ["fdab0000.npu"]
    assert out["udev_parent"] == ["fdab0000.npu"]
    assert out["cameras"] == [["/dev/video0", "HD USB Camera", "usb"]]
    assert out["dev_node_exists"] is True
    assert out["npu"] == ["fdab0000.npu", "rknpu", "devices/platform/fdab0000.npu", "fdab0000.npu"]
    assert out["before"] == ["rknpu_ondemand", 1_000_000_000]
    assert out["udev_sees_write"] == ["performance", "600000000"]
    assert out["journal"] == [
        "class/devfreq/fdab0000.npu/governor",
        "class/devfreq/fdab0000.npu/max_freq",
        "devices/platform/fdab0000.npu/power/control",
    ]
    assert out["inventory_npu"] == "fdab0000.npu"
    assert out["after"] == ["rknpu_ondemand", 1_000_000_000, "auto"]
    assert not (tmp_path / "sysfs-journal.json").exists()

"""A battery that cannot be read is unknown, not fine: the rules it holds stay held, and the
failure shows in status and in the journal once. Fake intel-mtl trees (BAT0 discharging at
76 %, AC offline) read through the real power controller; real files, real symlinks."""

from __future__ import annotations

import errno
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DaemonProcess
from tests.fixtures.boards import materialize
from wattgate.config import parse_config
from wattgate.daemon import power_inputs
from wattgate.daemon.power import PowerController
from wattgate.drivers.sysfs import OsIO

BAT0 = "class/power_supply/BAT0"
LOW = {"battery_below": 80.0, "profile": "powersave"}  # BAT0 reads 76 %
LOW_ON_BATTERY = {"on_battery": True, "battery_below": 80.0, "profile": "powersave"}


@pytest.fixture(autouse=True)
def reads_never_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read of these files is never slow, but a loaded machine (CI, 2 cores) can take
    longer than SLOW_S over it, and the source is then read in the background: the next
    tick said "no answer" in place of the failure these tests look for. Slow reads are
    tested in tests/test_power_inputs_edges.py and tests/test_slow_sensors.py."""
    monkeypatch.setattr(power_inputs, "SLOW_S", 30.0)
    monkeypatch.setattr(power_inputs, "WAIT_S", 30.0)


class FailingReads(OsIO):
    """Reads of chosen files fail with an errno. A plain file cannot answer EIO or ENODEV
    as a fuel gauge on a flaky I2C bus does, so this one stands in for the driver."""

    def __init__(self) -> None:
        self.failing: dict[str, int] = {}

    def read_text(self, path: Path) -> str:
        err = self.failing.get(os.path.realpath(path))
        if err is not None:
            raise OSError(err, os.strerror(err), str(path))
        return super().read_text(path)


def controller(tmp_path: Path, rule: dict[str, Any], io: Any = None) -> tuple[
        PowerController, Path]:
    root = materialize("intel-mtl", tmp_path / "sys")
    cfg = parse_config({"power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")},
                        "rules": [rule]})
    return PowerController(cfg, io=io), root


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "BAT0" in r.getMessage()]


@pytest.mark.parametrize("rule", [LOW, LOW_ON_BATTERY])
def test_a_vanished_battery_keeps_the_low_battery_hold_until_it_reads_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, rule: dict[str, Any]
) -> None:
    pc, root = controller(tmp_path, rule)
    assert pc.start(0.0)[-1]["profile"] == "powersave"
    link = root / BAT0
    target = os.readlink(link)
    link.unlink()  # the power_supply device is unregistered for a while
    with caplog.at_level(logging.INFO, logger="wattgate.power"):
        for t in (1.0, 2.0, 3.0):
            events = pc.tick(t)
            assert [e for e in events if e["kind"] in ("battery", "profile_change")] == []
            assert pc.decision.profile == "powersave" and "held" in pc.decision.reason
            assert pc.status()["battery"] == {"name": "BAT0", "error": "gone"}
        assert len(warnings(caplog)) == 1  # once, not every poll
        link.symlink_to(target)
        assert pc.tick(4.0) == []
        battery = pc.status()["battery"]
        assert "error" not in battery and battery["percent"] == 76
        assert pc.decision.reason.startswith("battery 76 % below 80 %")
        # a good reading above the hysteresis is what lets go
        (link / "capacity").write_text("95\n")
        events = pc.tick(5.0)
    assert [(e["kind"], e.get("state") or e.get("profile")) for e in events] == [
        ("battery", "ok"), ("profile_change", "balanced")]
    assert any("BAT0 reads again" in r.getMessage() for r in caplog.records)
    pc.stop()


@pytest.mark.parametrize(("attribute", "err"), [
    ("capacity", errno.EIO), ("capacity", errno.ENODEV), ("status", errno.EIO)])
def test_a_failed_read_of_the_fuel_gauge_is_shown_and_holds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, attribute: str, err: int
) -> None:
    io = FailingReads()
    pc, root = controller(tmp_path, LOW_ON_BATTERY, io)
    assert pc.start(0.0)[-1]["profile"] == "powersave"
    io.failing[os.path.realpath(root / BAT0 / attribute)] = err
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        for t in (1.0, 2.0):
            assert pc.tick(t) == []
            assert pc.decision.profile == "powersave"
            assert os.strerror(err) in pc.status()["battery"]["error"]
    assert len(warnings(caplog)) == 1
    io.failing.clear()
    assert pc.tick(3.0) == [] and "error" not in pc.status()["battery"]
    pc.stop()


@pytest.mark.parametrize(("attribute", "text"), [
    ("capacity", b"N/A"), ("capacity", b""), ("capacity", b"\xff\xfe"),
    ("status", b"Dis\xffcharging"), ("status", b"")])
def test_garbage_in_the_capacity_or_status_is_an_error_not_a_reading(
    tmp_path: Path, attribute: str, text: bytes
) -> None:
    pc, root = controller(tmp_path, LOW_ON_BATTERY)
    (root / "class/power_supply/AC").unlink()  # battery only: its status says on battery
    assert pc.start(0.0)[-1]["profile"] == "powersave"
    (root / BAT0 / attribute).write_bytes(text + b"\n")
    pc.tick(1.0)
    battery = pc.status()["battery"]
    assert attribute in battery["error"] and pc.decision.profile == "powersave"
    pc.stop()


def test_the_daemon_shows_the_lost_battery_and_keeps_its_profile(
    start_daemon: Any, tmp_path: Path
) -> None:
    root = materialize("intel-mtl", tmp_path / "sys")
    daemon: DaemonProcess = start_daemon(
        power={"sysfs_root": str(root)},
        rules=[{"on_battery": True, "battery_below": 80.0, "profile": "powersave"}])
    with daemon.connect() as client:
        assert client.request("status")["power"]["profile"]["name"] == "powersave"
        seq = client.request("events", since=0)["last_seq"]
        link = root / BAT0
        target = os.readlink(link)
        link.unlink()
        status = wait_for(client, lambda s: "error" in s["power"].get("battery", {}))
        assert status["power"]["battery"] == {"name": "BAT0", "error": "gone"}
        assert status["power"]["profile"]["name"] == "powersave"
        link.symlink_to(target)
        status = wait_for(client, lambda s: "error" not in s["power"].get("battery", {}))
        assert status["power"]["profile"]["name"] == "powersave"
        changes = [e for e in client.request("events", since=seq)["events"]
                   if e.get("kind") in ("battery", "profile_change")]
        assert changes == []
    assert daemon.stop() == 0
    assert daemon.log().count("BAT0 cannot be read") == 1


def wait_for(client: Any, ok: Any, timeout: float = 30.0) -> dict[str, Any]:
    """The first status reply that satisfies `ok` (the daemon reads once a tick)."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = client.request("status")
        if ok(status):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def test_mains_online_is_on_mains_with_no_battery_listed(tmp_path: Path) -> None:
    """A fuel gauge that went away (or a board with none) left the power source unknown
    however plainly the mains was online: an on_battery rule stayed held on mains, and an
    on_battery = false rule could never hold on a mains-only board."""
    pc, root = controller(tmp_path, {"on_battery": True, "profile": "powersave"})
    assert pc.start(0.0)[-1]["profile"] == "powersave"  # BAT0 discharging, AC offline
    (root / BAT0).unlink()  # the fuel gauge's driver unbound
    pc.tick(1.0)
    assert pc.decision.profile == "powersave" and "held" in pc.decision.reason
    (root / "class/power_supply/AC/online").write_text("1\n")
    pc.tick(2.0)
    assert pc.decision.profile == "balanced"
    pc.stop()

    mains_only = tmp_path / "mains-only"
    pc, root = controller(mains_only, {"on_battery": False, "profile": "performance"})
    (root / BAT0).unlink()
    (root / "class/power_supply/AC/online").write_text("1\n")
    assert pc.start(0.0)[-1]["profile"] == "performance"
    pc.stop()


@pytest.mark.parametrize("capacity", ["101", "255", "-1"])
def test_a_capacity_out_of_range_is_an_error_shown_not_a_silent_gap(
    tmp_path: Path, capacity: str
) -> None:
    """An uncalibrated gauge's 255 or -1 was dropped without a word: the battery_below
    rule held and status gave no reason."""
    pc, root = controller(tmp_path, LOW_ON_BATTERY)
    assert pc.start(0.0)[-1]["profile"] == "powersave"
    (root / BAT0 / "capacity").write_text(capacity + "\n")
    pc.tick(1.0)
    battery = pc.status()["battery"]
    assert battery.get("percent") is None and f"capacity: {capacity}" in battery["error"]
    assert pc.decision.profile == "powersave" and "held" in pc.decision.reason
    pc.stop()

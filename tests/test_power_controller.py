"""The power controller on fake trees of real boards: what it writes, when, and that every
write is undone (on stop, and by the next start after a crash)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.conftest import run_as, tree_snapshot
from tests.fixtures.boards import FaultyIO, faults, materialize
from wattgate.config import parse_config
from wattgate.daemon.logs import MessageId
from wattgate.daemon.power import PowerController
from wattgate.drivers.sysfs import AttributeIO
from wattgate.policies.gating import GateVerdict
from wattgate.policies.load import LoadSample

CPU = "devices/system/cpu/cpufreq"
NPU = "class/devfreq/fdab0000.npu"
NPU_DEV = "devices/platform/fdab0000.npu"
MOTION = GateVerdict(True, "motion", 0.1, True, ((0, 0, 10, 10),))
QUIET = GateVerdict(False, "idle", 0.0, False, ())
COOLDOWN = GateVerdict(True, "cooldown", 0.0, False, ())
HEARTBEAT = GateVerdict(True, "heartbeat", 0.0, False, ())
SNAP = GateVerdict(True, "snap", 0.0, False, ())
# A hang guard for settle(): the writes go to a fake tree and take no time; never a timing.
HANG_S = 30.0




def read(root: Path, attribute: str) -> str:
    return (root / attribute).read_text().strip()


def make(
    tmp_path: Path,
    board: str = "rk3588",
    io: Optional[AttributeIO] = None,
    power: Optional[dict[str, Any]] = None,
    **sections: Any,
) -> tuple[PowerController, Path]:
    root = tmp_path / "sys"
    if not root.exists():
        materialize(board, root)
    raw: dict[str, Any] = {"power": {"sysfs_root": str(root),
                                     "journal_dir": str(tmp_path / "journal"), **(power or {})}}
    raw.update(sections)
    return PowerController(parse_config(raw), io=io), root


def knobs(root: Path) -> dict[str, str]:
    return {
        "npu_control": read(root, f"{NPU_DEV}/power/control"),
        "npu_autosuspend": read(root, f"{NPU_DEV}/power/autosuspend_delay_ms"),
        "npu_governor": read(root, f"{NPU}/governor"),
        "npu_max": read(root, f"{NPU}/max_freq"),
        "little_max": read(root, f"{CPU}/policy0/scaling_max_freq"),
        "big_max": read(root, f"{CPU}/policy4/scaling_max_freq"),
        "big_governor": read(root, f"{CPU}/policy4/scaling_governor"),
    }


IDLE = {"npu_control": "auto", "npu_autosuspend": "100", "npu_governor": "rknpu_ondemand",
        "npu_max": "300000000", "little_max": "816000", "big_max": "1200000",
        "big_governor": "schedutil"}
ACTIVE = {"npu_control": "auto", "npu_autosuspend": "10", "npu_governor": "performance",
          "npu_max": "1000000000", "little_max": "1800000", "big_max": "2400000",
          "big_governor": "schedutil"}


# -- start, wake, cooldown, stop ---------------------------------------------------------------


def test_start_applies_idle_and_stop_restores_the_tree(tmp_path: Path) -> None:
    pc, root = make(tmp_path)
    before = tree_snapshot(root)
    events = pc.start(0.0)
    assert events == [{"kind": "profile_change", "profile": "balanced",
                       "reason": "default (power.profile)", "source": "default"}]
    assert knobs(root) == IDLE
    assert (tmp_path / "journal" / "sysfs-journal.json").exists()
    assert pc.writes and pc.has_knobs
    pc.stop()
    assert tree_snapshot(root) == before
    assert not (tmp_path / "journal" / "sysfs-journal.json").exists()


def test_the_gate_firing_raises_the_npu_before_on_gate_returns(tmp_path: Path) -> None:
    pc, root = make(tmp_path)
    pc.start(0.0)
    assert pc.on_gate(MOTION, 1.0) is True
    assert knobs(root) == ACTIVE  # written before the frame could reach the model
    assert pc.activity.state == "active"
    events = pc.tick(1.5)
    assert {"kind": "activity", "state": "active", "previous": "idle",
            "reason": "motion"} in events
    pc.stop()


def test_motion_on_every_other_frame_sends_one_activity_event(tmp_path: Path) -> None:
    """Active and cooldown alternate with such frames: 15 events a second filled the
    event log, pushing out the history it is kept for."""
    pc, _root = make(tmp_path)
    pc.start(0.0)
    events = []
    for i in range(30):  # 2 s at 15 fps
        pc.on_gate(MOTION if i % 2 == 0 else COOLDOWN, 1.0 + i / 15.0)
        if i % 15 == 14:
            events += pc.tick(1.0 + i / 15.0)
    assert [e for e in events if e["kind"] == "activity"] == [
        {"kind": "activity", "state": "active", "previous": "idle", "reason": "motion"}
    ]
    assert pc.activity.state == "cooldown"
    assert pc.status()["activity"]["state"] == "cooldown"
    pc.stop()


def test_idle_active_cooldown_idle(tmp_path: Path) -> None:
    pc, root = make(tmp_path)
    pc.start(0.0)
    assert pc.on_gate(QUIET, 0.5) is False
    pc.on_gate(MOTION, 1.0)
    assert pc.on_gate(COOLDOWN, 1.1) is True  # the gate's own cooldown frames still infer
    assert pc.activity.state == "cooldown" and knobs(root) == ACTIVE
    assert pc.tick(2.0) == [  # cooldown shows in status, not as an event
        {"kind": "activity", "state": "active", "previous": "idle", "reason": "motion"},
    ]
    assert pc.settle(HANG_S)
    assert knobs(root) == ACTIVE
    events = pc.tick(3.0)  # cooldown_s = 2 after the last motion
    assert events == [{"kind": "activity", "state": "idle", "previous": "cooldown",
                       "reason": "no motion for 2 s"}]
    assert pc.settle(HANG_S)
    assert knobs(root) == IDLE
    pc.stop()


def test_snap_wakes_ahead_of_its_frame(tmp_path: Path) -> None:
    pc, root = make(tmp_path)
    pc.start(0.0)
    pc.on_snap(5.0)  # the event loop: it asks the writer and does not wait
    assert pc.settle(HANG_S)
    assert knobs(root) == ACTIVE
    assert pc.on_gate(SNAP, 5.05) is True
    pc.stop()


def test_crash_is_undone_by_the_next_start(tmp_path: Path, caplog: Any) -> None:
    pc, root = make(tmp_path)
    before = tree_snapshot(root)
    pc.start(0.0)
    pc.on_gate(MOTION, 1.0)
    assert tree_snapshot(root) != before
    del pc  # SIGKILL: no stop(), the journal stays behind
    again, _ = make(tmp_path)
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        again.start(100.0)
    assert any(getattr(r, "MESSAGE_ID", None) == MessageId.SYSFS_RESTORED for r in caplog.records)
    assert knobs(root) == IDLE
    again.stop()
    assert tree_snapshot(root) == before


def test_power_disabled_writes_nothing_but_still_undoes_a_crash(tmp_path: Path) -> None:
    crashed, root = make(tmp_path)
    before = tree_snapshot(root)
    crashed.start(0.0)
    del crashed  # SIGKILL: no stop(); the journal's lock goes with the process
    off, _ = make(tmp_path, power={"enabled": False})
    off.start(1.0)
    assert tree_snapshot(root) == before  # the crashed run's writes are gone
    off.on_gate(MOTION, 2.0)
    off.tick(3.0)
    assert tree_snapshot(root) == before and not off.writes
    assert off.status()["knobs"][f"{NPU}/max_freq"]["target"] == "1000000000"
    off.stop()


def test_unusable_journal_dir_means_no_writes(tmp_path: Path, caplog: Any) -> None:
    (tmp_path / "file").write_text("not a directory")
    pc, root = make(tmp_path, power={"journal_dir": str(tmp_path / "file" / "journal")})
    before = tree_snapshot(root)
    with caplog.at_level(logging.ERROR, logger="wattgate.power"):
        pc.start(0.0)
    assert "power.journal_dir" in caplog.text
    pc.on_gate(MOTION, 1.0)
    assert tree_snapshot(root) == before and not pc.writes
    pc.stop()


# -- failures degrade one knob --------------------------------------------------------------------


def test_failed_knobs_are_logged_and_the_rest_applied(tmp_path: Path, caplog: Any) -> None:
    root = materialize("write-fail", tmp_path / "sys")
    pc, _ = make(tmp_path, io=FaultyIO(root, faults("write-fail")))
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        started = pc.start(0.0)
    assert [e["knob"] for e in started if e["kind"] == "knob_failed"] == [
        f"{CPU}/policy4/scaling_max_freq"]
    failed = {getattr(r, "KNOB", None): getattr(r, "VALUE", None) for r in caplog.records
              if getattr(r, "MESSAGE_ID", None) == MessageId.KNOB_FAILED}
    assert failed[f"{CPU}/policy4/scaling_max_freq"] == "1200000"  # EINVAL
    # policy6's limits read as garbage (a directory, /dev/full): never driven at all
    assert not [k for k in pc.status()["knobs"] if k.startswith(f"{CPU}/policy6/scaling_m")]
    assert read(root, f"{CPU}/policy0/scaling_max_freq") == "816000"  # the others went on
    assert read(root, f"{NPU}/max_freq") == "300000000"
    status = pc.status()["knobs"]
    assert "Invalid argument" in status[f"{CPU}/policy4/scaling_max_freq"]["error"]
    events = pc.tick(1.0)
    assert not [e for e in events if e["kind"] == "knob_failed"]  # reported once, at start
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        pc.on_gate(MOTION, 2.0)  # the NPU governor is busy (EBUSY)
    assert f"{NPU}/governor" in caplog.text
    assert read(root, f"{NPU}/max_freq") == "1000000000"
    events = pc.tick(2.5)
    # policy4 wants its original 2.4 GHz back; a frequency limit is written even when it
    # reads the value (it may show a thermal cap), and this driver refuses every write:
    # still failed, with the same error, so not reported again
    assert [e["knob"] for e in events if e["kind"] == "knob_failed"] == [f"{NPU}/governor"]
    assert "Invalid argument" in pc.failed[f"{CPU}/policy4/scaling_max_freq"]
    pc.stop()


def test_board_with_missing_knobs(tmp_path: Path) -> None:
    pc, root = make(tmp_path, board="missing-knob")
    before = tree_snapshot(root)
    pc.start(0.0)
    pc.on_gate(MOTION, 1.0)
    assert read(root, f"{CPU}/policy0/scaling_max_freq") == "1800000"
    assert f"{CPU}/policy4/scaling_governor" not in pc.status()["knobs"]
    assert not pc.failed
    pc.stop()
    assert tree_snapshot(root) == before


def test_machine_without_knobs(tmp_path: Path) -> None:
    pc, _ = make(tmp_path, board="bare")
    pc.start(0.0)
    assert not pc.has_knobs
    assert pc.on_gate(MOTION, 1.0) is True
    assert pc.status()["knobs"] == {}
    pc.stop()


# -- profiles, pins, rules, ladder, reload -----------------------------------------------------


def test_pin_and_release(tmp_path: Path) -> None:
    pc, root = make(tmp_path)
    pc.start(0.0)
    pc.pin("performance", "uid 0")
    assert pc.settle(HANG_S)
    assert read(root, f"{CPU}/policy4/scaling_governor") == "performance"
    assert read(root, f"{NPU_DEV}/power/control") == "on"
    assert pc.profile_status()["pinned_by"] == "uid 0"
    events = pc.tick(1.0)
    assert {"kind": "profile_change", "profile": "performance", "reason": "pinned by uid 0",
            "source": "pin", "previous": "balanced"} in events
    with pytest.raises(KeyError):
        pc.pin("turbo", "uid 0")
    pc.pin(None, "uid 0")
    assert pc.settle(HANG_S)
    assert knobs(root) == IDLE
    status = pc.profile_status()
    assert (status["name"], status["source"]) == ("balanced", "default")
    assert "pinned_by" not in status
    pc.stop()


def test_thermal_rule_switches_profile_with_its_reason(tmp_path: Path) -> None:
    pc, root = make(tmp_path, rules=[{"temp_above_c": 80.0, "hysteresis_c": 5.0,
                                      "profile": "powersave"}])
    pc.start(0.0)
    zone = root / "devices/virtual/thermal/thermal_zone0/temp"
    zone.write_text("86000\n")
    events = pc.tick(1.0)
    assert {"kind": "thermal", "state": "hot", "detail": "any zone 86 °C", "rule": 0} in events
    change = next(e for e in events if e["kind"] == "profile_change")
    assert change["profile"] == "powersave"
    assert change["reason"] == "soc-thermal 86 °C above 80 °C"
    assert pc.settle(HANG_S)
    assert read(root, f"{CPU}/policy0/scaling_max_freq") == "408000"
    zone.write_text("78000\n")
    assert not [e for e in pc.tick(2.0) if e["kind"] == "profile_change"]  # hysteresis
    zone.write_text("74000\n")
    events = pc.tick(3.0)
    assert [e["profile"] for e in events if e["kind"] == "profile_change"] == ["balanced"]
    assert pc.status()["temperatures"]["soc-thermal"] == 74.0
    pc.stop()


@pytest.mark.parametrize("garbage", ["2147483647", "300000"])
def test_an_impossible_temperature_is_no_reading_not_heat(tmp_path: Path, garbage: str) -> None:
    """A broken sensor's 2147483647 m°C switched to the hot profile and showed in status as
    2147483.6 °C; no silicon a board carries works at 250 °C."""
    pc, root = make(tmp_path, rules=[{"temp_above_c": 80.0, "profile": "powersave"}])
    pc.start(0.0)
    (root / "devices/virtual/thermal/thermal_zone0/temp").write_text(garbage + "\n")
    events = pc.tick(1.0)
    assert not [e for e in events if e["kind"] in ("thermal", "profile_change")]
    assert pc.decision.profile == "balanced"
    assert "soc-thermal" not in pc.status()["temperatures"]
    pc.stop()


def test_inspection_sleeps_until_a_snap(tmp_path: Path) -> None:
    pc, root = make(tmp_path, power={"profile": "inspection"})
    pc.start(0.0)
    assert read(root, f"{NPU_DEV}/power/autosuspend_delay_ms") == "0"
    assert pc.on_gate(MOTION, 1.0) is False  # motion neither wakes nor infers
    assert pc.on_gate(HEARTBEAT, 1.5) is False
    assert pc.activity.state == "idle"
    assert pc.on_gate(SNAP, 2.0) is True
    assert pc.activity.state == "active"
    assert read(root, f"{NPU}/max_freq") == "1000000000"
    pc.stop()


def test_powersave_capture_and_inference_caps(tmp_path: Path) -> None:
    pc, _ = make(tmp_path, power={"profile": "powersave"})
    pc.start(0.0)
    looked = [pc.on_frame(i / 15) for i in range(15)]
    assert sum(looked) == 5 and looked[0] and looked[3]  # capture_fps 5 while idle
    assert pc.on_gate(MOTION, 1.0) is True  # the frame that wakes is always inferred
    assert pc.pipeline.capture_fps is None  # active: every frame looked at
    assert pc.on_gate(MOTION, 1.2) is False  # max_infer_fps 2
    assert pc.on_gate(MOTION, 1.5) is True
    assert pc.on_gate(SNAP, 1.6) is True  # snaps are never capped
    pc.stop()


def test_model_variant_follows_profile_and_rule(tmp_path: Path) -> None:
    pc, _ = make(
        tmp_path,
        model={"variants": {"lite": {"path": "/models/lite.tflite"},
                            "tiny": {"path": "/models/tiny.tflite"}}},
        profiles={"night": {"include": "balanced", "active": {"model_variant": "lite"}}},
        rules=[{"on_battery": True, "model_variant": "tiny"}],
    )
    pc.start(0.0)
    assert pc.model_variant is None
    pc.pin("night", "uid 0")
    pc.on_gate(MOTION, 1.0)
    assert pc.model_variant == "lite"
    events = pc.tick(1.5)
    assert {"kind": "model_variant", "variant": "lite", "reason": "profile night"} in events
    pc.tick(4.0)
    assert pc.model_variant is None
    pc.stop()


def test_reload_applies_new_profiles_and_keeps_the_pin(tmp_path: Path) -> None:
    pc, root = make(tmp_path)
    pc.start(0.0)
    pc.pin("powersave", "uid 0")
    assert [e["kind"] for e in pc.tick(1.0)] == ["profile_change"]  # the pin's
    new = parse_config({"power": {"sysfs_root": str(root), "journal_dir": str(
        tmp_path / "journal")}, "profiles": {"powersave": {"idle": {"cpu_max_khz": "50%"}}}})
    events = pc.reload(new, 5.0)
    assert pc.decision.profile == "powersave" and pc.decision.source == "pin"
    # new settings for the same profile: nothing a client would call a profile change
    assert not [e for e in events if e["kind"] == "profile_change"]
    # 50 % of 408..1800 MHz is 1104 MHz, snapped down to the 1008 MHz OPP
    assert read(root, f"{CPU}/policy0/scaling_max_freq") == "1008000"
    moved = parse_config({"power": {"sysfs_root": str(root), "journal_dir": str(
        tmp_path / "journal2")}})
    pc.reload(moved, 6.0)  # a new journal dir: restore everything, start again
    assert not (tmp_path / "journal" / "sysfs-journal.json").exists()
    assert (tmp_path / "journal2" / "sysfs-journal.json").exists()
    assert pc.decision.profile == "powersave"
    pc.stop()


# -- load feedback, readings, status --------------------------------------------------------------


def test_quiet_active_state_lowers_the_ceilings(tmp_path: Path) -> None:
    pc, root = make(tmp_path)
    pc.start(0.0)
    pc.on_gate(MOTION, 0.0)
    pc.tick(0.9, LoadSample(0.9, 10, 0, 10.0))  # opens the window: clocks stay up
    assert pc.settle(HANG_S)
    assert read(root, f"{NPU}/max_freq") == "1000000000"
    pc.on_gate(MOTION, 1.5)
    pc.tick(1.9, LoadSample(1.9, 25, 0, 25.0, 5.0))  # 15 ms of inference in a second
    assert pc.settle(HANG_S)
    assert read(root, f"{NPU}/max_freq") == "300000000"
    assert read(root, f"{CPU}/policy4/scaling_max_freq") == "1200000"  # idle's, not lower
    pc.on_gate(MOTION, 2.5)
    pc.tick(2.9, LoadSample(2.9, 40, 3, 900.0, 5.0))  # stale frames: back to the top
    assert pc.settle(HANG_S)
    assert read(root, f"{NPU}/max_freq") == "1000000000"
    assert pc.status()["load"] == {"duty": 0.875, "cpu": 0.05, "backlog": 3}
    pc.stop()


def test_status_and_power_message_on_rk3588(tmp_path: Path) -> None:
    pc, _ = make(tmp_path)
    pc.start(0.0)
    pc.tick(1.0)
    status = pc.status()
    assert status["profile"]["name"] == "balanced"
    assert status["profile"]["reason"] == "default (power.profile)"
    assert status["activity"]["state"] == "idle"
    knob = status["knobs"][f"{NPU}/max_freq"]
    assert knob == {"value": "300000000", "target": "300000000", "original": "1000000000"}
    assert status["temperatures"]["npu-thermal"] == 40.7
    watts = status["watts"]
    assert watts["source"] == "estimate" and watts["model"] == "rk3588"  # from the DT compatible
    assert watts["value"] == pytest.approx(watts["estimate"]["total"], abs=1e-3)
    assert status["joules"]["estimated"] > 0
    message = pc.power_message()
    assert message["class"] == "power" and message["watts_source"] == "estimate"
    assert set(message) >= {"ts", "profile", "reason", "activity", "temperatures", "watts"}
    assert abs(message["ts"] - time.time()) < 60  # Unix seconds, as docs/protocol.md shows
    pc.stop()


def test_measured_watts_from_ina3221(tmp_path: Path) -> None:
    pc, _ = make(tmp_path, board="jetson-orin-nano")
    pc.start(0.0)
    pc.tick(1.0)
    watts = pc.status()["watts"]
    assert (watts["source"], watts["meter"]) == ("meter", "hwmon VDD_IN")
    assert watts["value"] == pytest.approx(5.072 * 1.023, abs=1e-3)
    pc.stop()


def test_measured_watts_from_rapl_and_battery_rules(tmp_path: Path) -> None:
    pc, root = make(tmp_path, board="intel-mtl",
                    rules=[{"on_battery": True, "battery_below": 80.0, "profile": "powersave"}])
    events = pc.start(0.0)
    assert events[-1]["profile"] == "powersave"
    assert events[-1]["reason"] == "battery 76 % below 80 % and on battery"
    counter = root / "devices/virtual/powercap/intel-rapl/intel-rapl:1/energy_uj"
    counter.write_text(str(int(counter.read_text()) + 7_500_000) + "\n")
    pc.tick(1.5)
    watts = pc.status()["watts"]
    assert watts["meter"] == "RAPL psys" and watts["value"] == pytest.approx(5.0)
    assert pc.status()["battery"]["percent"] == 76
    pc.stop()


def test_on_gate_from_another_thread_while_ticking(tmp_path: Path) -> None:
    pc, root = make(tmp_path)
    before = tree_snapshot(root)
    pc.start(0.0)
    errors: list[BaseException] = []

    def capture() -> None:
        try:
            for i in range(300):
                pc.on_gate(MOTION if (i // 30) % 2 else QUIET, i / 15)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=capture)
    thread.start()
    for t in range(20):
        pc.tick(float(t))
    thread.join()
    assert not errors
    pc.stop()
    assert tree_snapshot(root) == before


def test_status_lines_for_the_cli(tmp_path: Path) -> None:
    from wattgate.cli_power import format_power

    pc, _ = make(tmp_path)
    pc.start(0.0)
    pc.pin("powersave", "uid 0")
    pc.tick(1.0)
    text = "\n".join(format_power(pc.status()))
    assert "profile   powersave (pinned by uid 0)" in text
    assert "activity  idle" in text and "W (estimate, rk3588)" in text
    assert f"{NPU}/max_freq = 300000000 (was 1000000000)" in text
    pc.stop()


# -- the journal: one daemon per journal_dir, and journals not fit to use -----------------------

HOLDER = """
import sys
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
root, journal = sys.argv[1], sys.argv[2]
pc = PowerController(parse_config({"power": {"sysfs_root": root, "journal_dir": journal}}))
pc.start(0.0)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_second_daemon_on_the_same_journal_dir_neither_restores_nor_writes(
    tmp_path: Path, caplog: Any
) -> None:
    """A daemon drives the board; a second one started on the same journal_dir used to
    'restore' the first one's changes under it and then write its own, each rewriting the
    journal with only its own originals. Now the second one is told who holds the journal
    and writes nothing; the first one's SIGKILL is still undone by the next start."""
    import signal
    import subprocess
    import sys

    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    first = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), str(tmp_path / "journal")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "ready"
        assert knobs(root) == IDLE
        driven = tree_snapshot(root)
        second, _ = make(tmp_path, power={"profile": "performance"})
        with caplog.at_level(logging.ERROR, logger="wattgate.power"):
            second.start(1.0)
        # on one board as well: the board's lock is the first to say who holds it
        assert f"driven by another wattgate (pid {first.pid})" in caplog.text
        assert not second.writes
        second.on_gate(MOTION, 2.0)
        second.stop()
        assert tree_snapshot(root) == driven  # not restored under the first, not rewritten
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    third, _ = make(tmp_path)
    third.start(3.0)
    assert third.writes and knobs(root) == IDLE
    third.stop()
    assert tree_snapshot(root) == before


def test_a_journal_of_the_wrong_shape_does_not_stop_the_start(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    journal.mkdir()
    (journal / "sysfs-journal.json").write_text('{"version": 1, "entries": {"a": "b"}}')
    pc, root = make(tmp_path)
    before = tree_snapshot(root)
    pc.start(0.0)
    assert pc.writes and knobs(root) == IDLE
    assert (journal / "sysfs-journal.json.corrupt").exists()
    pc.stop()
    assert tree_snapshot(root) == before


def test_a_journal_this_user_cannot_read_is_kept_and_nothing_written() -> None:
    """A root run left its journal (0600, root's) in the daemon user's journal_dir. It used
    to be renamed '.corrupt' and its originals forgotten while the daemon went on writing;
    now it stays where it is and the daemon writes nothing, saying whose file it is."""
    import os
    import pwd
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("needs root to leave a file the daemon's user cannot read")
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="wattgate-journal-owner-"))  # reachable by nobody
    try:
        os.chmod(base, 0o755)
        crashed, root = make(base)
        crashed.start(0.0)  # as root: the journal is root's, 0600
        del crashed
        driven = tree_snapshot(root)
        for dirpath, _dirs, files in os.walk(base):
            os.chown(dirpath, nobody.pw_uid, nobody.pw_gid)
            for name in files:
                if name != "sysfs-journal.json":
                    os.chown(os.path.join(dirpath, name), nobody.pw_uid, nobody.pw_gid)
        def start_as_the_daemon() -> str:  # as its own user
            pc, _ = make(base)
            with _Capture() as seen:
                pc.start(1.0)
            return f"writes={pc.writes} {seen.text}"

        report = run_as(nobody.pw_uid, nobody.pw_gid, start_as_the_daemon)
        assert report.startswith("writes=False"), report
        assert "not readable by this user (owner uid 0)" in report
        assert (base / "journal" / "sysfs-journal.json").exists()
        assert not (base / "journal" / "sysfs-journal.json.corrupt").exists()
        assert tree_snapshot(root) == driven
    finally:
        shutil.rmtree(base, ignore_errors=True)


class _Capture(logging.Handler):
    """Collects the power logger's records in a forked child (no pytest fixtures there)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> _Capture:
        logging.getLogger("wattgate.power").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("wattgate.power").removeHandler(self)


READ_ONLY_START = """
import sys
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
root, journal = sys.argv[1], sys.argv[2]
pc = PowerController(parse_config({"power": {"sysfs_root": root, "journal_dir": journal}}))
pc.start(0.0)
print("writes" if pc.writes else "no writes", flush=True)
"""


def test_a_read_only_journal_dir_still_gives_a_crashed_runs_originals_back(
    tmp_path: Path,
) -> None:
    """The journal's filesystem came back read-only after a crash (ext4 errors=remount-ro).
    The start used to give up at 'not writable' and leave the board as the crashed run
    left it; the journal is readable, so its originals go back, and nothing is written."""
    import os
    import shutil
    import subprocess
    import sys

    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) for a private read-only bind mount")
    crashed, root = make(tmp_path)
    before = tree_snapshot(root)
    crashed.start(0.0)
    crashed.on_gate(MOTION, 1.0)
    del crashed  # SIGKILL
    assert tree_snapshot(root) != before
    journal = tmp_path / "journal"
    script = (f'mount --bind -o ro "{journal}" "{journal}" && '
              f'exec "{sys.executable}" -c "$0" "{root}" "{journal}"')
    probe = subprocess.run([unshare, "-m", "--propagation", "private", "true"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")
    done = subprocess.run(
        [unshare, "-m", "--propagation", "private", "sh", "-c", script, READ_ONLY_START],
        capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "no writes"
    assert "not writable" in done.stderr and "restored" in done.stderr
    assert tree_snapshot(root) == before
    assert (journal / "sysfs-journal.json").exists()  # could not be removed: harmless
    again, _ = make(tmp_path)
    again.start(2.0)  # writable again: finds every original in place, drops the journal
    again.stop()
    assert tree_snapshot(root) == before
    assert not (journal / "sysfs-journal.json").exists()



def test_a_rule_asking_for_the_main_model_is_the_reason_given(tmp_path: Path) -> None:
    """A rule's model_variant = "" (the main model) overrides the profile's "lite"; the
    model_variant event named the profile as the reason, not the rule that asked."""
    pc, root = make(
        tmp_path, board="intel-mtl",
        model={"variants": {"lite": {"path": "/models/lite.tflite"}}},
        power={"profile": "night"},
        profiles={"night": {"include": "balanced", "model_variant": "lite"}},
        rules=[{"name": "low battery", "on_battery": True, "battery_below": 50.0,
                "model_variant": ""}],
    )
    pc.start(0.0)
    assert pc.model_variant == "lite"  # 76 %: the rule does not hold
    [capacity] = root.glob("class/power_supply/*/capacity")
    capacity.write_text("40\n")
    events = [e for e in pc.tick(5.0) + pc.tick(10.0) if e["kind"] == "model_variant"]
    assert pc.model_variant is None
    assert events == [{"kind": "model_variant", "variant": "",
                       "reason": pc.decision.reason}], events
    assert "battery" in pc.decision.reason
    pc.stop()


def test_capture_fps_is_kept_on_a_camera_whose_frame_times_jitter(tmp_path: Path) -> None:
    """capture_fps 5 on a 15 fps camera: frame times are read at each read, so they jitter
    by a millisecond or so. A frame a hair before the next 1/5 s mark was dropped and the
    next taken a whole camera frame later: about 4 frames a second were looked at, not 5."""
    import numpy as np

    pc, _ = make(tmp_path, profiles={"slow": {"include": "balanced", "capture_fps": 5.0}})
    pc.start(0.0)
    pc.pin("slow", "uid 0")
    jitter = np.random.RandomState(0).uniform(-0.001, 0.001, 15 * 60)
    looked = sum(pc.on_frame(10.0 + i / 15.0 + jitter[i]) for i in range(15 * 60))
    assert looked / 60.0 == pytest.approx(5.0, abs=0.1)
    pc.stop()


def test_going_idle_does_not_hold_the_capture_thread_for_the_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a wake waits for its settings (the first inference at raised clocks); lowering
    is the writer's own business. The quiet frame that ended the cooldown waited too, up to
    WAKE_WAIT_S, for the idle settings' stores: a slow one (power/control) stalled frames
    whenever the scene went quiet. WAKE_WAIT_S is made long here, so that a wait shows as
    a capture thread still held while a store is held back; the held store is one that
    cannot be made slow on this machine (a plain file), stood in for by OsIO waiting."""
    import wattgate.daemon.power as power_module
    from wattgate.drivers.sysfs import OsIO

    class HeldStores(OsIO):
        def __init__(self) -> None:
            self.armed, self.go = threading.Event(), threading.Event()

        def write_text(self, path: Path, data: str) -> None:
            if self.armed.is_set():
                self.go.wait(HANG_S)
            super().write_text(path, data)

    monkeypatch.setattr(power_module, "WAKE_WAIT_S", HANG_S)
    io = HeldStores()
    pc, _ = make(tmp_path, io=io)
    pc.start(0.0)
    assert pc.on_gate(MOTION, 1.0)  # the wake: its settings are written, waited for
    io.armed.set()
    try:
        t = 1.0
        while pc.activity.state != "idle":
            t += 0.5
            done = threading.Thread(target=pc.on_gate, args=(QUIET, t), daemon=True)
            done.start()
            done.join(HANG_S / 3)
            assert not done.is_alive(), f"a quiet frame at {t} s waited for the writes"
            assert t < 120.0, "never went idle"
    finally:
        io.go.set()
    pc.stop()

"""The real daemon on a fake RK3588: the sysfs values it writes as a scene goes idle ->
active -> idle, and that every one is back as found after it exits - also after SIGKILL."""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from tests.conftest import DaemonProcess, skimage_image, tree_snapshot, write_config
from tests.fixtures.boards import materialize
from wattgate.client import Client, ClientError

StartDaemon = Callable[..., DaemonProcess]
CPU = "devices/system/cpu/cpufreq"
NPU = "class/devfreq/fdab0000.npu"
NPU_DEV = "devices/platform/fdab0000.npu"
FPS = 15.0
# A profile with fixed values (floor = ceiling) so what the test reads does not depend on
# where the load feedback has moved the ceilings by then.
PROFILE = {
    "idle": {"cpu_max_khz": "0%", "npu_max_hz": "0%", "npu_runtime_pm": "auto",
             "npu_autosuspend_ms": 0},
    "active": {"cpu_min_khz": "100%", "cpu_max_khz": "100%", "npu_governor": ["performance"],
               "npu_min_hz": "100%", "npu_max_hz": "100%", "npu_runtime_pm": "on"},
}




def knobs(root: Path) -> dict[str, str]:
    def read(attribute: str) -> str:
        return (root / attribute).read_text().strip()

    return {
        "npu_control": read(f"{NPU_DEV}/power/control"),
        "npu_governor": read(f"{NPU}/governor"),
        "npu_min": read(f"{NPU}/min_freq"),
        "npu_max": read(f"{NPU}/max_freq"),
        "little_min": read(f"{CPU}/policy0/scaling_min_freq"),
        "little_max": read(f"{CPU}/policy0/scaling_max_freq"),
        "big_max": read(f"{CPU}/policy4/scaling_max_freq"),
    }


IDLE = {"npu_control": "auto", "npu_governor": "rknpu_ondemand", "npu_min": "300000000",
        "npu_max": "300000000", "little_min": "408000", "little_max": "408000",
        "big_max": "408000"}
ACTIVE = {"npu_control": "on", "npu_governor": "performance", "npu_min": "1000000000",
          "npu_max": "1000000000", "little_min": "1800000", "little_max": "1800000",
          "big_max": "2400000"}


def write_scene(path: Path, quiet_s: float = 4.0, moving_s: float = 2.0,
                after_s: float = 8.0) -> Path:
    """A still, noisy room; then something crosses it; then the room is still again."""
    rng = np.random.default_rng(3)
    room = np.full((480, 640, 3), 96, np.uint8)
    cv2.rectangle(room, (0, 330), (640, 480), (70, 80, 90), -1)
    thing = cv2.resize(skimage_image("astronaut.png")[0:200, 110:310], (160, 160))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (640, 480))
    assert writer.isOpened()
    quiet, moving, after = (round(s * FPS) for s in (quiet_s, moving_s, after_s))
    for i in range(quiet + moving + after):
        frame = room.copy()
        if quiet <= i < quiet + moving:
            x = round(-160 + (i - quiet) / moving * 800)
            x0, x1 = max(0, x), min(640, x + 160)
            if x1 > x0:
                frame[150:310, x0:x1] = thing[:, x0 - x : x1 - x]
        noise = rng.integers(-3, 4, frame.shape, dtype=np.int16)
        writer.write(np.clip(frame.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


def wait_knobs(root: Path, expected: dict[str, str], timeout: float = 30.0) -> dict[str, str]:
    """The knobs once they are ``expected``, or as they are after ``timeout`` (a hang guard).

    The daemon's writer thread writes an edge's settings: the capture thread waits for them
    at most power.WAKE_WAIT_S, and the edge's event may reach a client a moment before the
    last write of the batch lands."""
    deadline = time.monotonic() + timeout
    while (now := knobs(root)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return now


def power_sections(root: Path, journal: Path, video: Path, **power: Any) -> dict[str, Any]:
    return {
        "camera": {"source": str(video)},
        "power": {"sysfs_root": str(root), "journal_dir": str(journal), "profile": "camera",
                  **power},
        "profiles": {"camera": PROFILE},
    }


def wait_activity(client: Client, state: str, timeout: float = 30.0) -> dict[str, Any]:
    client.settimeout(timeout)
    for message in client.messages():
        if message.get("class") == "event" and message.get("kind") == "activity" and (
            message.get("state") == state
        ):
            return message
    raise AssertionError("unreachable")


def test_idle_active_idle_then_restored_on_exit(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    # 3 s still: 1 s past the gate's 2 s calibration before something moves
    video = write_scene(tmp_path / "scene.avi", quiet_s=3.0)
    daemon = start_daemon(**power_sections(root, tmp_path / "journal", video))
    with daemon.connect() as client:
        assert client.hello["capabilities"]["power"] is True
        client.request("subscribe", topics=["events", "power"])
        assert knobs(root) == IDLE  # the idle settings are in place before the first frame
        active = wait_activity(client, "active")
        assert active["reason"] == "motion" and active["previous"] == "idle"
        assert wait_knobs(root, ACTIVE) == ACTIVE
        idle = wait_activity(client, "idle")
        assert idle["reason"] == "no motion for 2 s"
        assert wait_knobs(root, IDLE) == IDLE
        status = client.request("status")
        power = status["power"]
        assert power["profile"]["name"] == "camera" and power["activity"]["state"] == "idle"
        assert power["knobs"][f"{NPU}/max_freq"] == {
            "value": "300000000", "target": "300000000", "original": "1000000000"}
        assert power["watts"]["source"] == "estimate" and power["temperatures"]
        events = client.request("events", since=0)["events"]
        assert any(e["kind"] == "profile_change" and e["profile"] == "camera" for e in events)
    assert daemon.stop() == 0
    assert tree_snapshot(root) == before
    assert not (tmp_path / "journal" / "sysfs-journal.json").exists()


def test_sigkill_is_undone_by_the_next_start(start_daemon: StartDaemon, tmp_path: Path) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    video = write_scene(tmp_path / "scene.avi", quiet_s=60.0, moving_s=0.0, after_s=0.0)
    journal = tmp_path / "journal"
    first = start_daemon(**power_sections(root, journal, video))
    first.connect().close()
    assert knobs(root) == IDLE and tree_snapshot(root) != before
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    assert tree_snapshot(root) != before  # nobody restored anything
    saved = json.loads((journal / "sysfs-journal.json").read_text())
    assert {e["attribute"] for e in saved["entries"]} >= {
        f"{NPU}/max_freq", f"{CPU}/policy0/scaling_max_freq"}
    # the next start restores first; with power writes off it then leaves the board alone
    second = start_daemon(**power_sections(root, journal, video, enabled=False))
    with second.connect() as client:
        assert client.hello["capabilities"]["power"] is True
        deadline = time.monotonic() + 10
        while tree_snapshot(root) != before and time.monotonic() < deadline:
            time.sleep(0.05)
    assert tree_snapshot(root) == before
    assert "left changed by a previous run" in second.log()
    assert second.stop() == 0
    assert tree_snapshot(root) == before


def test_daemon_on_a_machine_without_knobs_has_no_power_control(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root = materialize("bare", tmp_path / "sys")
    video = write_scene(tmp_path / "scene.avi", quiet_s=20.0, moving_s=0.0, after_s=0.0)
    daemon = start_daemon(camera={"source": str(video)},
                          power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "j")})
    with daemon.connect() as client:
        assert client.hello["capabilities"]["power"] is False
        try:
            client.request("profile")
        except ClientError as exc:
            assert exc.code == "unavailable"
        else:  # pragma: no cover
            raise AssertionError("profile answered without power control")
    assert daemon.stop() == 0


def test_a_reload_onto_a_root_with_knobs_turns_power_control_on(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Started where there were no knobs (power.sysfs_root not yet right), then reloaded
    with the board's root: power control starts as it would have at start-up."""
    bare = materialize("bare", tmp_path / "bare")
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    video = write_scene(tmp_path / "scene.avi", quiet_s=60.0, moving_s=0.0, after_s=0.0)
    daemon = start_daemon(**power_sections(bare, tmp_path / "journal", video))
    with daemon.connect() as client:
        assert client.hello["capabilities"]["power"] is False
        daemon.config.write_text(daemon.config.read_text().replace(str(bare), str(root)))
        assert client.request("reload")["reloaded"]
        assert client.request("profile")["profile"]["name"] == "camera"
        assert knobs(root) == IDLE
        assert client.request("status")["power"]["profile"]["name"] == "camera"
    assert daemon.stop() == 0
    assert tree_snapshot(root) == before


def test_a_rule_switches_the_model_variant_without_dropping_clients(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    import shutil

    from wattgate.drivers.inference import default_model_path

    root = materialize("intel-mtl", tmp_path / "sys")  # BAT0 discharging, AC offline
    lite = tmp_path / "face_lite.tflite"
    shutil.copy(default_model_path(), lite)
    video = write_scene(tmp_path / "scene.avi", quiet_s=40.0, moving_s=0.0, after_s=0.0)
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(
        run / "config.toml", run,
        camera={"source": str(video)},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
        model={"variants": {"lite": {"path": str(lite)}}},
        rules=[{"on_battery": True, "model_variant": "lite"}],
    )
    daemon = start_daemon(config)
    with daemon.connect() as client:
        assert client.request("status")["model"]["name"] == "face_lite"  # on battery at start
        client.request("subscribe", topics=["events"])
        (root / "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0003:00/power_supply/AC/online").write_text(
            "1\n")
        client.settimeout(30.0)
        switch = next(m for m in client.messages()
                      if m.get("class") == "event" and m.get("kind") == "model_variant")
        assert switch["variant"] == ""
        deadline = time.monotonic() + 30
        while client.request("status")["model"]["name"] != "face_detection_short_range":
            assert time.monotonic() < deadline, "the main model never came back"
            time.sleep(0.1)
    assert daemon.stop() == 0


# `wattgate run` whose model loads after the first one last until the daemon begins to stop
# (an NPU delegate's compile can take seconds), and whose restore at the stop takes 0.5 s (a
# board with many knobs): a reload is under way when the stop comes and goes on during it
SLOW_RELOADS = """
import sys, threading, time
import wattgate.daemon.app as app
from wattgate.cli import main
from wattgate.daemon.notify import Notifier
from wattgate.daemon.power import PowerController
loads, stopping = [], threading.Event()
real_load, real_stopping, real_stop = app.load_model, Notifier.stopping, PowerController.stop
def load_model(cfg):
    loads.append(cfg)
    if len(loads) > 1:
        print("slow load started", file=sys.stderr, flush=True)
        stopping.wait(30)
    return real_load(cfg)
def notify_stopping(self):
    stopping.set()
    real_stopping(self)
def stop(self):
    if stopping.is_set():
        time.sleep(0.5)
    real_stop(self)
app.load_model, Notifier.stopping, PowerController.stop = load_model, notify_stopping, stop
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_stop_during_a_reload_abandons_it_and_restores_the_board(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """SIGTERM while a reload loads its model: the stop does not wait for the load (the
    reload is abandoned), the daemon stops its pipeline and writes every original back, and
    nothing is written after that, not even by the load finishing late."""
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    video = write_scene(tmp_path / "scene.avi", quiet_s=60.0, moving_s=0.0, after_s=0.0)
    journal, moved = tmp_path / "journal", tmp_path / "journal-moved"
    daemon = start_daemon(**power_sections(root, journal, video),
                          argv=lambda config: [sys.executable, "-c", SLOW_RELOADS, str(config)])
    with daemon.connect() as client:
        assert knobs(root) == IDLE
        text = daemon.config.read_text()
        # a new camera setting (so a new pipeline, its model loaded first), and a new
        # journal_dir (so power control starts afresh: restores, then writes again)
        daemon.config.write_text(text.replace(str(journal), str(moved))
                                 .replace("[camera]\n", "[camera]\nfps = 10.0\n"))
        client.send({"cmd": "reload", "id": 1})
        deadline = time.monotonic() + 20
        while "slow load started" not in daemon.log():
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0
    time.sleep(1.0)  # a stray thread's late write would land by now
    assert tree_snapshot(root) == before
    assert not (journal / "sysfs-journal.json").exists()
    assert not (moved / "sysfs-journal.json").exists()


# `wattgate run` whose model and camera fail to open with an error no one foresaw (a bug,
# a library's own exception): the idle settings were written by then
FAILING_START = """
import sys
import wattgate.daemon.app as app
from wattgate.cli import main
def open_parts(*args, **kwargs):
    raise RuntimeError("nobody saw this coming")
app.open_parts = open_parts
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_an_unforeseen_error_at_start_still_restores_the_board(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    video = write_scene(tmp_path / "scene.avi", quiet_s=1.0, moving_s=0.0, after_s=0.0)
    journal = tmp_path / "journal"
    daemon = start_daemon(**power_sections(root, journal, video),
                          argv=lambda config: [sys.executable, "-c", FAILING_START, str(config)])
    assert daemon.proc.wait(30) == 1
    assert "nobody saw this coming" in daemon.log()
    # the idle settings were written, and every journaled attribute is given back (a
    # frequency limit even when it reads as its original: what it shows may be a cap)
    restored = re.search(r"restored (\d+) sysfs attribute\(s\)", daemon.log())
    assert restored is not None and int(restored.group(1)) >= 5, daemon.log()
    assert tree_snapshot(root) == before
    assert not (journal / "sysfs-journal.json").exists()


# An NPU inference slower than the one-second power tick cannot exist here (no NPU): the
# interpreter's invoke is made to take 1.5 s, inside the time the model measures.
SLOW_INVOKE_WRAPPER = """
import sys, time
import wattgate.drivers.runtime as runtime
real_invoke = runtime.Interpreter.invoke
def invoke(self):
    time.sleep(1.5)
    return real_invoke(self)
runtime.Interpreter.invoke = invoke
from wattgate.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_model_slower_than_the_tick_reads_busy_in_every_tick(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The load feedback's duty counts the inference still running: a model busy for
    1.5 s at a time read as idle (duty 0) in the ticks where none ended, one one-second
    tick in three."""
    root = materialize("rk3588", tmp_path / "sys")
    # 2 s of a still room played in a loop: the model is never out of frames
    video = write_scene(tmp_path / "scene.avi", quiet_s=2.0, moving_s=0.0, after_s=0.0)
    sections = power_sections(root, tmp_path / "journal", video)
    sections["camera"]["loop"] = True
    daemon = start_daemon(
        **sections,
        argv=lambda config: [sys.executable, "-c", SLOW_INVOKE_WRAPPER, str(config)],
        gate={"enabled": False},
    )
    duties: list[float] = []
    deadline = time.monotonic() + 60.0  # a hang guard: the first figures come in seconds
    with daemon.connect() as client:
        # The status shows the pressure of the last one-second tick: five figures a second
        # apart see five ticks or more, of which the old count read one of three as 0 (two
        # inferences end in every three ticks). The first ticks have no figure yet.
        while len(duties) < 5:
            assert time.monotonic() < deadline, f"no load figures in status: {duties}"
            load = client.request("status")["power"].get("load")
            if load is not None:
                duties.append(load["duty"])
            time.sleep(1.0)
    assert daemon.stop() == 0
    assert min(duties) > 0.9, duties

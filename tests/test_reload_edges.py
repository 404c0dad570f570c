"""Reloads that change several things at once: profiles, rules, pins, power knobs, the
camera and the model, and what each keeps or gives back."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess, FaceVideo, tree_snapshot, write_config
from tests.fixtures.boards import materialize
from tests.test_camera_watch import wait_for
from tests.test_daemon import wait_log
from tests.test_pir_hold import read_high_then_low
from tests.test_sensors import write_whole
from wattgate.client import Client, ClientError
from wattgate.config import parse_config
from wattgate.daemon.power import PowerController
from wattgate.drivers.inference import default_model_path
from wattgate.drivers.sysfs import OsIO

StartDaemon = Callable[..., DaemonProcess]
CPU = "devices/system/cpu/cpufreq"
ZONE = "devices/virtual/thermal/thermal_zone0/temp"
HOT_RULE = {"temp_above_c": 80.0, "hysteresis_c": 5.0, "profile": "powersave"}


def read(root: Path, attribute: str) -> str:
    return (root / attribute).read_text().strip()


def controller_config(tmp_path: Path, root: Path, **sections: Any) -> Any:
    raw: dict[str, Any] = {"power": {"sysfs_root": str(root),
                                     "journal_dir": str(tmp_path / "journal")}}
    for name, values in sections.items():
        if isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return parse_config(raw)


def test_a_reload_keeps_a_thermal_hold_inside_its_hysteresis(tmp_path: Path) -> None:
    """Held at 86 °C, now at 78 °C (inside the 5 °C hysteresis): a reload that leaves the
    rule as it was must not release the hold, nor report the zone hot a second time."""
    root = materialize("rk3588", tmp_path / "sys")
    cfg = controller_config(tmp_path, root, rules=[HOT_RULE])
    pc = PowerController(cfg)
    pc.start(0.0)
    (root / ZONE).write_text("86000\n")
    assert pc.tick(1.0) and pc.decision.profile == "powersave"
    (root / ZONE).write_text("78000\n")
    pc.tick(2.0)
    assert pc.decision.profile == "powersave"
    calmer = controller_config(tmp_path, root, rules=[HOT_RULE], power={"cooldown_s": 3.0})
    events = pc.reload(calmer, 3.0) + pc.tick(4.0)
    assert pc.decision.profile == "powersave", events
    assert not [e for e in events if e["kind"] in ("thermal", "profile_change")], events
    (root / ZONE).write_text("74000\n")  # below the hysteresis: released as ever
    events = pc.tick(5.0)
    assert {"kind": "thermal", "state": "cool", "detail": "any zone 74 °C", "rule": 0} in events
    assert pc.decision.profile == "balanced"
    pc.stop()


def test_a_knob_no_profile_sets_after_a_reload_goes_back_to_its_original(
    tmp_path: Path,
) -> None:
    """Profiles say "a key set nowhere leaves that knob as the daemon found it": a reload
    that drops the only cpu_min_khz gives the floor back at once, not at exit."""
    root = materialize("rk3588", tmp_path / "sys")
    floor = f"{CPU}/policy0/scaling_min_freq"
    original = read(root, floor)
    pinned = {"camera": {"include": "balanced", "cpu_min_khz": "100%"}}
    pc = PowerController(controller_config(tmp_path, root, profiles=pinned,
                                           power={"profile": "camera"}))
    pc.start(0.0)
    assert read(root, floor) != original  # the idle ceiling, 40 %, caps the floor
    plain = {"camera": {"include": "balanced"}}
    pc.reload(controller_config(tmp_path, root, profiles=plain, power={"profile": "camera"}),
              1.0)
    assert read(root, floor) == original
    pc.stop()
    assert read(root, floor) == original


def test_a_reload_of_camera_and_power_root_at_once_turns_power_control_on(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Started where there were no knobs, then one reload gives both a new camera setting
    (a new pipeline) and the board's sysfs root: power control starts, as it does when
    only the root changes."""
    bare = materialize("bare", tmp_path / "bare")
    root = materialize("rk3588", tmp_path / "sys")
    before = tree_snapshot(root)
    daemon = start_daemon(camera={"source": "synthetic:empty", "width": 320, "height": 240},
                          power={"sysfs_root": str(bare),
                                 "journal_dir": str(tmp_path / "journal")})
    with daemon.connect() as client:
        assert client.hello["capabilities"]["power"] is False
        text = daemon.config.read_text()
        daemon.config.write_text(text.replace(str(bare), str(root))
                                 .replace("width = 320", "width = 336"))
        assert client.request("reload")["reloaded"]
        assert client.request("profile")["profile"]["name"] == "balanced"
        assert client.request("status")["source"]["width"] == 336
    assert daemon.stop() == 0
    assert tree_snapshot(root) == before


def test_a_reload_that_drops_the_model_variant_in_use_loads_the_main_model(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The profile in use runs variant "lite"; the new config has neither that profile nor
    the variant. The reload is taken, and the main model is loaded in its place (the
    variant is no name to look up in the new [model.variants])."""
    root = materialize("rk3588", tmp_path / "sys")
    lite = tmp_path / "face_lite.tflite"
    shutil.copy(default_model_path(), lite)
    power = {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")}
    camera = {"source": "synthetic:empty", "width": 320, "height": 240}
    daemon = start_daemon(
        camera=camera, power={**power, "profile": "night"},
        model={"variants": {"lite": {"path": str(lite)}}},
        profiles={"night": {"include": "balanced", "model_variant": "lite"}},
    )
    with daemon.connect() as client:
        assert client.request("status")["model"]["name"] == "face_lite"
        write_config(daemon.config, daemon.config.parent, camera=camera, power=power)
        reply = client.request("reload")
        assert reply["reloaded"], reply
        assert client.request("status")["model"]["name"] == "face_detection_short_range"
        assert client.request("profile")["profile"]["name"] == "balanced"
    assert daemon.stop() == 0


def variant_setup(tmp_path: Path) -> tuple[Path, Path, dict[str, str], dict[str, Any]]:
    """The rk3588 tree, a copy of the bundled model to be variant "lite", and the power
    and camera tables of a daemon on them."""
    root = materialize("rk3588", tmp_path / "sys")
    lite = tmp_path / "face_lite.tflite"
    shutil.copy(default_model_path(), lite)
    power = {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")}
    camera = {"source": "synthetic:empty", "width": 320, "height": 240}
    return root, lite, power, camera


def test_a_reload_of_the_model_and_the_variant_it_wants_loads_the_model_once(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The new config adds variant "lite" to [model] and makes the profile in use run it.
    The reload loads "lite" straight away: not first the main model, which the policy
    under the old config wanted, and "lite" a moment later, once the power side has the
    new config (a load can take seconds on a board)."""
    _, lite, power, camera = variant_setup(tmp_path)
    daemon = start_daemon(camera=camera, power=power)
    with daemon.connect() as client:
        assert client.request("status")["model"]["name"] == "face_detection_short_range"
        write_config(daemon.config, daemon.config.parent, camera=camera,
                     power={**power, "profile": "night"},
                     model={"variants": {"lite": {"path": str(lite)}}},
                     profiles={"night": {"include": "balanced", "model_variant": "lite"}})
        reply = client.request("reload")
        assert reply["reloaded"], reply
        wait_for(lambda: client.request("status")["model"]["name"] == "face_lite",
                 what="variant lite in use")
    assert daemon.stop() == 0
    loads = re.findall(r"model (\S+) loaded: ", daemon.log())
    assert loads == ["face_detection_short_range.tflite", "face_lite.tflite"], loads


def test_the_variant_a_reload_will_want_is_asked_without_applying_anything(
    tmp_path: Path,
) -> None:
    """The daemon asks before it loads a reload's model, and a model that does not load
    rejects the reload: asking must leave the profile, the variant and the board as they
    were. What it answers is what the reload then picks."""
    root = materialize("rk3588", tmp_path / "sys")
    model = {"variants": {"lite": {"path": "/models/lite.tflite"}}}
    pc = PowerController(controller_config(tmp_path, root, model=model))
    pc.start(0.0)
    night = controller_config(
        tmp_path, root, model=model, power={"profile": "night"},
        profiles={"night": {"include": "balanced", "active": {"model_variant": "lite"}}},
    )
    assert pc.variant_under(night) is None  # "night" runs lite only when active
    pc.on_snap(0.5)  # wakes the activity machine: active
    assert pc.settle(30.0)  # its writes done (a hang guard: the tree takes them at once)
    before = tree_snapshot(root)
    assert pc.variant_under(night) == "lite"
    assert pc.decision.profile == "balanced" and pc.model_variant is None
    assert tree_snapshot(root) == before
    events = pc.reload(night, 1.0)
    assert pc.model_variant == "lite", events
    pc.stop()


def test_a_reload_applies_new_sensor_settings(start_daemon: StartDaemon, tmp_path: Path) -> None:
    """[sensors] is no restart-only table: a PIR added by a reload is polled (its trigger is
    an event), and one removed by the next is no longer."""
    daemon = start_daemon(camera={"source": "synthetic:empty", "width": 320, "height": 240})
    pir = daemon.config.parent / "sys" / "pir"
    write_whole(pir, "1\n")  # high first: read_high_then_low

    def pir_active() -> bool:
        return bool(client.request("status")["sensors"]["pir"]["active"])

    with daemon.connect() as client:
        assert "pir" not in client.request("status")["sensors"]
        text = daemon.config.read_text()
        daemon.config.write_text(text + '[sensors]\npir = "pir"\npir_poll_s = 0.05\n')
        assert client.request("reload")["reloaded"]
        assert client.request("status")["sensors"]["pir"]["attribute"] == "pir"
        read_high_then_low(pir, pir_active)
        client.request("subscribe", topics=["events"])
        write_whole(pir, "1\n")
        client.settimeout(20.0)
        assert next(m for m in client.messages() if m.get("kind") == "pir")
        daemon.config.write_text(text)
        assert client.request("reload")["reloaded"]
        assert "pir" not in client.request("status")["sensors"]
    assert daemon.stop() == 0


# `wattgate run` that is sent SIGHUP while it binds its socket, before the model and the
# camera are opened (a config tool reloading just as the daemon restarts), and that
# prints its capture threads on SIGUSR1
HUP_AT_START = """
import asyncio, os, signal, sys, threading
from wattgate.cli import main
from wattgate.daemon.server import Server
real_start = Server.start
async def start(self, *args):
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.5)
    await real_start(self, *args)
def threads(signum, frame):
    names = [t.name for t in threading.enumerate() if t.name == "wattgate-capture"]
    print("capture threads:", len(names), file=sys.stderr, flush=True)
Server.start = start
signal.signal(signal.SIGUSR1, threads)
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_sighup_during_start_up_leaves_one_pipeline(start_daemon: StartDaemon) -> None:
    """The reload waits for start-up to open its parts, then reloads them: one camera is
    open and one pipeline captures, not one from the reload and another from start-up."""
    daemon = start_daemon(camera={"source": "synthetic:empty", "width": 320, "height": 240},
                          argv=lambda config: [sys.executable, "-c", HUP_AT_START, str(config)])
    daemon.connect().close()
    wait_log(daemon, "reloaded")
    daemon.proc.send_signal(signal.SIGUSR1)
    wait_log(daemon, "capture threads:")
    assert "capture threads: 1\n" in daemon.log(), daemon.log()
    assert daemon.stop() == 0


def test_a_reload_that_drops_the_pinned_profile_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The pin goes with its profile (docs/protocol.md): the journal says which pin, whose,
    and why, and watchers get the switch away from it."""
    root = materialize("rk3588", tmp_path / "sys")
    night = {"night": {"include": "powersave"}}
    pc = PowerController(controller_config(tmp_path, root, profiles=night))
    pc.start(0.0)
    pc.pin("night", "pid 7 uid 0 gid 0")
    pc.tick(1.0)
    with caplog.at_level(logging.WARNING, logger="wattgate.power"):
        events = pc.reload(controller_config(tmp_path, root), 2.0)
    assert [(e["profile"], e["previous"]) for e in events if e["kind"] == "profile_change"] == [
        ("balanced", "night")]
    assert ("pin of profile 'night' by pid 7 uid 0 gid 0 released: the new config has no "
            "such profile") in caplog.text
    assert pc.profile_status()["name"] == "balanced" and pc.rules.pinned is None
    pc.stop()


class BusyIO(OsIO):
    """Writes to the attributes in ``busy`` fail with EBUSY, as a driver in the middle of
    a transition answers; the set can change while the controller runs."""

    def __init__(self) -> None:
        self.busy: set[str] = set()

    def write_text(self, path: Path, data: str) -> None:
        if str(path) in self.busy:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), str(path))
        super().write_text(path, data)


def test_a_new_journal_dir_keeps_the_originals_the_old_one_could_not_restore(
    tmp_path: Path,
) -> None:
    """A reload to another power.journal_dir restores the board first; an attribute busy
    just then keeps its original in the old journal. The new journal must take it over:
    recording the attribute afresh would save the old profile's value as the original,
    and the exit would 'restore' that."""
    root = materialize("rk3588", tmp_path / "sys")
    floor = f"{CPU}/policy0/scaling_min_freq"
    original = read(root, floor)
    io = BusyIO()
    raised = {"camera": {"include": "balanced", "cpu_min_khz": "20%"}}
    power = {"profile": "camera"}
    pc = PowerController(controller_config(tmp_path, root, profiles=raised, power=power),
                         io=io)
    pc.start(0.0)
    ours = read(root, floor)
    assert ours != original
    io.busy.add(str(root / floor))
    moved = controller_config(tmp_path, root, profiles=raised,
                              power={**power, "journal_dir": str(tmp_path / "journal2")})
    pc.reload(moved, 1.0)
    assert read(root, floor) == ours  # could not be restored
    io.busy.clear()
    pc.stop()
    assert read(root, floor) == original


def test_a_structural_reload_that_leaves_the_model_variant_says_so(tmp_path: Path) -> None:
    """The profile in use ran variant "lite"; a reload moves the journal (power control
    starts afresh) and the new profile wants the main model: the daemon must be told, or
    it goes on running the variant."""
    root = materialize("rk3588", tmp_path / "sys")
    model = {"variants": {"lite": {"path": "/models/lite.tflite"}}}
    night = {"night": {"include": "balanced", "model_variant": "lite"}}
    pc = PowerController(controller_config(tmp_path, root, model=model, profiles=night,
                                           power={"profile": "night"}))
    events = pc.start(0.0)
    assert {"kind": "model_variant", "variant": "lite", "reason": "profile night"} in events
    moved = controller_config(tmp_path, root, model=model, profiles=night,
                              power={"journal_dir": str(tmp_path / "journal2")})
    events = pc.reload(moved, 1.0)
    assert [e["variant"] for e in events if e["kind"] == "model_variant"] == [""], events
    assert pc.model_variant is None
    pc.stop()


def test_a_restart_only_change_is_reported_until_it_is_undone(
    start_daemon: StartDaemon,
) -> None:
    """daemon.state_dir waits for a restart: every reload says so while the file differs
    from what the daemon runs with, and none does once the file is back to it."""
    daemon = start_daemon(camera={"source": "synthetic:empty", "width": 320, "height": 240})
    text = daemon.config.read_text()
    state = str(daemon.config.parent / "state")
    moved = text.replace(state, state + "-moved")
    with daemon.connect() as client:
        daemon.config.write_text(moved)
        assert client.request("reload")["message"] == (
            "reloaded; after a restart: daemon.state_dir")
        daemon.config.write_text(moved.replace("width = 320", "width = 336"))
        assert client.request("reload")["message"] == (
            "reloaded; after a restart: daemon.state_dir")
        daemon.config.write_text(text)
        assert client.request("reload")["message"] == "reloaded"
    assert daemon.log().count("daemon.state_dir changed") == 2
    assert daemon.stop() == 0


def camera_events(client: Client) -> list[str]:
    """The kinds of the camera_lost and camera_back events in the log, oldest first."""
    events = client.request("events", limit=1000)["events"]
    return [e["kind"] for e in events if e["kind"] in ("camera_lost", "camera_back")]


def test_a_camera_lost_before_reloads_of_the_camera_is_announced_back_once(
    start_daemon: StartDaemon, face_video: FaceVideo, tmp_path: Path
) -> None:
    """Clients told camera_lost wait for camera_back. Reloads that change [camera] while it
    is lost (another missing file, then one that is there) build new supervisors: the loss
    they inherit is not announced again, and is announced back once frames come."""
    first, second = tmp_path / "first.avi", tmp_path / "second.avi"
    daemon = start_daemon(camera={"source": str(first), "loop": True}, gate={"enabled": False})
    with daemon.connect() as client:
        wait_for(lambda: camera_events(client) == ["camera_lost"], what="camera_lost")
        text = daemon.config.read_text()
        for source in (second, face_video.path):
            daemon.config.write_text(text.replace(str(first), str(source)))
            assert client.request("reload")["reloaded"]
        wait_for(lambda: "camera_back" in camera_events(client), what="camera_back")
        assert camera_events(client) == ["camera_lost", "camera_back"]
        assert client.request("status")["source"]["state"] == "running"
    assert daemon.stop() == 0


def test_a_reload_whose_own_reading_changes_the_policys_mind_runs_what_it_then_wants(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The new config runs variant "lite" above 80 °C. The last tick read 86 °C, so the
    reload loads "lite"; the zone reads 60 °C by the time the power side takes the config,
    and the policy wants the main model, what it last asked for: no change to it, so no
    model_variant event. The daemon ran "lite" until the policy changed its mind again."""
    root, lite, power, camera = variant_setup(tmp_path)
    (root / ZONE).write_text("86000\n")
    daemon = start_daemon(camera=camera, power=power)
    with daemon.connect() as client:
        wait_for(lambda: 86.0 in client.request("status")["power"]["temperatures"].values(),
                 what="a tick that read 86 °C")
        write_config(daemon.config, daemon.config.parent, camera=camera, power=power,
                     model={"variants": {"lite": {"path": str(lite)}}},
                     rules=[{"temp_above_c": 80.0, "hysteresis_c": 5.0,
                             "model_variant": "lite"}])
        (root / ZONE).write_text("60000\n")  # cooled, and no tick has read it yet
        assert client.request("reload")["reloaded"]
        wait_for(lambda: client.request("status")["model"]["name"]
                 == "face_detection_short_range", what="the main model in use")
    assert daemon.stop() == 0


def test_a_reload_loads_a_model_file_replaced_under_the_same_name(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """An operator updates the model by renaming a new file over the old one, then reloads:
    the config's [model] is unchanged, so the old model kept running while the reply said
    "reloaded" (the new file was taken only at a later variant switch or restart)."""
    bundled = default_model_path().parent
    model = tmp_path / "model.tflite"
    shutil.copyfile(bundled / "face_detection_short_range.tflite", model)
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          model={"path": str(model), "kind": "blazeface"})
    with daemon.connect() as client:
        assert client.request("status")["model"]["input"] == [128, 128, 3]
        update = tmp_path / "model.tflite.new"
        shutil.copyfile(bundled / "face_detection_back.tflite", update)
        os.replace(update, model)
        assert client.request("reload")["reloaded"] is True
        assert client.request("status")["model"]["input"] == [256, 256, 3]
    assert daemon.stop() == 0


@pytest.mark.parametrize("key", ["sysfs_root", "journal_dir"])
def test_a_reload_onto_a_power_path_that_cannot_be_used_is_refused(
    start_daemon: StartDaemon, tmp_path: Path, key: str
) -> None:
    """A typo in power.sysfs_root (no such directory), or power.journal_dir mistyped under
    a file: the reload answered "reloaded", gave the board back and wrote nothing more,
    while pins still answered "pinned" and hellos offered power control; only the log said
    why. It is refused now, naming the key, and power control goes on where it was."""
    from tests.conftest import pinnable_board

    config = pinnable_board(tmp_path, camera={"source": "synthetic:empty"})
    governor = tmp_path / "board/sys/devices/system/cpu/cpufreq/policy0/scaling_governor"
    afile = tmp_path / "afile"
    afile.write_text("x")
    was, typo, said = {
        "sysfs_root": (tmp_path / "board" / "sys", tmp_path / "board" / "sys-typo",
                       "no such directory"),
        "journal_dir": (tmp_path / "board" / "journal", afile / "j",
                        f"{afile}: is a regular file"),
    }[key]
    daemon = start_daemon(config=config)
    with daemon.connect() as client:
        client.request("profile", set="performance")
        wait_for(lambda: governor.read_text().strip() == "performance", what="the pin")
        config.write_text(config.read_text().replace(f'"{was}"', f'"{typo}"'))
        with pytest.raises(ClientError) as info:
            client.request("reload")
        assert info.value.code == "bad_request"
        assert f"power.{key} {typo}: {said}" in str(info.value), info.value
        assert governor.read_text().strip() == "performance"
        client.request("profile", set="powersave")  # still written
        wait_for(lambda: governor.read_text().strip() != "performance", what="the new pin")
        assert client.request("status")["power"]["writes"] is True
    assert daemon.stop() == 0

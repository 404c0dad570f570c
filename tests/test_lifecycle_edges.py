"""The daemon's life cycle under systemd: a start, a reload or a stop that meets another one,
and what systemd is told meanwhile (READY=1, RELOADING=1, STOPPING=1, EXTEND_TIMEOUT_USEC=,
WATCHDOG=1)."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path
from typing import Callable

from bench.common import NotifyListener
from tests.conftest import DaemonProcess, tree_snapshot, write_config
from tests.fixtures.boards import materialize
from tests.test_daemon import wait_log
from wattgate.drivers.inference import default_model_path

StartDaemon = Callable[..., DaemonProcess]
AC = "devices/LNXSYSTM:00/LNXSYBUS:00/ACPI0003:00/power_supply/AC/online"
SMALL = {"source": "synthetic:empty", "width": 320, "height": 240}


def lines(notify: NotifyListener) -> list[str]:
    return [line for _, line in notify.received]


def sent_by_exit(notify: NotifyListener) -> list[str]:
    """Every line the daemon sent, read once it has exited (they all wait in the socket)."""
    notify.collect(0.2)
    return lines(notify)


def after(sent: list[str], first: str) -> list[str]:
    """What was sent after the first line that starts with `first` (all of it if none)."""
    for i, line in enumerate(sent):
        if line.startswith(first):
            return sent[i + 1:]
    return sent


# `wattgate run` that is sent SIGHUP while it binds its socket, with a config file already
# changed (a new camera size: a reload that opens a new camera and loads the model again),
# and whose model loads slowly from the second load on: a delegate compiling for an NPU
# cannot happen here, so a 1.5 s sleep stands in for it, with the EXTEND_* intervals scaled
# down to match.
HUP_THEN_SLOW_RELOAD = """
import os, signal, sys, time
import wattgate.daemon.app as app
from wattgate.cli import main
from wattgate.daemon.server import Server
config = sys.argv[1]
real_start, real_load, loads = Server.start, app.load_model, []
async def start(self, *args):
    with open(config) as f:
        text = f.read()
    with open(config, "w") as f:
        f.write(text.replace("width = 320", "width = 336"))
    os.kill(os.getpid(), signal.SIGHUP)
    await real_start(self, *args)
def load_model(cfg):
    loads.append(cfg)
    if len(loads) > 1:
        time.sleep(1.5)
    return real_load(cfg)
Server.start = start
app.load_model = load_model
app.EXTEND_EVERY_S, app.EXTEND_STEP_S, app.EXTEND_MAX_S = 0.25, 60.0, 0.75
sys.exit(main(["run", "--config", config]))
"""


def test_a_reload_during_start_up_asks_for_more_start_time(
    start_daemon: StartDaemon, notify: NotifyListener
) -> None:
    """A SIGHUP during start-up is run before the first READY=1, which waits for it:
    TimeoutStartSec= covers that reload's model load as much as the start's own."""
    daemon = start_daemon(camera=SMALL, env={"NOTIFY_SOCKET": str(notify.path)},
                          argv=lambda config: [sys.executable, "-c", HUP_THEN_SLOW_RELOAD,
                                               str(config)])
    notify.wait_for("READY=1", timeout=60)
    assert "reloaded" in daemon.log()
    before_ready = lines(notify)[: lines(notify).index("READY=1")]
    assert "EXTEND_TIMEOUT_USEC=60000000" in before_ready, notify.received
    assert daemon.stop() == 0


# `wattgate run` whose camera open never returns, as a camera driver or a stream server
# that stopped answering does (no such device here), given 600 s before it is given up on.
HUNG_CAMERA_OPEN = """
import sys, threading
import wattgate.daemon.camera_watch as camera_watch
from wattgate.cli import main
never = threading.Event()
def opener(self, target, start_frame):
    print("opening the camera", file=sys.stderr, flush=True)
    never.wait()
camera_watch.SupervisedSource._default_opener = opener
camera_watch.WatchSettings.from_config = classmethod(
    lambda cls, cfg: cls(open_timeout_s=600.0))
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_stop_during_the_first_camera_open_does_not_wait_for_it(
    start_daemon: StartDaemon, notify: NotifyListener
) -> None:
    """SIGTERM while start-up waits for the camera's first open: the daemon stops now, as
    it does during the model load, and never tells systemd READY=1."""
    daemon = start_daemon(camera=SMALL, env={"NOTIFY_SOCKET": str(notify.path)},
                          argv=lambda config: [sys.executable, "-c", HUNG_CAMERA_OPEN,
                                               str(config)])
    wait_log(daemon, "opening the camera")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.log()
    sent = sent_by_exit(notify)
    assert "READY=1" not in sent and "STOPPING=1" in sent, sent


# `wattgate run` whose model loads never return after the first, as a delegate that hangs
# compiling for an NPU does (no NPU here).
HUNG_RELOAD = """
import sys, threading
import wattgate.daemon.app as app
from wattgate.cli import main
real_load, loads, never = app.load_model, [], threading.Event()
def load_model(cfg):
    loads.append(cfg)
    if len(loads) > 1:
        print("loading the model again", file=sys.stderr, flush=True)
        never.wait()
    return real_load(cfg)
app.load_model = load_model
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_stop_during_a_reload_does_not_wait_for_its_model(
    start_daemon: StartDaemon, notify: NotifyListener
) -> None:
    """TimeoutStopSec= is 20 s, a model load can take minutes: a stop during a reload's
    load gives the board back and exits now, and tells systemd nothing after STOPPING=1."""
    daemon = start_daemon(camera=SMALL, env={"NOTIFY_SOCKET": str(notify.path)},
                          argv=lambda config: [sys.executable, "-c", HUNG_RELOAD, str(config)])
    daemon.connect().close()
    notify.wait_for("READY=1")
    daemon.config.write_text(daemon.config.read_text() + "[model]\nthreads = 2\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_log(daemon, "loading the model again")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.log()
    sent = sent_by_exit(notify)
    assert "STOPPING=1" in sent and after(sent, "STOPPING=1") == [], sent


def test_a_stop_during_a_model_variant_switch_does_not_wait_for_it(
    start_daemon: StartDaemon, notify: NotifyListener, tmp_path: Path
) -> None:
    """On battery the rule runs variant "lite"; mains power comes back and the main model
    is loaded in its place, and hangs. A stop meanwhile exits now, the board given back."""
    root = materialize("intel-mtl", tmp_path / "sys")  # BAT0 discharging, AC offline
    before = tree_snapshot(root)
    lite = tmp_path / "face_lite.tflite"
    shutil.copy(default_model_path(), lite)
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(
        run / "config.toml", run, camera=SMALL,
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
        model={"variants": {"lite": {"path": str(lite)}}},
        rules=[{"on_battery": True, "model_variant": "lite"}],
    )
    daemon = start_daemon(config, env={"NOTIFY_SOCKET": str(notify.path)},
                          argv=lambda config: [sys.executable, "-c", HUNG_RELOAD, str(config)])
    with daemon.connect() as client:
        assert client.request("status")["model"]["name"] == "face_lite"
    (root / AC).write_text("1\n")
    before[AC] = tree_snapshot(root)[AC]
    wait_log(daemon, "loading the model again")
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=30) == 0, daemon.log()
    assert tree_snapshot(root) == before


# `wattgate run` whose pipeline's invokes block while a flag file exists, as a wedged NPU
# driver's do (no NPU here), and that says when one begins to.
HANGING_INVOKE = """
import os, sys, threading, time
import wattgate.drivers.inference as inference
from wattgate.cli import main
flag = sys.argv[1]
real_invoke = inference.Model.invoke
def invoke(self, prepared):
    if threading.current_thread().name != "wattgate-infer":
        return real_invoke(self, prepared)
    if os.path.exists(flag):
        print("invoke hangs", file=sys.stderr, flush=True)
    while os.path.exists(flag):
        time.sleep(0.05)
    return real_invoke(self, prepared)
inference.Model.invoke = invoke
sys.exit(main(["run", "--config", sys.argv[2]]))
"""


def test_a_reload_to_a_camera_not_there_yet_keeps_the_watchdog_fed(
    start_daemon: StartDaemon, notify: NotifyListener, tmp_path: Path
) -> None:
    """A reload replaces a pipeline whose model hangs with one on a camera not plugged in
    yet (waited for: nothing to infer). The hung frame went with its pipeline; it must not
    count as inference pending for ever, which withheld the watchdog's pings for good and
    had systemd restart a daemon that was only waiting for its camera."""
    flag = tmp_path / "hang"
    flag.touch()
    daemon = start_daemon(camera=SMALL, gate={"enabled": False},
                          env={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "3000000"},
                          argv=lambda config: [sys.executable, "-c", HANGING_INVOKE, str(flag),
                                               str(config)])
    with daemon.connect() as client:
        wait_log(daemon, "invoke hangs")
        text = daemon.config.read_text()
        daemon.config.write_text(text.replace("synthetic:empty", str(tmp_path / "later.avi")))
        assert client.request("reload")["reloaded"]  # the old pipeline's stop gives up on it
        assert client.request("status")["source"]["state"] == "waiting"
    notify.wait_for("MONOTONIC_USEC=")
    for _ in range(2):
        notify.wait_for("WATCHDOG=1", timeout=10)
    flag.unlink()
    assert daemon.stop() == 0

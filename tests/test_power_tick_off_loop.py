"""The power controller's once-a-second tick does not hold up the clients.

The tick reads thermal zones, supplies, meters and IIO sensors, and waits for a slow one
(an ACPI battery behind the embedded controller, an I2C sensor's one-shot conversion) up
to power_inputs.WAIT_S. Run on the event loop, that wait held every client's requests and
results for as long, every second. Here a thermal zone of a fake RK3588 tree becomes a
named pipe once the daemon is up, so its next read blocks as a read blocks in a driver;
the daemon runs with WAIT_S raised to an hour, so a tick on the loop would hold it for
the whole test, and a status request must still be answered while the read is stuck.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import write_config
from tests.fixtures.boards import materialize
from tests.test_daemon import wait_log
from tests.test_power_status_stall import hung
from wattgate.client import Client
from wattgate.config import Config
from wattgate.daemon.app import Daemon
from wattgate.daemon.power import PowerController

# `wattgate run` whose tick waits an hour for a source that does not answer.
PATIENT_TICK = """
import sys
import wattgate.daemon.power_inputs as power_inputs
from wattgate.cli import main
power_inputs.WAIT_S = 3600.0
sys.exit(main(["run", "--config", sys.argv[1]]))
"""

ZONE = "class/thermal/thermal_zone0/temp"


def test_a_status_is_answered_while_the_ticks_read_of_a_zone_hangs(
    start_daemon: Any, tmp_path: Path,
) -> None:
    root = materialize("rk3588", tmp_path / "board")
    daemon = start_daemon(
        camera={"source": "synthetic:empty", "width": 160, "height": 120},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
        argv=lambda config: [sys.executable, "-c", PATIENT_TICK, str(config)],
    )
    daemon.connect().close()
    with hung(root, ZONE) as pipe:
        pipe.wait_for_reader()  # a tick is waiting for the zone now
        with Client(str(daemon.socket), timeout=30.0) as client:
            answer = client.request("status")
        assert answer["power"]["profile"]["name"], answer
    assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log(), daemon.log()


def test_a_profile_switched_by_the_tick_under_way_at_a_stop_is_still_an_event(
    start_daemon: Any, tmp_path: Path,
) -> None:
    """A stop while the tick waits for a zone: the tick still ends, and the profile its
    reading switches to is numbered and kept in the event log. Cancelled with the stop,
    its events were dropped while the switch they told of had happened."""
    root = materialize("rk3588", tmp_path / "board")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = write_config(
        run_dir / "config.toml", run_dir,
        camera={"source": "synthetic:empty", "width": 160, "height": 120},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
        rules=[{"name": "hot", "temp_above_c": 90.0, "profile": "powersave"}],
    )
    daemon = start_daemon(
        config=config, argv=lambda config: [sys.executable, "-c", PATIENT_TICK, str(config)])
    daemon.connect().close()
    with hung(root, ZONE) as pipe:
        pipe.wait_for_reader()
        daemon.proc.send_signal(signal.SIGTERM)
        wait_log(daemon, "stopping: waiting for the power tick under way")
        pipe.held = "95000\n"  # the zone answers, hot
    assert daemon.wait() == 0, daemon.log()
    with sqlite3.connect(run_dir / "state" / "events.db") as db:
        switches = [json.loads(body) for kind, body in db.execute(
            "SELECT kind, body FROM events ORDER BY seq") if kind == "profile_change"]
    assert any(s.get("profile") == "powersave" for s in switches), (switches, daemon.log())


def test_a_pin_answered_while_the_tick_returns_is_numbered_after_the_ticks_switch(
    tmp_path: Path,
) -> None:
    """The tick decides on its thread; a pin answered on the loop before the tick's events
    were numbered came out first, and the log ended saying the profile the tick had left.
    The thread's return is held back here (a busy machine reschedules it late); the pin
    comes meanwhile. In-process, to hold the thread between deciding and returning."""
    root = materialize("rk3588", tmp_path / "board")
    cfg = Config.model_validate({
        "daemon": {"state_dir": str(tmp_path / "state"), "socket": str(tmp_path / "s.sock")},
        "power": {"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
        "rules": [{"name": "hot", "temp_above_c": 80, "profile": "powersave"}],
    })
    daemon = Daemon(cfg)
    power = PowerController(cfg)
    power.start(time.monotonic())
    daemon.power = power
    decided = threading.Event()
    pinned = threading.Event()
    real_tick = power.tick

    def late_return(now: float, load: Any = None, queued: bool = False) -> list[Any]:
        events = real_tick(now, load, queued=queued)
        decided.set()
        assert pinned.wait(30)
        return events

    power.tick = late_return  # type: ignore[method-assign]
    (root / ZONE).write_text("90000\n")

    async def tick_and_pin() -> None:
        daemon._loop = asyncio.get_running_loop()
        tick = asyncio.ensure_future(daemon._power_tick(power, time.monotonic()))
        while not decided.is_set():
            await asyncio.sleep(0.01)
        daemon.pin_profile("performance", "client-1")
        pinned.set()
        await tick

    try:
        asyncio.run(tick_and_pin())
        switches = [e for e in daemon.eventlog.since(0, 100) if e["kind"] == "profile_change"]
        assert [e["profile"] for e in switches] == ["powersave", "performance"], switches
    finally:
        power.stop()
        daemon.eventlog.close(0.0)

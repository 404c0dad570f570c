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

import json
import signal
import sqlite3
import sys
from pathlib import Path
from typing import Any

from tests.conftest import write_config
from tests.fixtures.boards import materialize
from tests.test_daemon import wait_log
from tests.test_power_status_stall import hung
from wattgate.client import Client

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
    )
    with config.open("a") as file:
        file.write('\n[[rules]]\nname = "hot"\ntemp_above_c = 90.0\nprofile = "powersave"\n')
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

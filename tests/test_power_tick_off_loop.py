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

import sys
from pathlib import Path
from typing import Any

from tests.fixtures.boards import materialize
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

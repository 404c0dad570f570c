"""A reload reads its config off the event loop: clients are answered meanwhile."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess

StartDaemon = Callable[..., DaemonProcess]

# `wattgate run` whose config reads after the first (the start's) wait for a line on a FIFO
# before reading: a drop-in of many thousand keys, or a config on a slow medium, which the
# test cannot make take long without timing it.
SLOW_RELOAD_READ = """
import sys
import wattgate.config
from wattgate.cli import main
real_load_raw, reads = wattgate.config.load_raw, []
def load_raw(*args, **kwargs):
    reads.append(args[0])
    if len(reads) > 1:
        print("config read started", file=sys.stderr, flush=True)
        with open(sys.argv[2]) as fifo:
            fifo.readline()
    return real_load_raw(*args, **kwargs)
wattgate.config.load_raw = load_raw
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def wait_log(daemon: DaemonProcess, text: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{daemon.log()}"
        time.sleep(0.05)


def test_a_status_is_answered_while_a_reload_reads_the_config(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """The reload read and validated the config on the event loop: while it did (seconds
    for a drop-in of 10 000 keys), no client was answered and the watchdog's pings
    stopped."""
    fifo = tmp_path / "read"
    os.mkfifo(fifo)
    daemon = start_daemon(
        camera={"source": "synthetic:empty", "width": 320, "height": 240},
        argv=lambda config: [sys.executable, "-c", SLOW_RELOAD_READ, str(config), str(fifo)],
    )
    try:
        with daemon.connect() as client:
            wait_log(daemon, "ready: model")
            daemon.proc.send_signal(signal.SIGHUP)
            wait_log(daemon, "config read started")
            client.settimeout(30.0)
            assert client.request("status")["class"] == "status"
            assert "reloaded" not in daemon.log()  # the read is still waiting
            with open(fifo, "w") as release:
                release.write("go\n")
            wait_log(daemon, "reloaded")
            assert client.request("status")["class"] == "status"
    finally:  # a read still waiting (a status that was not answered) reads the FIFO's end
        with contextlib.suppress(OSError):  # ENXIO: no reader
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert daemon.stop() == 0, daemon.log()
    assert "Traceback" not in daemon.log(), daemon.log()

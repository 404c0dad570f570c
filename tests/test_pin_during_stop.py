"""A pin asked while the daemon stops is refused as `unavailable`, not answered as pinned.

From the stop on, the original sysfs values go back and the profile's writer is stopped:
a pin then changes nothing on the board, yet was answered with the pinned profile, and a
script that pins and reads the answer believed it held. The stop is held open here by a
limit the restore must write, made a named pipe nobody reads (a store stuck in a driver):
the daemon still serves its clients meanwhile. Real daemon, fake RK3588 tree, real
AF_UNIX sockets."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import DaemonProcess, pinnable_board
from tests.test_daemon import wait_log
from wattgate.client import ClientError

StartDaemon = Callable[..., DaemonProcess]
BIG_MAX = "devices/system/cpu/cpufreq/policy4/scaling_max_freq"


@pytest.mark.timeout(300)
def test_a_pin_while_the_daemon_stops_is_unavailable(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    config = pinnable_board(tmp_path, camera={"source": "synthetic:empty"})
    daemon = start_daemon(config=config)
    limit = Path(os.path.realpath(tmp_path / "board" / "sys" / BIG_MAX))
    with daemon.connect() as client:
        client.request("profile", set="performance")  # journals and writes the limit
        limit.unlink()
        os.mkfifo(limit)  # the restore's write of it blocks in open() until it is read
        daemon.proc.send_signal(signal.SIGTERM)
        wait_log(daemon, "INFO wattgate.daemon: stopping")
        try:
            with pytest.raises(ClientError) as refused:
                client.request("profile", set="powersave")
            assert refused.value.code == "unavailable"
            assert "stopping" in refused.value.message
            assert client.request("profile")["profile"]["name"] == "performance"
        finally:
            with open(limit, encoding="ascii") as pipe:  # the restore's write gets through
                original = pipe.read()
            limit.unlink()
            limit.write_text(original)
    assert daemon.wait() == 0

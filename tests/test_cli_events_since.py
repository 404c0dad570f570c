"""`wattgate events --since N` against a daemon whose event log ends before N: its
state_dir was wiped or is volatile (a read-only image), so the numbers started over. A
script that kept N across that would get nothing, without a word; stderr now says so."""

from __future__ import annotations

import subprocess
import sys
from typing import Callable

from tests.conftest import DaemonProcess


def test_a_log_that_ends_before_since_is_said_on_stderr(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    daemon = start_daemon(camera={"source": "synthetic:empty"})
    with daemon.connect() as client:
        last = int(client.request("events", since=0, limit=1)["last_seq"])
    since = last + 1000
    run = subprocess.run(
        [sys.executable, "-m", "wattgate.cli", "events", "--since", str(since), "--socket",
         str(daemon.socket)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    # the log may have grown meanwhile, never past since
    assert f"before {since}" in lines[0] and "started over" in lines[0], lines[0]
    assert daemon.stop() == 0

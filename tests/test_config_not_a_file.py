"""A config file, or a drop-in, that is not a regular file: a FIFO blocks its reader.

`mkfifo config.d/50-local.toml` (a tool feeding settings through a pipe, or a mistake)
made check-config hang, and a reload block the daemon's event loop on the read: no client
was answered, the watchdog's pings stopped and SIGTERM was not acted on. The file is now
refused as not a regular file, named, before anything reads it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import DaemonProcess, write_config
from wattgate.client import ClientError
from wattgate.config import ConfigError, load_config

StartDaemon = Callable[..., DaemonProcess]


def test_a_fifo_as_the_config_is_refused_by_check_config(tmp_path: Path) -> None:
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-m", "wattgate.cli", "check-config", str(fifo)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    assert f"{fifo}:" in done.stderr and "a FIFO, not a regular file" in done.stderr


def test_a_fifo_as_a_dropin_is_named(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text("")
    (tmp_path / "config.d").mkdir()
    fifo = tmp_path / "config.d" / "50-local.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as info:
        load_config(main)
    assert info.value.source == str(fifo)
    assert info.value.problems == ["is a FIFO, not a regular file"]


def test_a_reload_onto_a_fifo_dropin_leaves_the_daemon_serving(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(run / "config.toml", run, camera={"source": "synthetic:empty"})
    daemon = start_daemon(config=config)
    with daemon.connect() as client:
        (run / "config.d").mkdir()
        os.mkfifo(run / "config.d" / "50-local.toml")
        os.kill(daemon.proc.pid, signal.SIGHUP)
        time.sleep(1.0)  # the reload runs (and, before, blocked the loop on the read)
        try:
            assert client.request("status")["class"] == "status"
        except ClientError as exc:
            pytest.fail(f"the daemon stopped answering after the reload: {exc}")
        with pytest.raises(ClientError) as info:
            client.request("reload")
        assert "50-local.toml" in str(info.value) and "FIFO" in str(info.value)
    assert daemon.stop() == 0

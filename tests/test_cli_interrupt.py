"""Ctrl-C while `wattgate` is still loading (about 0.2 s of imports: asyncio, pydantic, the
bench and power commands) is the quiet exit 130 README promises, as it is once the command
runs. It printed a KeyboardInterrupt traceback and the process died by SIGINT.

No sleeps: the signal is sent once the process has loaded pydantic's compiled core, which
only the command's own imports load (Python's startup does not), so it lands while the
command is loading or, on a fast machine, once it runs; both must be a quiet 130. The
command waits for a daemon that never comes (`watch --reconnect`), so it is still there."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_cli_pipes import entry_point

MARKER = "_pydantic_core"  # pydantic's compiled core, mapped once wattgate.config loads it


def wait_for_mapping(pid: int, name: str, timeout: float = 60.0) -> None:
    """Until a file whose path holds `name` is mapped into process `pid`."""
    deadline = time.monotonic() + timeout
    while name not in Path(f"/proc/{pid}/maps").read_text():
        assert time.monotonic() < deadline, f"{name} never loaded"


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_while_loading_is_a_quiet_130(tmp_path: Path, attempt: int) -> None:
    proc = subprocess.Popen(
        [str(entry_point()), "watch", "--reconnect", "--socket", str(tmp_path / "none.sock")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_mapping(proc.pid, MARKER)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = stderr.decode(errors="replace")
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err

"""Client commands whose reader goes away (`wattgate watch --json | head -1`): exit 0 with
nothing on stderr, as README promises, so `set -o pipefail` and systemd see success.

The commands run as a user runs them, through the installed entry point and without
PYTHONUNBUFFERED: stdout to a pipe is then block-buffered, and what a command could not
write stays in that buffer, which Python flushes again at exit. A real daemon answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DaemonProcess


def entry_point() -> Path:
    """The `wattgate` command installed beside this Python (`make setup`)."""
    script = Path(sys.executable).parent / "wattgate"
    if not script.exists():
        pytest.skip(f"no wattgate entry point beside {sys.executable}; run `make setup`")
    return script


def buffered_env() -> dict[str, str]:
    """This environment without PYTHONUNBUFFERED, which the test run sets and a user's
    shell does not."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def run_into_closed_pipe(args: list[str], lines_read: int) -> tuple[int, str]:
    """(exit code, stderr) of `wattgate ARGS` whose stdout is a pipe that its reader closes
    after reading `lines_read` lines (0: closed before the command writes anything)."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([str(entry_point()), *args], stdout=write_end,
                            stderr=subprocess.PIPE, env=buffered_env())
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        for _ in range(lines_read):
            assert reader.readline(), "the command ended before writing a line"
    _, stderr = proc.communicate(timeout=60)
    return proc.returncode, stderr.decode(errors="replace")


@pytest.mark.parametrize(
    ("args", "lines_read"),
    [
        (["watch", "--json"], 1),
        (["watch"], 1),
        (["status", "--json"], 0),
        (["status"], 0),
    ],
    ids=["watch-json", "watch", "status-json", "status"],
)
def test_a_reader_that_goes_away_is_a_quiet_exit_0(
    daemon: DaemonProcess, args: list[str], lines_read: int
) -> None:
    code, stderr = run_into_closed_pipe([*args, "--socket", str(daemon.socket)], lines_read)
    assert (code, stderr) == (0, "")


def test_an_error_for_a_reader_gone_keeps_its_exit_code(tmp_path: Path) -> None:
    """--json's error object to a reader that went away: the exit code says the error
    (69: no daemon), stderr has its one line and no second broken pipe at exit."""
    code, stderr = run_into_closed_pipe(
        ["status", "--json", "--socket", str(tmp_path / "none.sock")], 0)
    assert code == 69
    assert len(stderr.splitlines()) == 1 and "BrokenPipe" not in stderr, stderr

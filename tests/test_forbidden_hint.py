"""The "forbidden" hint follows the socket's mode. It always said its owner and group may
connect and to join its group: for a socket of mode 0600 (daemon.socket_mode, or the
unit's SocketMode=) that was no way in, and it named group root."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as nobody")

# The real command as nobody without supplementary groups, dropped to once imported:
# Python's own files here may be under /root, which nobody cannot read.
STATUS_AS_NOBODY = f"""\
import os, sys
from wattgate.cli import main
os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
sys.exit(main(["status", "--socket", sys.argv[1]]))
"""


@pytest.fixture
def listening(reachable_tmp: Path) -> Iterator[Path]:
    """A real listening Unix socket of root's, in a directory anyone may search."""
    path = reachable_tmp / "wattgate.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        yield path


def status_as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", STATUS_AS_NOBODY, str(path)],
                          capture_output=True, text=True, timeout=60)


def test_a_socket_only_its_owner_may_use_names_the_mode_not_a_group(listening: Path) -> None:
    listening.chmod(0o600)
    run = status_as_nobody(listening)
    assert run.returncode == 77 and len(run.stderr.splitlines()) == 1, run.stderr
    assert f"cannot connect to {listening}: Permission denied" in run.stderr
    assert "only its owner (root) may connect (mode 0600" in run.stderr, run.stderr
    assert "daemon.socket_mode" in run.stderr and "SocketMode=" in run.stderr
    assert "group" not in run.stderr.replace("its group", ""), run.stderr


def test_a_socket_without_group_write_is_owner_only_too(listening: Path) -> None:
    """connect() needs write permission: a group that may only read cannot connect."""
    listening.chmod(0o640)
    run = status_as_nobody(listening)
    assert run.returncode == 77 and "only its owner (root) may connect (mode 0640" in run.stderr


def test_a_socket_its_group_may_use_still_says_to_join_the_group(listening: Path) -> None:
    listening.chmod(0o660)
    run = status_as_nobody(listening)
    assert run.returncode == 77, run.stderr
    assert ("its owner and group may connect: add the user to group root (usermod -aG root "
            "USER) and log in again") in run.stderr, run.stderr

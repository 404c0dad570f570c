"""What the daemon does when daemon.socket cannot be bound as its own: it refuses to start,
naming daemon.socket, the path and what is there, and touches nothing.

Only a socket file that refuses connections (ECONNREFUSED: nobody listens on it) is a
stale one a crashed daemon left, and is replaced. A live datagram socket (a /dev/log, a
NOTIFY_SOCKET) answers a stream connect with EPROTOTYPE and another user's socket with
EACCES: both were taken for stale and deleted.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess, run_as
from wattgate.config import DaemonConfig

StartDaemon = Callable[..., DaemonProcess]
NOBODY = 65534


def test_a_live_datagram_socket_at_daemon_socket_is_left_alone(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """A datagram socket someone listens on (as journald's /dev/log or systemd's
    NOTIFY_SOCKET) at daemon.socket: the daemon exits naming it, and it still receives."""
    path = tmp_path / "dgram.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(str(path))
        daemon = start_daemon(daemon={"socket": str(path)})
        assert daemon.wait() != 0
        errors = [line for line in daemon.log().splitlines() if line.startswith("wattgate:")]
        assert len(errors) == 1, daemon.log()
        assert f"daemon.socket {path}: " in errors[0] and "datagram" in errors[0], errors
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"still here", str(path))
        other.settimeout(5)
        assert other.recv(64) == b"still here"


def test_a_socket_this_user_may_not_connect_to_is_left_alone(reachable_tmp: Path) -> None:
    """Another user's socket (mode 0600, root's) in a directory this user may write: a
    connect gets EACCES, which says nothing about whether it is live, so it is not
    deleted. In-process as nobody (the venv's python is not nobody's to run)."""
    from wattgate.daemon.server import bind_socket

    shared = reachable_tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # no sticky bit: nobody could delete root's socket file
    path = shared / "root.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen(1)
        os.chmod(path, 0o600)
        cfg = DaemonConfig(socket=str(path), state_dir=str(reachable_tmp / "state"))

        def attempt() -> str:
            try:
                bind_socket(cfg).close()
            except OSError as exc:
                return f"refused: {exc}"
            return "bound"

        report = run_as(NOBODY, NOBODY, attempt)
        assert report.startswith("refused: "), report
        assert f"daemon.socket {path}: " in report and "may not connect" in report, report
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # still the one listening

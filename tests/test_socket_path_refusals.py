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


def bind_as_nobody(cfg: DaemonConfig) -> str:
    """What bind_socket(cfg) does as nobody, in a forked child of this process: "bound",
    or "refused: " and its error's text."""
    from wattgate.daemon.server import bind_socket

    def attempt() -> str:
        try:
            bind_socket(cfg).close()
        except OSError as exc:
            return f"refused: {exc}"
        return "bound"

    return run_as(NOBODY, NOBODY, attempt)


def test_a_live_datagram_socket_at_daemon_socket_is_left_alone(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """A datagram socket someone listens on (as journald's /dev/log or systemd's
    NOTIFY_SOCKET) at daemon.socket: the daemon exits naming it, and it still receives."""
    path = tmp_path / "dgram.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
        other.bind(str(path))
        daemon = start_daemon(daemon={"socket": str(path)})
        assert daemon.wait() == 69  # EX_UNAVAILABLE: a restart cannot help
        errors = [line for line in daemon.log().splitlines() if line.startswith("wattgate:")]
        assert len(errors) == 1, daemon.log()
        assert errors[0].startswith(f"wattgate: daemon.socket {path}: "), errors
        assert "datagram" in errors[0], errors
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"still here", str(path))
        other.settimeout(5)
        assert other.recv(64) == b"still here"


def test_a_socket_this_user_may_not_connect_to_is_left_alone(reachable_tmp: Path) -> None:
    """Another user's socket (mode 0600, root's) in a directory this user may write: a
    connect gets EACCES, which says nothing about whether it is live, so it is not
    deleted. In-process as nobody (the venv's python is not nobody's to run)."""
    shared = reachable_tmp / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # no sticky bit: nobody could delete root's socket file
    path = shared / "root.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen(1)
        os.chmod(path, 0o600)
        cfg = DaemonConfig(socket=str(path), state_dir=str(reachable_tmp / "state"))
        report = bind_as_nobody(cfg)
        assert report.startswith("refused: "), report
        assert f"daemon.socket {path}: " in report and "may not connect" in report, report
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # still the one listening


def test_a_socket_directory_that_is_a_regular_file_is_named(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """daemon.socket under a regular file (as root, who may write anywhere): makedirs said
    only "[Errno 17] File exists" of the file, without daemon.socket."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    for path in (afile / "s.sock", afile / "sub" / "s.sock"):
        daemon = start_daemon(daemon={"socket": str(path)})
        assert daemon.wait() == 69  # EX_UNAVAILABLE: a restart cannot help
        errors = [line for line in daemon.log().splitlines() if line.startswith("wattgate:")]
        assert len(errors) == 1, daemon.log()
        assert errors[0] == (f"wattgate: daemon.socket {path}: {afile}: is a regular file, "
                             "not a directory"), errors
    assert afile.read_text() == "x"


def test_a_socket_directory_this_user_may_not_write_is_named(reachable_tmp: Path) -> None:
    """An existing directory nobody may not write, and a missing one under it: bind said
    "[Errno 13] Permission denied" and makedirs "Permission denied: '.../sub'", neither
    naming daemon.socket nor whose the directory is. In-process as nobody (the venv's
    python is not nobody's to run)."""
    closed = reachable_tmp / "closed"
    closed.mkdir()
    os.chmod(closed, 0o755)
    for path, why in ((closed / "s.sock", "the socket is made in it"),
                      (closed / "sub" / "s.sock", f"{closed / 'sub'} is made in it")):
        cfg = DaemonConfig(socket=str(path), state_dir=str(reachable_tmp / "state"))
        report = bind_as_nobody(cfg)
        assert report == (f"refused: daemon.socket {path}: {closed}: is not writable by uid "
                          f"{NOBODY} (owner uid 0, gid 0, mode 0755); {why}"), report
    assert os.listdir(closed) == []

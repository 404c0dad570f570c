"""Notifier against a real NOTIFY_SOCKET listener; the ProgressWatch rule; socket activation.

The listener is what systemd itself is to the service: an AF_UNIX datagram socket whose
path is in NOTIFY_SOCKET. Each Notifier call must arrive as one datagram of
newline-separated assignments.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from bench.common import NotifyListener
from tests.conftest import DaemonProcess
from wattgate.daemon.notify import Notifier, ProgressWatch, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def _recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n") if line)


def _nothing_pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_messages_arrive_one_datagram_each(notify_socket: socket.socket) -> None:
    n = Notifier()
    assert n.enabled

    assert n.ready()
    assert _recv(notify_socket) == {"READY": "1"}

    assert n.status("profile eco\n 4.8 fps  skip 93%  1.9 W")
    assert _recv(notify_socket) == {"STATUS": "profile eco 4.8 fps skip 93% 1.9 W"}

    assert n.watchdog()
    assert _recv(notify_socket) == {"WATCHDOG": "1"}

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    msg = _recv(notify_socket)
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= after
    assert set(msg) == {"RELOADING", "MONOTONIC_USEC"}

    assert n.ready(status="reloaded")
    assert _recv(notify_socket) == {"READY": "1", "STATUS": "reloaded"}

    assert n.extend_timeout(90)
    assert _recv(notify_socket) == {"EXTEND_TIMEOUT_USEC": "90000000"}

    assert n.stopping()
    assert _recv(notify_socket) == {"STOPPING": "1"}
    assert _nothing_pending(notify_socket)


def test_silent_without_notify_socket(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET")
    n = Notifier()
    assert not n.enabled
    assert not n.ready()
    assert not n.status("x")
    assert not n.watchdog()
    assert not n.reloading()
    assert not n.stopping()
    assert _nothing_pending(notify_socket)


def test_explicit_environ_overrides_process_environment(notify_socket: socket.socket) -> None:
    assert not Notifier(environ={}).ready()
    assert _nothing_pending(notify_socket)


def test_vanished_listener_does_not_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert Notifier().watchdog() is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


# ProgressWatch: times are plain numbers chosen by the test, never the wall clock.


def test_fresh_watch_is_healthy_for_one_stall_limit() -> None:
    w = ProgressWatch(now=100.0, stall_limit=10.0)
    assert w.healthy(100.0)
    assert w.healthy(110.0)
    assert w.stalled(110.5) == ["capture"]


def test_idle_model_is_healthy_while_capture_moves() -> None:
    # The gate drops every frame: no work reaches the model for minutes, and that is fine.
    w = ProgressWatch(now=0.0, stall_limit=10.0)
    for t in range(0, 600, 5):
        w.capture_progress(float(t))
        assert w.healthy(float(t) + 4.0)


def test_hung_inference_stops_being_healthy() -> None:
    w = ProgressWatch(now=0.0, stall_limit=10.0)
    w.capture_progress(50.0)
    w.work_pending(50.0)
    for t in range(51, 61):
        w.capture_progress(float(t))
        w.work_pending(float(t))  # newer frames keep arriving; the first one still waits
    assert w.healthy(60.0)
    w.capture_progress(61.0)
    assert w.stalled(61.0) == ["inference"]
    assert not w.healthy(61.0)
    # The invoke returns after all: pings may resume.
    w.inference_progress(62.0)
    w.capture_progress(62.0)
    assert w.healthy(62.0)


def test_busy_model_with_back_to_back_work_stays_healthy() -> None:
    w = ProgressWatch(now=0.0, stall_limit=10.0)
    w.work_pending(0.0)
    for t in range(3, 300, 3):
        w.capture_progress(float(t))
        w.inference_progress(float(t), still_pending=True)
        assert w.healthy(float(t) + 9.0)
    # ...and a model that stops while work is still queued is caught.
    assert w.stalled(297.0 + 10.5) == ["capture", "inference"]


def test_stalled_capture_is_reported_unless_paused() -> None:
    w = ProgressWatch(now=0.0, stall_limit=10.0)
    w.capture_progress(5.0)
    assert w.stalled(16.0) == ["capture"]
    w.pause_capture()  # camera unplugged, waiting for hotplug
    assert w.healthy(500.0)
    w.resume_capture(500.0)
    assert w.healthy(509.0)
    assert w.stalled(511.0) == ["capture"]


def test_a_camera_may_stay_quiet_for_camera_stall_s_before_the_stall_limit_runs() -> None:
    w = ProgressWatch(now=0.0, stall_limit=10.0)
    w.camera_quiet_s = 30.0  # camera.stall_s: the supervisor reopens it after that
    w.capture_progress(5.0)
    assert w.healthy(44.0)
    assert w.stalled(46.0) == ["capture"]  # its supervisor did not pause capture by then


def test_snapshot_and_bad_limit() -> None:
    w = ProgressWatch(now=0.0, stall_limit=10.0)
    w.work_pending(1.0)
    snap = w.snapshot(12.0)
    assert snap["inference_pending"] is True
    assert snap["stalled"] == ["capture", "inference"]
    assert snap["capture_age"] == 12.0
    with pytest.raises(ValueError):
        ProgressWatch(now=0.0, stall_limit=0)


# Socket activation: systemd-socket-activate is the real thing the socket unit does.


def socket_activated(path: Path, script: str, *options: str) -> subprocess.Popen[str]:
    """`script` run by systemd-socket-activate listening at `path`, once the socket is
    there (the script starts at the first connection or datagram)."""
    proc = subprocess.Popen(
        ["systemd-socket-activate", *options, "-l", str(path), sys.executable, "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 10
    try:
        while not path.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "socket never appeared"
            time.sleep(0.02)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing"
)
def test_inherited_listener_under_systemd_socket_activate(tmp_path: Path) -> None:
    path = tmp_path / "wattgate.sock"
    script = textwrap.dedent(
        """
        import os
        from wattgate.daemon.notify import inherited_listener
        s = inherited_listener()
        assert s is not None, "no inherited listener"
        assert "LISTEN_FDS" not in os.environ
        conn, _ = s.accept()
        conn.sendall(b"hello from fd %d\\n" % s.fileno())
        conn.close()
        """
    )
    proc = socket_activated(path, script)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(20)
            c.connect(str(path))
            data = c.makefile("rb").readline()
        assert data == b"hello from fd 3\n"
    finally:
        proc.kill()
        proc.wait()


def test_no_inherited_listener_without_listen_fds(monkeypatch: pytest.MonkeyPatch) -> None:
    from wattgate.daemon.notify import inherited_listener

    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    assert inherited_listener() is None


def end_the_wait_for_a_writer(fifo: Path) -> None:
    """Write what is no video into the FIFO the camera waits on, and close it: the open
    fails now instead of after FIFO_WAIT_S. Nothing to do when the wait is already over
    (no reader: ENXIO)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        return
    try:
        os.write(fd, b"no video\n")
    finally:
        os.close(fd)


def test_a_reload_during_start_up_sends_no_reloading_or_ready_before_the_first_ready(
    start_daemon: Callable[..., DaemonProcess], notify: NotifyListener, tmp_path: Path
) -> None:
    """systemd takes the first READY=1 as the end of start-up (`systemctl start` returns,
    units ordered after us start). A SIGHUP while start-up still waited for the camera
    sent RELOADING=1 and READY=1 at the reload's end, before start-up was done.

    The camera is a FIFO nobody writes to: start-up waits for its first open (a writer,
    or FIFO_WAIT_S) while the reload runs. Once the reload is done, a writer sends a few
    bytes that are no video: the open fails at once, as it would at FIFO_WAIT_S, and
    start-up goes on without the camera."""
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    daemon = start_daemon(env={"NOTIFY_SOCKET": str(notify.path)},
                          camera={"source": str(fifo)}, gate={"heartbeat_s": 5.0})
    deadline = time.monotonic() + 60
    while not daemon.socket.exists():  # listening: SIGHUP is the daemon's from now on
        assert daemon.proc.poll() is None and time.monotonic() < deadline, daemon.log()
        time.sleep(0.02)
    daemon.config.write_text(
        daemon.config.read_text().replace("heartbeat_s = 5.0", "heartbeat_s = 3.0"))
    daemon.proc.send_signal(signal.SIGHUP)
    while "reloaded" not in daemon.log():
        assert daemon.proc.poll() is None and time.monotonic() < deadline, daemon.log()
        time.sleep(0.02)
    end_the_wait_for_a_writer(fifo)
    notify.wait_for("READY=1", timeout=60)
    first_ready = next(i for i, (_, line) in enumerate(notify.received) if line == "READY=1")
    before = [line for _, line in notify.received[:first_ready]]
    assert not [line for line in before if line.startswith(("RELOADING=", "MONOTONIC_USEC="))]
    assert daemon.log().index("reloaded") < daemon.log().index("ready:"), daemon.log()
    with daemon.connect() as client:
        assert client.request("status")["class"] == "status"
    assert [line for _, line in notify.collect(1.0) if line == "READY=1"] == []  # just one
    assert daemon.stop() == 0


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing"
)
def test_a_passed_socket_the_daemon_cannot_serve_on_is_named_and_closed(tmp_path: Path) -> None:
    """A socket unit with ListenDatagram= hands over a datagram socket: it is not taken,
    a warning says what it is, and it is closed (kept, it sat open and unused, unsaid)."""
    path = tmp_path / "wattgate.sock"
    script = textwrap.dedent(
        """
        import logging, os, sys
        logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s")
        from wattgate.daemon.notify import inherited_listener
        print("taken", inherited_listener())
        try:
            os.fstat(3)
            print("fd 3 open")
        except OSError:
            print("fd 3 closed")
        """
    )
    proc = socket_activated(path, script, "--datagram")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
            c.sendto(b"wake", str(path))  # what makes systemd-socket-activate start it
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert "taken None" in out, (out, err)
    assert ("WARNING fd 3 passed by systemd is an AF_UNIX SOCK_DGRAM socket, which wattgate "
            "does not serve on; closed") in out, out
    assert "fd 3 closed" in out, out

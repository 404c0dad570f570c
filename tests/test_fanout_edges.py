"""Result fan-out and connection life cycles at their edges: clients that stop reading,
close half-way or leave with data queued, over real AF_UNIX connections to the real
daemon (or a real Server on a real socket where the daemon's start-up is the subject)."""

from __future__ import annotations

import fcntl
import json
import select
import socket
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess
from tests.test_daemon import wait_status
from tests.test_socket import RawClient
from wattgate.daemon.server import FLOOD_GRACE_S

StartDaemon = Callable[..., DaemonProcess]

# How much longer than FLOOD_GRACE_S a client that asked and reads nothing waits to show it
# is not cut off: the daemon reads the request and starts that grace within milliseconds,
# so twice the grace proved no more than this.
FLOOD_MARGIN_S = 2.0

# A daemon whose model loads only once the file named by its first argument exists: it
# listens, but is not ready, for as long as a test wants.
MODEL_LOADS_ON_CUE = """
import sys, time
from pathlib import Path
import wattgate.daemon.app as app
cue, real_load = Path(sys.argv[1]), app.load_model
def load_model(cfg):
    while not cue.exists():
        time.sleep(0.02)
    return real_load(cfg)
app.load_model = load_model
from wattgate.cli import main
sys.exit(main(["run", "--config", sys.argv[2]]))
"""


def queued_for(sock: socket.socket) -> int:
    """Bytes the kernel holds for sock to read (FIONREAD)."""
    raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    count: int = struct.unpack("i", raw)[0]
    return count


def grows(sock: socket.socket, before: int, wait: float) -> bool:
    """Whether more than `before` bytes are queued for sock within `wait` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if queued_for(sock) > before:
            return True
        time.sleep(0.01)
    return False


def hung_up(sock: socket.socket, timeout: float) -> bool:
    """Whether the daemon closes its end of sock within timeout (POLLHUP: both directions
    shut, which a client's own SHUT_WR alone does not make)."""
    poller = select.poll()
    poller.register(sock, select.POLLHUP)
    return any(mask & select.POLLHUP for _, mask in poller.poll(timeout * 1000))


def test_a_closing_client_that_never_reads_its_last_answers_is_cut_off(
    start_daemon: StartDaemon,
) -> None:
    """A client sends requests without reading the answers until the kernel's socket
    buffer is full, so the last few answers wait in the daemon (less than the transport's
    high-water mark), then closes its sending side and never reads. The daemon must give
    up on it after its grace period, as it does when more is waiting; it kept the
    connection (and its file descriptor) open for as long as the peer did."""
    daemon = start_daemon(camera={"source": "synthetic:empty"})
    daemon.connect().close()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(daemon.socket))
        while not queued_for(sock):  # the hello
            time.sleep(0.01)
        unanswered = 0
        while unanswered < 3:  # three answers that did not reach the kernel's buffer
            before = queued_for(sock)
            sock.sendall(b'{"cmd":"status"}\n')
            unanswered = 0 if grows(sock, before, 0.3) else unanswered + 1
        sock.shutdown(socket.SHUT_WR)
        assert hung_up(sock, 60.0), "the daemon kept a connection that does not read"
    with daemon.connect() as client:
        assert client.request("status")["clients"] == 1
    assert daemon.stop() == 0


def test_a_subscriber_behind_on_results_that_asks_once_is_not_taken_for_a_flood(
    start_daemon: StartDaemon,
) -> None:
    """Results waiting for a slow subscriber are dropped and counted, never held against
    it: the flood rule is about its answers (docs/protocol.md). A subscriber with a long
    queue falls behind, reads up to the overflow notice (the daemon then hands it the whole
    queue at once), asks one status and reads nothing for longer than the flood grace. It
    must still get its answer; it was cut off as a request flood because the results
    waiting for it were counted as unread answers."""
    daemon = start_daemon(
        gate={"enabled": False}, camera={"realtime": False}, daemon={"client_queue": 4096}
    )
    watcher = daemon.connect()
    raw = RawClient(str(daemon.socket))
    raw.read()
    raw.send(b'{"cmd":"subscribe","topics":["results"],"id":1}\n')
    start = watcher.request("status")["pipeline"]["inferred"]
    # Stalled until the queue has overflowed: the kernel's buffer (~200 KB), the
    # transport's 64 KiB and 4096 queued results are less than 6000 results.
    wait_status(watcher, lambda s: s["pipeline"]["inferred"] > start + 6000, timeout=120)
    while raw.read()["class"] != "overflow":
        pass
    raw.send(b'{"cmd":"status","id":"mine"}\n')
    # reading nothing: long enough to be cut off, if it were
    time.sleep(FLOOD_GRACE_S + FLOOD_MARGIN_S)
    while True:
        line = raw.file.readline()
        assert line.endswith(b"\n"), f"cut off: {daemon.log()[-300:]}"
        message = json.loads(line)
        if message.get("id") == "mine":
            break
    assert message["class"] == "status"
    raw.close()
    watcher.close()
    assert daemon.stop() == 0


def test_clients_that_left_while_the_model_loaded_do_not_hold_their_slots(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """Until the daemon is ready a connection waits for its hello and is not read, so a
    client that gave up meanwhile (a connect timeout shorter than the model's load) was
    not noticed and kept its place among daemon.max_clients: clients connecting later were
    told busy instead of waiting. One that only closed its sending side is still there."""
    cue = tmp_path / "load now"
    daemon = start_daemon(
        daemon={"max_clients": 2},
        argv=lambda config: [sys.executable, "-c", MODEL_LOADS_ON_CUE, str(cue), str(config)],
    )
    deadline = time.monotonic() + 60
    while "listening on" not in daemon.log():
        assert time.monotonic() < deadline and daemon.proc.poll() is None, daemon.log()
        time.sleep(0.02)
    half = RawClient(str(daemon.socket))
    half.sock.shutdown(socket.SHUT_WR)  # sent all it had to say: nothing
    for _ in range(3):  # clients that gave up waiting
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
            gone.connect(str(daemon.socket))
    late = RawClient(str(daemon.socket))
    late.send(b'{"cmd":"status","id":1}\n')
    cue.write_text("")
    assert late.read()["class"] == "hello"
    assert late.answer()["class"] == "status"
    assert half.read()["class"] == "hello"
    assert half.file.readline() == b""  # then closed, having asked nothing
    half.close()
    late.close()
    assert daemon.stop() == 0


def test_a_client_still_flushing_its_answers_keeps_its_place(
    start_daemon: StartDaemon,
) -> None:
    """A client that closed its sending side with answers it has not read keeps its
    connection (and what is queued for it) until they are read or CLOSE_GRACE_S is out.
    Its place among daemon.max_clients was freed at once, so one client that asked for
    large answers and hung up, again and again, made the daemon hold any number of such
    connections: max_clients bounded neither its fds nor its memory."""
    daemon = start_daemon(daemon={"max_clients": 2}, camera={"source": "synthetic:empty"})
    daemon.connect().close()  # ready
    labels = json.dumps([f"l{i:06d}" for i in range(5000)])  # each answer repeats them
    asking = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    asking.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    asking.connect(str(daemon.socket))
    request = f'{{"cmd":"subscribe","topics":["events"],"labels":{labels}}}\n'.encode()
    asking.sendall(request * 8)  # ~450 KB of answers, more than the socket holds
    asking.shutdown(socket.SHUT_WR)
    time.sleep(1.0)  # answered by now, and the daemon has read the end of its stream
    other = RawClient(str(daemon.socket))
    assert other.read()["class"] == "hello"
    third = RawClient(str(daemon.socket))
    assert third.read() == {"class": "error", "code": "busy",
                            "message": "too many clients; try again later"}
    third.close()
    asking.close()  # its answers are dropped with it, and its place is free again
    deadline = time.monotonic() + 10
    while True:
        later = RawClient(str(daemon.socket))
        if later.read()["class"] == "hello":
            break
        later.close()
        assert time.monotonic() < deadline, "the place was not freed"
        time.sleep(0.1)
    later.close()
    other.close()
    assert daemon.stop() == 0

"""What a client reads, in what order, at the edges of a connection's life: after an
`unsubscribe`, when it is one client too many, and when the daemon stops under it. Over real
AF_UNIX connections to the real daemon."""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tests.conftest import DaemonProcess
from tests.test_daemon import wait_status
from tests.test_protocol import jpeg_b64
from tests.test_socket import RawClient

StartDaemon = Callable[..., DaemonProcess]


def messages_until(raw: RawClient, request_id: Any) -> list[dict[str, Any]]:
    """Every message up to and including the answer with request_id."""
    seen = []
    while True:
        message = raw.read()
        seen.append(message)
        if message.get("id") == request_id and message["class"] != "result":
            return seen


def test_no_result_comes_after_the_reply_to_unsubscribe(daemon: DaemonProcess) -> None:
    """A subscriber that read nothing for a while has results queued in the daemon (its
    socket is full). It unsubscribes, then asks a status: between the reply to the
    unsubscribe and the status, no result may come. They came: results queued before the
    unsubscribe were written after its reply."""
    watcher = daemon.connect()
    raw = RawClient(str(daemon.socket), rcvbuf=4096)
    raw.read()
    raw.send(b'{"cmd":"subscribe","id":"sub"}\n')
    start = watcher.request("status")["pipeline"]["inferred"]
    # Far more results than the kernel's buffer and the transport's 64 KiB hold: the rest
    # wait in the daemon's queue for this client.
    wait_status(watcher, lambda s: s["pipeline"]["inferred"] > start + 3000, timeout=120)
    raw.send(b'{"cmd":"unsubscribe","id":"unsub"}\n{"cmd":"status","id":"after"}\n')
    before = messages_until(raw, "unsub")
    assert before[-1]["class"] == "reply" and before[-1]["topics"] == []
    assert any(m["class"] == "result" for m in before)  # there was a queue
    after = messages_until(raw, "after")
    raw.send(b'{"cmd":"status","id":"end"}\n')
    after += messages_until(raw, "end")
    assert [m["class"] for m in after] == ["status", "status"], [m["class"] for m in after]
    raw.close()
    watcher.close()


def test_a_client_told_busy_reads_the_error_then_the_end(start_daemon: StartDaemon) -> None:
    """One client too many that sent its request at once, before reading: it must read the
    busy error and then an orderly end. The daemon closed with the request unread, and the
    client's send (or, had it been sent sooner, its read after the error) failed with
    ECONNRESET."""
    daemon = start_daemon(camera={"source": "synthetic:empty"}, daemon={"max_clients": 1})
    with daemon.connect() as first:
        for _ in range(3):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as extra:
                extra.settimeout(30.0)
                extra.connect(str(daemon.socket))
                extra.sendall(b'{"cmd":"status","id":1}\n')
                lines = extra.makefile("rb")
                busy = json.loads(lines.readline())
                assert (busy["class"], busy["code"]) == ("error", "busy")
                assert lines.readline() == b""
        assert first.request("status")["clients"] == 1
    assert daemon.stop() == 0


# Driver calls that take as long as a test wants, injected into the real daemon: a client
# image whose inference is still running, and an NPU invoke that never returns (a hung
# driver), cannot be had on demand. Cue files in the directory named by the first argument
# say when. "spin" keeps a client's image in native code (OpenCV, which drops the GIL for
# each call) for good, as a driver that polls its device would.
SLOW_PARTS = """
import sys, threading, time
import cv2, numpy
from pathlib import Path
import wattgate.daemon.pipeline as pipeline
import wattgate.drivers.inference as inference
cues = Path(sys.argv[1])
real_infer_image, real_invoke = pipeline.Pipeline.infer_image, inference.Model.invoke
def invoke(self, prepared):
    if (cues / "hang").exists():
        (cues / "hung").touch()
        threading.Event().wait()
    return real_invoke(self, prepared)
def infer_image(self, bgr):
    (cues / "image taken").touch()
    while (cues / "hold images").exists():
        time.sleep(0.02)
    while (cues / "spin").exists():
        cv2.GaussianBlur(numpy.zeros((1080, 1920), numpy.uint8), (21, 21), 0)
    return real_infer_image(self, bgr)
inference.Model.invoke, pipeline.Pipeline.infer_image = invoke, infer_image
from wattgate.cli import main
sys.exit(main(["run", "--config", sys.argv[2]]))
"""


def wait_for(path: Path, daemon: DaemonProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline and daemon.proc.poll() is None, daemon.log()
        time.sleep(0.02)


def slow_daemon(start_daemon: StartDaemon, cues: Path) -> DaemonProcess:
    """A ready daemon inferring every frame of a synthetic scene, with SLOW_PARTS."""
    cues.mkdir()
    daemon = start_daemon(
        camera={"source": "synthetic:empty", "realtime": False}, gate={"enabled": False},
        argv=lambda config: [sys.executable, "-c", SLOW_PARTS, str(cues), str(config)],
    )
    daemon.connect().close()
    return daemon


def infer_then_stop(daemon: DaemonProcess, cues: Path) -> tuple[RawClient, dict[str, Any]]:
    """A client sends an image; once the daemon has taken it, SIGTERM: (the client, the
    answer it read)."""
    raw = RawClient(str(daemon.socket))
    raw.read()
    raw.send(json.dumps({"cmd": "infer", "image": jpeg_b64("coffee.png", 50), "id": "img"})
             .encode() + b"\n")
    wait_for(cues / "image taken", daemon)
    daemon.proc.send_signal(signal.SIGTERM)
    return raw, raw.read()


def test_an_infer_running_when_the_daemon_stops_is_answered(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """SIGTERM while a client's image is in the model: the client gets an answer (here
    unavailable, the daemon is stopping) before the connection closes. It got none."""
    cues = tmp_path / "cues"
    daemon = slow_daemon(start_daemon, cues)
    (cues / "hold images").touch()
    raw, answer = infer_then_stop(daemon, cues)
    (cues / "hold images").unlink()
    assert (answer["class"], answer["id"], answer["code"]) == ("error", "img", "unavailable")
    assert answer["message"] == "the daemon is stopping"
    assert raw.file.readline() == b""
    raw.close()
    assert daemon.wait() == 0


def test_an_infer_waiting_on_a_hung_model_does_not_hold_the_daemon_stop(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """The pipeline's invoke hangs in the driver, holding the model; a client's image waits
    for the model. On SIGTERM the pipeline's thread is abandoned after its stop timeout;
    the thread that waited for the client's image must not keep the daemon from exiting.
    It did, for good: it was one of the event loop's executor threads, which Python waits
    for at exit."""
    cues = tmp_path / "cues"
    daemon = slow_daemon(start_daemon, cues)
    (cues / "hang").touch()
    wait_for(cues / "hung", daemon)
    raw, answer = infer_then_stop(daemon, cues)
    assert (answer["class"], answer["id"], answer["code"]) == ("error", "img", "unavailable")
    raw.close()
    assert daemon.wait(timeout=60) == 0, daemon.log()


def test_a_thread_left_in_native_code_does_not_abort_the_stop(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """A client's image is still in native code (a C++ call that released the GIL) when
    the daemon, stopped, exits. Python's finalization ends such a thread by unwinding it
    when it asks for the GIL back, and through C++ frames that is std::terminate: the
    daemon died of SIGABRT (exit -6, a failed unit and a core dump under systemd) after an
    orderly stop."""
    cues = tmp_path / "cues"
    daemon = slow_daemon(start_daemon, cues)
    (cues / "spin").touch()
    raw, answer = infer_then_stop(daemon, cues)
    assert (answer["class"], answer["id"], answer["code"]) == ("error", "img", "unavailable")
    raw.close()
    assert daemon.wait(timeout=60) == 0, daemon.log()

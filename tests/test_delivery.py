"""What a client reads, in what order, at the edges of a connection's life: after an
`unsubscribe`, when it is one client too many, and when the daemon stops under it. Over real
AF_UNIX connections to the real daemon."""

from __future__ import annotations

import json
import socket
from typing import Any, Callable

from tests.conftest import DaemonProcess
from tests.test_daemon import wait_status
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
    client's next read failed with ECONNRESET instead of the end."""
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

"""docs/protocol.md, claim by claim, against the real daemon over real AF_UNIX sockets.

Each test names the part of the page it holds the daemon (or the page) to.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess, pinnable_board
from tests.test_socket import RawClient
from wattgate.boards import materialize
from wattgate.daemon.eventlog import EventLog
from wattgate.daemon.hub import ClientSession, Hub

StartDaemon = Callable[..., DaemonProcess]
MAX_LINE = 65536  # "Lines are at most 64 KiB (65536 bytes, the `\n` included)"
PAGE = " ".join((Path(__file__).resolve().parent.parent / "docs" / "protocol.md")
                .read_text().split())


def answers(raw: RawClient, lines: list[str]) -> list[dict[str, Any]]:
    """The answers to lines, sent at once, in order (results and events skipped)."""
    raw.send("".join(line + "\n" for line in lines).encode())
    return [raw.answer() for _ in lines]


def as_nobody(socket_path: Path, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The answers to requests sent by a process running as uid/gid 65534: the real way to
    get a peer whose SO_PEERCRED credentials are not an administrator's."""
    code = (
        "import json, os, socket, sys\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb')\n"
        "f.readline()\n"
        "for r in sys.argv[2:]:\n"
        "    s.sendall(r.encode() + b'\\n'); print(f.readline().decode(), end='')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(socket_path), *map(json.dumps, requests)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a client as another uid")
def test_a_control_command_from_a_non_admin_is_forbidden_on_any_daemon(
    start_daemon: StartDaemon,
) -> None:
    """Access first: a non-admin's `set` on a daemon without power control was answered
    `unavailable`, which told the client to try again on a board with power control,
    where it would only be refused. The request's own shape is still checked first."""
    public = Path(tempfile.mkdtemp(prefix="wattgate-test-"))  # pytest's tmp is root's only
    public.chmod(0o755)
    try:
        daemon = start_daemon(camera={"source": "synthetic:empty"}, daemon={
            "socket": str(public / "wattgate.sock"), "socket_mode": 0o666,
            "admin_group": "wattgate-admins",
        })
        with daemon.connect() as client:
            assert client.hello["capabilities"]["power"] is False
        got = as_nobody(daemon.socket, [
            {"cmd": "profile", "set": "powersave", "id": 1},
            {"cmd": "profile", "set": None, "id": 2},
            {"cmd": "profile", "set": 5, "id": 3},
            {"cmd": "profile", "id": 4},
            {"cmd": "reload", "id": 5},
        ])
        assert [(m["id"], m.get("code")) for m in got] == [
            (1, "forbidden"), (2, "forbidden"), (3, "bad_request"), (4, "unavailable"),
            (5, "forbidden")]
        assert all("wattgate-admins" in m["message"] for m in (got[0], got[1], got[4]))
        assert daemon.stop() == 0
    finally:
        shutil.rmtree(public)
    assert "Setting is checked first" in PAGE


def big_event_log(state_dir: Path) -> None:
    """An event log holding one event too large for any line between two small ones, as
    the daemon would find it at start (the real SQLite log, written by its own class). The
    log now cuts an event when it is appended: the long one is given the body that a daemon
    from before that stored, in the file itself."""
    path = state_dir / "events.db"
    log = EventLog(str(path))
    log.append("motion_start", 100.0)
    log.append("camera_lost", 101.0, reason="x")
    log.append("motion_end", 102.0)
    log.close(103.0)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE events SET body = ? WHERE seq = 2",
                   (json.dumps({"reason": "x" * 70_000}),))


def test_an_event_too_large_for_a_line_comes_with_its_largest_fields_omitted(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """One event over the line limit made every `events` request from before it
    `too_large`: a client paging with `since` could never get past it."""
    big_event_log(tmp_path / "state")
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          daemon={"state_dir": str(tmp_path / "state")})
    daemon.connect().close()
    raw = RawClient(str(daemon.socket))
    raw.read()
    long_id = '"' + "i" * 60_000 + '"'  # leaves the answer about 5 KiB of its line
    for since, id_ in ((0, "1"), (1, "2"), (1, long_id), (2, "3")):
        raw.send(f'{{"cmd":"events","since":{since},"id":{id_}}}\n'.encode())
        line = raw.file.readline()
        assert len(line) <= MAX_LINE
        reply = json.loads(line)
        assert reply["class"] == "reply", reply
        events = reply["events"]
        assert events[0]["seq"] == since + 1
        if since == 1:
            assert events == [{"class": "event", "seq": 2, "ts": 101.0, "kind": "camera_lost",
                               "omitted": ["reason"]}]
            assert reply["more"] is True
        else:
            assert all("omitted" not in event for event in events)
    raw.close()
    assert daemon.stop() == 0
    assert "are left out and named in `omitted`" in PAGE


def lines_sent(events: list[dict[str, Any]]) -> list[bytes]:
    """The lines the hub sends an events subscriber for `events`, read from a real socket
    pair (the connection a client has)."""

    async def run() -> list[bytes]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        session = ClientSession(writer, 16, "test")
        session.start()
        session.topics.add("events")
        hub = Hub()
        hub.add(session)
        for event in events:
            assert hub.publish("events", event) == 1
        session.close()
        assert session.task is not None
        await session.task
        theirs.settimeout(5)
        with theirs.makefile("rb") as stream:
            lines = stream.readlines()
        theirs.close()
        reader.feed_eof()
        return lines

    return asyncio.run(run())


def test_a_live_event_too_large_for_a_line_comes_with_its_largest_fields_omitted() -> None:
    """The hub sent an event as it was made, however long: a line over 64 KiB, which a
    client with the fixed 64 KiB buffer the page promises is enough cannot read. A real
    socket pair stands for the connection (the daemon's events cannot be made that large
    from outside it)."""
    event = {"class": "event", "seq": 7, "ts": 1.0, "kind": "knob_failed", "knob": "k",
             "value": "v", "error": "e" * 70_000}
    lines = lines_sent([event, {"class": "event", "seq": 8, "ts": 2.0, "kind": "pir"}])
    assert all(len(line) <= MAX_LINE for line in lines)
    assert [json.loads(line) for line in lines] == [
        {"class": "event", "seq": 7, "ts": 1.0, "kind": "knob_failed", "knob": "k",
         "value": "v", "omitted": ["error"]},
        {"class": "event", "seq": 8, "ts": 2.0, "kind": "pir"},
    ]


def test_every_error_about_a_field_names_the_field(start_daemon: StartDaemon, tmp_path: Path,
                                                   ) -> None:
    """The page's error example names its field (`field 'limit' must be ...`): a client
    author reads which part of the request to fix. An unknown topic, an unknown profile and
    an image over the size limit were refused without naming `topics`, `set` or `image`."""
    root = materialize("rk3588", tmp_path / "sys")
    daemon = start_daemon(
        camera={"source": "synthetic:empty"}, daemon={"max_image_bytes": 1024},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
    )
    daemon.connect().close()
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"cmd": "status", "verbose": True}, "bad_request", "verbose"),
        ({"cmd": "events", "limit": 0}, "bad_request", "limit"),
        ({"cmd": "events", "since": -1}, "bad_request", "since"),
        ({"cmd": "snap", "timeout_ms": 0}, "bad_request", "timeout_ms"),
        ({"cmd": "subscribe", "topics": []}, "bad_request", "topics"),
        ({"cmd": "subscribe", "topics": ["cats"]}, "bad_request", "topics"),
        ({"cmd": "unsubscribe", "topics": ["cats"]}, "bad_request", "topics"),
        ({"cmd": "subscribe", "labels": []}, "bad_request", "labels"),
        ({"cmd": "subscribe", "min_score": 2}, "bad_request", "min_score"),
        ({"cmd": "infer"}, "bad_request", "image"),
        ({"cmd": "infer", "image": "!!!"}, "bad_request", "image"),
        ({"cmd": "infer", "image": "aGVsbG8="}, "bad_request", "image"),
        ({"cmd": "infer", "image": "A" * 2048}, "too_large", "image"),
        ({"cmd": "profile", "set": 5}, "bad_request", "set"),
        ({"cmd": "profile", "set": "nope"}, "bad_request", "set"),
        ({"cmd": 5}, "bad_request", "cmd"),
    ]
    raw = RawClient(str(daemon.socket))
    raw.read()
    got = answers(raw, [json.dumps({**request, "id": n}) for n, (request, _, _) in
                        enumerate(cases)])
    raw.close()
    assert daemon.stop() == 0
    for n, ((request, code, field), error) in enumerate(zip(cases, got)):
        assert (error["class"], error["id"], error["code"]) == ("error", n, code), request
        assert f"'{field}'" in error["message"], (request, error)


def test_the_pages_examples_sent_verbatim_come_back_in_the_shape_shown(
    start_daemon: StartDaemon,
) -> None:
    """Each request example of the page, byte for byte, gets an answer with the class and
    at least the keys its example answer shows (more may come: clients ignore them)."""
    examples = [
        ('{"cmd":"status","id":1}', "status",
         {"id", "version", "uptime_s", "fps", "clients", "model", "events", "source",
          "pipeline"}),
        ('{"cmd":"subscribe","topics":["results","events","power"],"min_score":0.6,'
         '"labels":["person"],"id":2}', "reply", {"cmd", "id", "topics", "filters"}),
        ('{"cmd":"events","since":57,"limit":100,"id":3}', "reply",
         {"cmd", "id", "events", "last_seq", "oldest_seq", "more"}),
        ('{"cmd":"snap","timeout_ms":2000,"id":4}', "reply", {"cmd", "id", "result"}),
        ('{"cmd":"unsubscribe","topics":["power"]}', "reply", {"cmd", "topics"}),
    ]
    for request, _, _ in examples:
        assert f"`{request}`" in PAGE
    daemon = start_daemon(gate={"enabled": False})
    daemon.connect().close()
    raw = RawClient(str(daemon.socket))
    raw.read()
    got = answers(raw, [request for request, _, _ in examples])
    raw.close()
    assert daemon.stop() == 0
    for (request, cls, keys), answer in zip(examples, got):
        assert answer["class"] == cls and keys <= set(answer), (request, answer)
    assert got[1]["topics"] == ["events", "power", "results"]
    assert got[1]["filters"] == {"labels": ["person"], "min_score": 0.6}
    assert got[3]["result"]["class"] == "result" and got[4]["topics"] == ["events", "results"]


def test_the_line_and_id_limits_hold_at_the_limit_and_one_past_it(
    start_daemon: StartDaemon,
) -> None:
    """Lines of 65536 bytes with their newline are read, one more is too_large and the
    end of the connection; an id whose `{"id":ID}` line is 61440 bytes is taken, one of a
    byte more is too_large, with its id, and not run; a client past max_clients is busy."""
    daemon = start_daemon(camera={"source": "synthetic:empty"}, daemon={"max_clients": 2})
    daemon.connect().close()
    raw = RawClient(str(daemon.socket))
    raw.read()
    head = '{"cmd":"status","id":1'
    at_limit = head + " " * (MAX_LINE - len(head) - 2) + "}"
    assert len(at_limit) + 1 == MAX_LINE
    room = 61440 - len('{"id":""}\n')
    ids = [
        '{"cmd":"status","id":"' + "i" * room + '"}',
        '{"cmd":"status","id":"' + "i" * (room + 1) + '"}',
    ]
    first, taken, refused = answers(raw, [at_limit, *ids])
    assert first["class"] == "status" and taken["class"] == "status"
    assert (refused["class"], refused["code"], len(refused["id"])) == ("error", "too_large",
                                                                      room + 1)
    while answers(raw, ['{"cmd":"status"}'])[0]["clients"] > 1:
        pass  # the connect() above is gone once the daemon has read its end
    second = RawClient(str(daemon.socket))  # the second of max_clients 2
    assert second.read()["class"] == "hello"
    third = RawClient(str(daemon.socket))
    assert (third.read()["code"], third.file.readline()) == ("busy", b"")
    third.close()
    second.close()
    raw.send(at_limit[:-1].encode() + b" }\n")
    assert (raw.read()["code"], raw.file.readline()) == ("too_large", b"")
    raw.close()
    assert daemon.stop() == 0


def test_status_power_has_the_shape_the_page_shows(start_daemon: StartDaemon,
                                                   tmp_path: Path) -> None:
    """status.power as the page documents it: `watts` an object (unlike the power message's
    number), knob values the attribute's text, and activity one of the three states, the
    same in status, in the hello's profile and in a power message."""
    daemon = start_daemon(config=pinnable_board(tmp_path))
    with daemon.connect() as client:
        client.settimeout(30)
        client.request("subscribe", topics=["power"])
        message = next(m for m in client.messages() if m["class"] == "power")
        power = client.request("status")["power"]  # after a tick: watts are known
        states = {"idle", "cooldown", "active"}
        assert {"enabled", "writes", "profile", "activity", "knobs", "temperatures", "watts",
                "joules"} <= set(power), power
        assert power["activity"]["state"] in states and "reason" in power["activity"]
        assert client.hello["profile"]["activity"] in states
        assert message["activity"] in states
        assert power["knobs"] and all(
            isinstance(knob["value"], str) and isinstance(knob["original"], str)
            for knob in power["knobs"].values() if "value" in knob), power["knobs"]
        watts = power["watts"]
        assert watts["source"] in ("meter", "estimate") and isinstance(watts["value"], float)
        assert isinstance(message["watts"], float) and message["watts_source"] == watts["source"]
    assert daemon.stop() == 0
    for key in ('"knobs":', '"watts":{"value":', '"activity":{"state":', "`cooldown`",
                "base64 -w0"):
        assert key in PAGE, key

"""`wattgate watch` with topic events, too slow for the daemon: the daemon drops the oldest
messages queued for it and later sends `{"class":"overflow","dropped":N}`. The events among
the dropped ones are still in the event log: the watch prints the overflow notice where it
came, then the events after the last one it printed, from the log, then the live ones, each
seq once, in order; with or without --reconnect. A real daemon and a stand-in one, a real
`watch` process, real AF_UNIX sockets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess, pinnable_board
from tests.test_watch_reconnect import WAIT_S, all_events, cli, event, serve_script
from wattgate.cli_watch import SINCE_MAX
from wattgate.client import Client

StartDaemon = Callable[..., DaemonProcess]


def overflow(dropped: int) -> dict[str, Any]:
    return {"class": "overflow", "dropped": dropped}


def log_answer(asked: list[int], events: list[dict[str, Any]],
               last_seq: int) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An answer to `events`: these events, the log's newest last_seq; `since` noted."""
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        asked.append(request["since"])
        return {"events": events, "last_seq": last_seq, "oldest_seq": 1, "more": False}
    return answer


def subscribed(request: dict[str, Any]) -> dict[str, Any]:
    return {"topics": request["topics"]}


@pytest.mark.parametrize("reconnect", [True, False], ids=["reconnect", "plain"])
def test_events_dropped_for_a_slow_reader_come_from_the_log_once_and_in_order(
    tmp_path: Path, reconnect: bool,
) -> None:
    """Events 11 and 12 come, then an overflow (13, 14 and a result were dropped), then 15
    and 16, left in the queue and published before the daemon answers the catch-up, then
    17; a second overflow lost only results (the notice does not say which topic: the log
    is asked all the same, and has nothing new), then 18. Each overflow notice stays on
    stdout where it came, a JSON object under --json; stderr says nothing."""
    path = tmp_path / "stand-in.sock"
    asked: list[int] = []
    # the log's newest first, then subscribe, then what came meanwhile
    start = [("events", log_answer(asked, [], 10)), ("subscribe", subscribed),
             ("events", log_answer(asked, [], 10))]
    server = serve_script(path, [[
        *start,
        event(11), event(12),
        overflow(3),
        event(15), event(16),
        ("events", log_answer(asked, [event(13), event(14), event(15), event(16)], 16)),
        event(17),
        overflow(5),
        ("events", log_answer(asked, [], 17)),
        event(18),
    ]])
    args = ["--reconnect"] if reconnect else []
    run = cli("watch", *args, "--json", "--topics", "events", "--count", "10",
              "--duration", str(WAIT_S), "--socket", str(path))
    server.join(WAIT_S)
    assert run.returncode == 0, run.stderr
    printed = [json.loads(line) for line in run.stdout.splitlines()]
    assert [m.get("seq", m["class"]) for m in printed] == [
        11, 12, "overflow", 13, 14, 15, 16, 17, "overflow", 18]
    assert [m for m in printed if m["class"] == "overflow"] == [overflow(3), overflow(5)]
    assert asked == [SINCE_MAX, 10, 12, 17]
    assert run.stderr == ""


def test_an_overflow_before_any_event_catches_up_from_where_the_watch_began(
    tmp_path: Path,
) -> None:
    """Results and events to a slow pipe: the first overflow comes before any event was
    printed. The events after the log's newest when the watch began come from the log."""
    path = tmp_path / "stand-in.sock"
    asked: list[int] = []
    server = serve_script(path, [[
        ("events", log_answer(asked, [], 10)),
        ("subscribe", subscribed),
        ("events", log_answer(asked, [], 10)),
        overflow(4),  # 11, 12 and two results
        event(13),
        ("events", log_answer(asked, [event(11), event(12), event(13)], 13)),
        event(14),
    ]])
    run = cli("watch", "--topics", "results", "events", "--count", "5",
              "--duration", str(WAIT_S), "--socket", str(path))
    server.join(WAIT_S)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "overflow: 4 messages dropped (read too slowly)"
    assert [int(line.split()[0].lstrip("#")) for line in lines[1:]] == [11, 12, 13, 14]
    assert asked == [SINCE_MAX, 10, 10]
    assert run.stderr == ""


def test_an_unreadable_log_is_said_once_and_the_live_events_still_come(
    tmp_path: Path,
) -> None:
    """A daemon that cannot read its event log answers `events` with `unavailable`: the
    watch says so on stderr, once, and goes on with what comes live."""
    path = tmp_path / "stand-in.sock"
    unreadable = {"class": "error", "code": "unavailable",
                  "message": "the event log cannot be read: database disk image is malformed"}
    server = serve_script(path, [[
        ("events", lambda r: unreadable),  # the log's newest
        ("subscribe", subscribed),
        event(11),
        overflow(2),
        ("events", lambda r: unreadable),  # the catch-up after event 11
        event(14),
        overflow(2),
        ("events", lambda r: unreadable),
        event(17),
    ]])
    run = cli("watch", "--json", "--topics", "events", "--count", "5",
              "--duration", str(WAIT_S), "--socket", str(path))
    server.join(WAIT_S)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line).get("seq", "overflow") for line in run.stdout.splitlines()] == [
        11, "overflow", 14, "overflow", 17]
    assert run.stderr.splitlines() == [
        "wattgate: the event log cannot be read (the event log cannot be read: database "
        "disk image is malformed): events dropped by the daemon for reading too slowly "
        "are not printed"]


def test_a_watch_stalled_by_its_reader_still_prints_every_event_once_in_order(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """A real daemon at the pipeline's full rate, a queue of 8 messages a client, a `watch
    --json --topics results events` whose stdout nobody reads for a while: it stops reading
    its socket, the daemon drops what is queued for it, the profile changes pinned meanwhile
    among them. Once read again it prints every event after the first it printed, each once,
    in order, the dropped ones included, and the overflow notices among well-formed lines."""
    config = pinnable_board(tmp_path, daemon={"client_queue": 8}, gate={"enabled": False},
                            camera={"realtime": False})
    daemon = start_daemon(config=config)
    sock = str(daemon.socket)
    status = daemon.connect()

    def inferred() -> int:
        return int(status.request("status")["pipeline"]["inferred"])

    def wait_inferred(more: int) -> None:
        goal = inferred() + more
        deadline = time.monotonic() + 120
        while inferred() < goal:
            assert time.monotonic() < deadline, f"fewer than {more} results in 120 s"
            time.sleep(0.1)

    def pins() -> list[dict[str, Any]]:
        return [e for e in all_events(daemon.socket)
                if e["kind"] == "profile_change" and e.get("source") == "pin"]

    def pin(profile: str) -> dict[str, Any]:
        """Pin profile (the request `wattgate profile NAME` sends); its event, once logged."""
        before = len(pins())
        with Client(sock, timeout=60) as admin:
            assert admin.request("profile", set=profile)["profile"]["name"] == profile
        deadline = time.monotonic() + WAIT_S
        while len(pins()) == before:
            assert time.monotonic() < deadline, f"no event for the pin of {profile}"
            time.sleep(0.05)
        event = pins()[-1]
        assert event["profile"] == profile
        return event

    read_end, write_end = os.pipe()
    err = tmp_path / "watch.err"
    with err.open("w") as err_file:
        watch = subprocess.Popen(
            [sys.executable, "-m", "wattgate.cli", "watch", "--json", "--topics", "results",
             "events", "--socket", sock], stdout=write_end, stderr=err_file)
    os.close(write_end)
    lines: list[str] = []  # what it printed, line by line, once read again

    def read() -> None:
        with os.fdopen(read_end, "r", encoding="utf-8") as out:
            for line in out:
                lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    try:
        # Nobody reads its stdout: once the pipe, its socket's buffers and its queue are
        # full (about 1000 results after it subscribed), the daemon drops the oldest for
        # it, and keeps on. Counted from its connection, so its own start-up is no part of
        # the margin.
        deadline = time.monotonic() + WAIT_S
        while status.request("status")["clients"] < 2:
            assert watch.poll() is None, err.read_text()
            assert time.monotonic() < deadline, f"the watch did not connect in {WAIT_S} s"
            time.sleep(0.05)
        wait_inferred(3000)
        stalled = ["performance", "balanced", "performance"]  # none that infers less
        for profile in stalled:
            pin(profile)
        # the events queued behind, then dropped for newer results: 8 are enough
        wait_inferred(200)
        reader.start()

        def printed() -> list[dict[str, Any]]:
            return [json.loads(line) for line in list(lines) if line.endswith("\n")]

        def wait_for(what: str, found: Callable[[list[dict[str, Any]]], bool]) -> None:
            deadline = time.monotonic() + WAIT_S
            while not found(printed()):
                assert watch.poll() is None, err.read_text()
                assert time.monotonic() < deadline, f"no {what} in {WAIT_S} s"
                time.sleep(0.05)

        wait_for("overflow", lambda ms: any(m["class"] == "overflow" for m in ms))
        last = pin("balanced")  # the watch reads again: live, unless dropped again
        wait_for("the last pin", lambda ms: any(m.get("seq") == last["seq"] and
                                                m["class"] == "event" for m in ms))
        watch.send_signal(signal.SIGINT)
        assert watch.wait(WAIT_S) == 130
        reader.join(WAIT_S)
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    status.close()
    logged = all_events(daemon.socket)
    assert daemon.stop() == 0

    messages = [json.loads(line) for line in lines if line.endswith("\n")]  # --json: each
    assert {m["class"] for m in messages} == {"result", "event", "overflow"}
    events = [m for m in messages if m["class"] == "event"]
    pinned = [e for e in logged if e["kind"] == "profile_change" and e.get("source") == "pin"]
    assert [e["profile"] for e in pinned] == [*stalled, "balanced"]
    seqs = [e["seq"] for e in events]
    assert seqs == [e["seq"] for e in logged if seqs[0] <= e["seq"] <= seqs[-1]]
    assert {e["seq"] for e in pinned} <= set(seqs)  # the dropped ones from the log
    assert events == [e for e in logged if seqs[0] <= e["seq"] <= seqs[-1]]
    first_pin = next(i for i, m in enumerate(messages) if m.get("seq") == pinned[0]["seq"]
                     and m["class"] == "event")
    assert any(m["class"] == "overflow" for m in messages[:first_pin])
    assert err.read_text() == ""

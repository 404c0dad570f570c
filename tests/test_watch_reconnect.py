"""`wattgate watch --reconnect`: a watch that outlives a daemon restart, says so on stderr,
and prints every event once, in order, the ones made while it was away included (from the
event log). Real daemons, a real `watch` process, real AF_UNIX sockets."""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from tests.conftest import DaemonProcess, pinnable_board
from wattgate.client import Client
from wattgate.daemon.eventlog import EventLog

StartDaemon = Callable[..., DaemonProcess]
WAIT_S = 60.0  # generous: a slow CI machine; nothing here asserts how long anything took


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wattgate.cli", *args],
                          capture_output=True, text=True, timeout=60)


class Watch:
    """`wattgate watch ARGS` running in the background, its output in files read as it
    goes (a pipe nobody reads could fill and stall it)."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.out = tmp / "watch.out"
        self.err = tmp / "watch.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wattgate.cli", "watch", *args], stdout=out, stderr=err)

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr_lines(self) -> list[str]:
        return self.err.read_text().splitlines()

    def events(self) -> list[dict[str, Any]]:
        """The events printed so far (a last line still being written left out)."""
        text = self.stdout()
        whole = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in whole.splitlines()]

    def wait_for(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not ready():
            if self.proc.poll() is not None:
                pytest.fail(f"watch exited {self.proc.returncode} waiting for {what}: "
                            f"{self.err.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {WAIT_S} s: {self.err.read_text()}")
            time.sleep(0.05)

    def wait_stderr(self, pattern: str) -> None:
        self.wait_for(pattern, lambda: any(re.fullmatch(pattern, line)
                                           for line in self.stderr_lines()))

    def wait_event(self, **fields: Any) -> dict[str, Any]:
        def found() -> Optional[dict[str, Any]]:
            return next((e for e in self.events()
                         if all(e.get(k) == v for k, v in fields.items())), None)
        self.wait_for(f"event {fields}", lambda: found() is not None)
        event = found()
        assert event is not None
        return event

    def interrupt(self) -> int:
        """Ctrl-C, and the exit code."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(WAIT_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def watches() -> Any:
    started: list[Watch] = []

    def start(tmp: Path, *args: str) -> Watch:
        watch = Watch(tmp, *args)
        started.append(watch)
        return watch

    yield start
    for watch in started:
        watch.kill()


def all_events(socket_path: Path) -> list[dict[str, Any]]:
    """Every event in the log, paging as `more` says."""
    found: list[dict[str, Any]] = []
    with Client(str(socket_path)) as client:
        while True:
            reply = client.request("events", since=found[-1]["seq"] if found else 0,
                                   limit=1000)
            found += reply["events"]
            if not reply["more"]:
                return found


def test_watch_reconnect_prints_every_event_once_across_a_restart(
    start_daemon: StartDaemon, watches: Any, tmp_path: Path,
) -> None:
    """The watch starts before the daemon (systemd still starting it), sees a pin, outlives
    a stop, and once a daemon runs again on the same state_dir prints what was logged
    meanwhile (more than one `events` answer holds: paging) before the live events."""
    config = pinnable_board(tmp_path, camera={"source": "synthetic:empty"})
    run_dir = config.parent
    sock = run_dir / "wattgate.sock"
    path = re.escape(str(sock))
    watch = watches(tmp_path, "--reconnect", "--json", "--topics", "events",
                    "--socket", str(sock))
    watch.wait_stderr(rf"wattgate: cannot connect to {path} \(No such file or directory\); "
                      "trying again until it can")

    first = start_daemon(config=config)
    watch.wait_stderr(rf"wattgate: connected to {path}")  # subscribed: events come live
    assert cli("profile", "powersave", "--socket", str(sock)).returncode == 0
    pinned = watch.wait_event(kind="profile_change", profile="powersave", source="pin")
    assert first.stop() == 0
    watch.wait_stderr(rf"wattgate: connection to {path} lost \(.+\); reconnecting")

    # Logged while the watch is away: what a daemon would have logged, more than one
    # `events` answer can hold (1000 at most, and as many as fit in 64 KiB).
    log = EventLog(str(run_dir / "state" / "events.db"))
    gap = [log.append("motion_start" if i % 2 else "motion_end", time.time())["seq"]
           for i in range(1500)]
    log.close(time.time())

    second = start_daemon(config=config)  # the same socket and state_dir: a restart
    watch.wait_stderr(rf"wattgate: reconnected to {path}")
    assert cli("profile", "performance", "--socket", str(sock)).returncode == 0
    last = watch.wait_event(kind="profile_change", profile="performance", source="pin")
    assert watch.interrupt() == 130

    events = watch.events()
    printed = [event["seq"] for event in events]
    log_events = all_events(sock)
    assert second.stop() == 0
    logged = [event["seq"] for event in log_events]
    assert logged == list(range(logged[0], logged[-1] + 1))  # clean stops: no gap to skip
    assert printed[0] <= pinned["seq"] and printed[-1] == last["seq"] == logged[-1]
    assert printed == [seq for seq in logged if seq >= printed[0]]  # each once, in order
    assert set(gap) < set(printed)
    # Live or from the log, each event is printed as the log keeps it, field for field.
    assert events == [event for event in log_events if event["seq"] >= printed[0]]
    assert len(watch.stderr_lines()) == 4, watch.stderr_lines()  # nothing was pruned


def test_watch_reconnect_prints_the_events_of_a_log_started_over(
    start_daemon: StartDaemon, watches: Any, tmp_path: Path,
) -> None:
    """The daemon comes back with its state_dir wiped (volatile on a read-only image): its
    log numbers events from 1 again, below what the watch printed. They are printed, and
    stderr says why; before, every one was dropped as printed already until the numbers
    passed the old log's."""
    config = pinnable_board(tmp_path, camera={"source": "synthetic:empty"})
    run_dir = config.parent
    sock = run_dir / "wattgate.sock"
    path = re.escape(str(sock))
    watch = watches(tmp_path, "--reconnect", "--json", "--topics", "events",
                    "--socket", str(sock))
    first = start_daemon(config=config)
    watch.wait_stderr(rf"wattgate: connected to {path}")  # subscribed: events come live
    for name in ("powersave", "performance") * 3:  # the old log goes past the new one's
        assert cli("profile", name, "--socket", str(sock)).returncode == 0
    assert cli("profile", "powersave", "--socket", str(sock)).returncode == 0
    pins = [e for e in all_events(sock) if e["kind"] == "profile_change" and e["source"] == "pin"]
    old = watch.wait_event(seq=pins[-1]["seq"])
    assert first.stop() == 0
    watch.wait_stderr(rf"wattgate: connection to {path} lost \(.+\); reconnecting")
    shutil.rmtree(run_dir / "state")

    second = start_daemon(config=config)
    watch.wait_stderr(rf"wattgate: reconnected to {path}")
    assert cli("profile", "performance", "--socket", str(sock)).returncode == 0
    log_events = all_events(sock)
    new = watch.wait_event(**log_events[-1])  # the pin, the new log's last event
    assert new["kind"] == "profile_change" and new["seq"] < old["seq"]
    assert second.stop() == 0
    assert watch.interrupt() == 130
    printed = watch.events()
    assert printed[printed.index(old) + 1:] == [e for e in log_events if e["seq"] <= new["seq"]]
    assert any(re.fullmatch(rf"wattgate: the event log ends at \d+, before {old['seq']}: it "
                            r"was started over .*", line) for line in watch.stderr_lines())


def test_without_reconnect_watch_still_ends_when_the_daemon_stops(
    start_daemon: StartDaemon, watches: Any, tmp_path: Path,
) -> None:
    """The old behaviour: exit 1, `closed`, one line on stderr and, with --json, the error
    object as the last line of stdout; no word of reconnecting."""
    daemon = start_daemon(camera={"source": "synthetic:empty", "fps": 15.0},
                          gate={"heartbeat_s": 0.2})
    daemon.connect().close()
    watch = watches(tmp_path, "--json", "--socket", str(daemon.socket))
    watch.wait_for("a result", lambda: '"class": "result"' in watch.stdout())
    assert daemon.stop() == 0
    assert watch.proc.wait(WAIT_S) == 1
    assert watch.stderr_lines() == [f"wattgate: closed: {daemon.socket} closed the connection"]
    assert json.loads(watch.stdout().splitlines()[-1]) == {
        "class": "error", "code": "closed", "message": f"{daemon.socket} closed the connection"}
    # No daemon at all: exit 69 at once, as before.
    missing = cli("watch", "--socket", str(tmp_path / "none.sock"))
    assert missing.returncode == 69 and "unavailable" in missing.stderr


HELLO = {"class": "hello", "proto": 1}


def event(seq: int) -> dict[str, Any]:
    return {"class": "event", "seq": seq, "ts": 1763745600.0 + seq, "kind": "motion_start"}


def serve_script(path: Path, connections: list[list[Any]]) -> threading.Thread:
    """A stand-in daemon that plays one script per connection, then closes it: a step is a
    message to send, or (cmd, answer) to read a request of that cmd and answer it with its
    id: answer(request) gives the reply's fields, or a whole `error`. Only a stand-in puts
    live events exactly where a real daemon may: after the `subscribe` answer, before the
    answer to the `events` asked since."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)

    def send(peer: socket.socket, message: dict[str, Any]) -> None:
        peer.sendall(json.dumps(message).encode() + b"\n")

    def serve() -> None:
        with listener:
            for script in connections:
                peer, _ = listener.accept()
                with peer, peer.makefile("rb") as lines:
                    send(peer, HELLO)
                    for step in script:
                        if isinstance(step, dict):
                            send(peer, step)
                            continue
                        cmd, answer = step
                        request = json.loads(lines.readline())
                        assert request["cmd"] == cmd, request
                        fields = answer(request)  # a reply's fields, or an error
                        reply = fields if "class" in fields else {"class": "reply",
                                                                  "cmd": cmd, **fields}
                        send(peer, {**reply, "id": request["id"]})

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    return server


def test_events_from_the_log_come_first_none_twice_and_gone_ones_are_named(
    tmp_path: Path,
) -> None:
    """After a reconnect the events since the last one printed come from the log, page by
    page; the live ones sent meanwhile that the log gave too are not printed again; events
    the log no longer has are named on stderr as `wattgate events` names them. --count
    counts across the reconnect."""
    path = tmp_path / "stand-in.sock"
    asked: list[int] = []

    def since(first: list[dict[str, Any]], more: bool, oldest: int) -> Callable[..., Any]:
        def answer(request: dict[str, Any]) -> dict[str, Any]:
            asked.append(request["since"])
            return {"events": first, "last_seq": 17, "oldest_seq": oldest, "more": more}
        return answer

    server = serve_script(path, [
        [("events", lambda r: {"events": [], "last_seq": 10, "oldest_seq": 1, "more": False}),
         ("subscribe", lambda r: {"topics": ["events"]}),
         ("events", since([], False, 1)),  # made while subscribing: none
         event(11)],  # then the connection ends: EOF
        [("subscribe", lambda r: {"topics": ["events"]}),
         event(15), event(16), event(17),  # live, before the answers below
         ("events", since([event(15)], True, 15)),  # 12 to 14 pruned
         ("events", since([event(16), event(17)], False, 15)),
         event(18)],
    ])
    run = cli("watch", "--reconnect", "--json", "--topics", "events", "--count", "5",
              "--socket", str(path))
    server.join(WAIT_S)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["seq"] for line in run.stdout.splitlines()] == [11, 15, 16, 17, 18]
    assert asked == [10, 11, 15]
    assert run.stderr.splitlines() == [
        f"wattgate: connection to {path} lost (closed by the daemon); reconnecting",
        f"wattgate: reconnected to {path}",
        "wattgate: events 12 to 14 are no longer in the event log "
        "(pruned, or lost with a damaged log)",
    ]


def test_an_error_that_waiting_will_not_mend_ends_it_as_without_reconnect(
    tmp_path: Path,
) -> None:
    """A refused subscribe is no lost connection: exit 1 and the error, as without
    --reconnect, not a retry for ever."""
    path = tmp_path / "stand-in.sock"
    refusal = {"class": "error", "code": "bad_request", "message": "unknown topic 'nope'"}
    server = serve_script(path, [[("subscribe", lambda r: refusal)]])
    run = cli("watch", "--reconnect", "--json", "--topics", "nope", "--socket", str(path))
    server.join(WAIT_S)
    assert run.returncode == 1
    assert run.stderr.splitlines() == ["wattgate: bad_request: unknown topic 'nope'"]
    assert json.loads(run.stdout) == refusal


@pytest.mark.parametrize("there", ["nothing", "a socket nobody listens on"])
def test_with_no_daemon_yet_it_says_so_once_and_ctrl_c_or_duration_end_it(
    watches: Any, tmp_path: Path, there: str,
) -> None:
    """(A regular file or a directory there will never be listened on: `run` refuses
    one, and watch ends at once, tests/test_client_edges.py.)"""
    sock = tmp_path / "wattgate.sock"
    if there != "nothing":  # left by a daemon that was killed
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).bind(str(sock))
    reason = "No such file or directory" if there == "nothing" else "Connection refused"
    said = f"wattgate: cannot connect to {sock} ({reason}); trying again until it can"
    watch = watches(tmp_path, "--reconnect", "--socket", str(sock))
    watch.wait_stderr(re.escape(said))
    time.sleep(0.5)  # a few tries more: still one line
    assert watch.interrupt() == 130
    assert watch.stderr_lines() == [said] and watch.stdout() == ""

    # Never connected: the duration's end is a failure, 69 (tests/test_cli_watch_exit.py).
    run = cli("watch", "--reconnect", "--duration", "0.5", "--socket", str(sock))
    assert run.returncode == 69
    assert run.stderr.splitlines()[0] == said and run.stdout == ""

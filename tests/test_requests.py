"""Requests at the edges of the protocol, over real AF_UNIX connections to the real daemon:
ids on every answer, strict JSON both ways, the 64 KiB line limit, topic checks, and who
counts as an administrator."""

from __future__ import annotations

import asyncio
import grp
import json
import logging
import math
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import pytest

from tests.conftest import DaemonProcess, write_config
from tests.fixtures.boards import materialize
from tests.test_socket import RawClient
from wattgate.client import ClientError
from wattgate.config import Config, DaemonConfig
from wattgate.daemon import hub
from wattgate.daemon.app import Daemon
from wattgate.daemon.commands import Commands, is_admin, proc_groups
from wattgate.daemon.eventlog import EventLog
from wattgate.daemon.hub import MAX_LINE, Hub, Message, encode
from wattgate.daemon.server import (
    ID_ROOM,
    MAX_ID_DEPTH,
    PeerCreds,
    ProtocolError,
    Server,
    _answer_line,
)

StartDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def raw(daemon: DaemonProcess) -> Iterator[RawClient]:
    """A raw connection to the shared full-rate daemon, its hello read."""
    client = RawClient(str(daemon.socket))
    client.read()
    yield client
    client.close()


def strict_json(line: bytes) -> dict[str, Any]:
    """A server line parsed as a strict parser (Go, most C libraries) would parse it."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} in a server line: not JSON")

    message: dict[str, Any] = json.loads(line, parse_constant=refuse)
    return message


def answer_line(raw: RawClient) -> bytes:
    """The next line that is not a result or an event, as sent."""
    while True:
        line = raw.file.readline()
        assert line, "connection closed"
        if not line.startswith((b'{"class":"result",', b'{"class":"event",')):  # class first
            return line


def ask(raw: RawClient, line: bytes) -> dict[str, Any]:
    raw.send(line + b"\n")
    return strict_json(answer_line(raw))


def still_serves(raw: RawClient) -> None:
    assert ask(raw, b'{"cmd":"status","id":"after"}')["id"] == "after"


# -- every answer to an object carries its id ---------------------------------------------


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b'{"id": 5}', "bad_request"),  # no cmd
        (b'{"id": 6, "cmd": 5}', "bad_request"),  # cmd not a string
        (b'{"id": {"n": 6}, "cmd": null}', "bad_request"),
        (b'{"cmd": "status", "id": null, "x": 1}', "bad_request"),  # null is an id too
        (b'{"cmd": "dance", "id": null}', "unknown_cmd"),
        (b'{"cmd": "events", "id": [7], "limit": 0}', "bad_request"),
    ],
)
def test_errors_echo_the_id_of_any_object(raw: RawClient, line: bytes, code: str) -> None:
    error = ask(raw, line)
    assert (error["class"], error["code"]) == ("error", code)
    assert "id" in error and error["id"] == json.loads(line)["id"]
    still_serves(raw)


@pytest.mark.parametrize("line", [b"[1, 2]", b'"id"', b'{"id": 1', b"null"])
def test_lines_that_are_not_objects_get_errors_without_id(
    raw: RawClient, line: bytes
) -> None:
    error = ask(raw, line)
    assert error["class"] == "error" and "id" not in error
    still_serves(raw)


def test_an_internal_error_echoes_the_id() -> None:
    async def broken(session: Any, request: Message) -> Message:
        raise RuntimeError("a bug")

    async def dispatch(line: bytes) -> Message:
        server = Server(DaemonConfig(), Hub(), {"boom": broken}, dict)
        answer: Message = json.loads(await server._dispatch(None, line))  # type: ignore[arg-type]
        return answer

    assert asyncio.run(dispatch(b'{"cmd":"boom","id":null}')) == {
        "class": "error", "id": None, "code": "unavailable",
        "message": "internal error; see the daemon's log",
    }
    assert "id" not in asyncio.run(dispatch(b'{"cmd":"boom"}'))


# -- strict JSON in, strict JSON out ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b'{"cmd":"status","id":NaN}', "NaN"),
        (b'{"cmd":"status","id":Infinity}', "Infinity"),
        (b'{"cmd":"events","id":-Infinity,"since":0}', "Infinity"),
        (b'{"cmd":"status","id":1e400}', "1e400"),
        (b'{"cmd":"subscribe","id":1,"min_score":-1e999}', "-1e999"),
        (b'{"cmd":"status","id":7,"pad":' + b"1" * 5000 + b"}", "digits"),
        (b'{"cmd":"status","id":8,"x":' + b"[" * 30000 + b"]" * 30000 + b"}", "nested"),
        (b'{"cmd":"status","id":"\\ud800"}', "surrogate"),
        (b'{"cmd":"status","id":"\\udc00\\ud83d"}', "surrogate"),
    ],
)
def test_what_is_not_json_is_bad_json(
    daemon: DaemonProcess, raw: RawClient, line: bytes, needle: str
) -> None:
    error = ask(raw, line)
    assert (error["class"], error["code"]) == ("error", "bad_json")
    assert needle in error["message"]
    assert "id" not in error  # the line did not parse as an object
    still_serves(raw)
    assert "Traceback" not in daemon.log() and "command failed" not in daemon.log()


def test_published_numbers_that_are_not_finite_go_out_as_null(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reading that is NaN or infinite must not make a line other parsers refuse."""
    monkeypatch.setattr(hub, "_warned", set())
    message = {"class": "power", "watts": math.nan, "rails": [{"w": math.inf}, 1.5],
               "ok": {"j": -math.inf, "n": 2}}
    with caplog.at_level(logging.WARNING, "wattgate.hub"):
        line = encode(message)
        encode(message)
    assert json.loads(line, parse_constant=lambda word: pytest.fail(word)) == {
        "class": "power", "watts": None, "rails": [{"w": None}, 1.5],
        "ok": {"j": None, "n": 2},
    }
    assert len([r for r in caplog.records if "power message" in r.getMessage()]) == 1


def test_escaped_characters_come_back_as_sent(raw: RawClient) -> None:
    reply = ask(raw, b'{"cmd":"status","id":"\\ud83d\\ude00 \\u2028 \\u0000 1.5e300"}')
    assert reply["id"] == "\U0001f600 \u2028 \x00 1.5e300"
    assert ask(raw, b'{"cmd":"status","id":1.5e300}')["id"] == 1.5e300


@pytest.mark.parametrize(("depth", "code"), [
    (MAX_ID_DEPTH, None), (MAX_ID_DEPTH + 1, "bad_request"), (970, "bad_request"),
    (976, "bad_request"), (20000, "bad_json"),
])
def test_an_id_nested_too_deeply_is_answered_without_it_and_not_run(
    daemon: DaemonProcess, raw: RawClient, depth: int, code: Optional[str]
) -> None:
    """Python parses somewhat deeper nesting than it writes back (976 levels here did
    neither answer nor keep the connection): ids are limited far below either."""
    raw.send(b'{"cmd":"subscribe","id":' + b"[" * depth + b"]" * depth + b"}\n")
    answer = strict_json(answer_line(raw))
    if code is None:
        assert answer["class"] == "reply" and answer["topics"] == ["results"]
        return
    assert (answer["class"], answer["code"]) == ("error", code) and "id" not in answer
    assert "nested" in answer["message"]
    assert ask(raw, b'{"cmd":"unsubscribe","id":1}')["topics"] == []  # was not run
    assert "Traceback" not in daemon.log() and "not sent" not in daemon.log()


def test_answers_with_numbers_that_are_not_finite_carry_null() -> None:
    """An answer holding a NaN (a status with a broken reading, an event logged before the
    log stored null) goes out with null, like a published message: not as an error."""
    line = _answer_line({"class": "status", "id": 1, "lux": math.nan, "x": [math.inf]})
    assert strict_json(line) == {"class": "status", "id": 1, "lux": None, "x": [None]}


# -- the line limit, both ways ------------------------------------------------------------


def padded(length: int, head: bytes = b'{"cmd":"status","pad":"') -> bytes:
    """A request of exactly length bytes, newline not counted."""
    tail = b'"}'
    return head + b"x" * (length - len(head) - len(tail)) + tail


def test_a_request_line_is_at_most_64_kib_with_its_newline(raw: RawClient) -> None:
    raw.send(padded(MAX_LINE - 1) + b"\n")
    error = strict_json(answer_line(raw))
    assert (error["class"], error["code"]) == ("error", "bad_request")  # 'pad' is unknown
    still_serves(raw)
    raw.send(padded(MAX_LINE) + b"\n")
    error = strict_json(answer_line(raw))
    assert (error["class"], error["code"]) == ("error", "too_large")
    assert raw.file.readline() == b""  # closed


@pytest.mark.parametrize(("length", "id_back"), [(MAX_LINE - 200, True), (MAX_LINE - 1, False)])
def test_an_answer_too_long_with_its_id_is_too_large(
    raw: RawClient, length: int, id_back: bool
) -> None:
    """A status answer is some hundred bytes longer than its request, an error is not: the
    error carries the id when that fits in a line, and says so when it does not."""
    request = padded(length, b'{"cmd":"status","id":"')
    raw.send(request + b"\n")
    line = answer_line(raw)
    assert len(line) <= MAX_LINE
    error = strict_json(line)
    assert (error["class"], error["code"]) == ("error", "too_large")
    if id_back:
        assert error["id"] == json.loads(request)["id"]
    else:
        assert "id" not in error and "id" in error["message"]
    still_serves(raw)


def test_a_request_whose_id_leaves_no_room_for_the_answer_is_not_run(
    raw: RawClient,
) -> None:
    """A subscribe (or a profile set, a reload) must not run and then be answered too_large:
    the client would take it for refused."""
    longest = MAX_LINE - ID_ROOM - len(b'{"id":""}\n')
    for length, runs in ((longest, True), (longest + 1, False)):
        head = b'{"cmd":"subscribe","topics":["results"],"id":"'
        answer = ask(raw, head + b"i" * length + b'"}')
        assert answer["class"] == ("reply" if runs else "error")
        if runs:  # the full-rate daemon's results follow at once
            assert strict_json(raw.file.readline())["class"] == "result"
            assert ask(raw, b'{"cmd":"unsubscribe","topics":["results"]}')["class"] == "reply"
        else:
            assert answer["code"] == "too_large" and "not run" in answer["message"]
            assert answer["id"] == "i" * length
            raw.send(b'{"cmd":"status","id":"next"}\n')
            assert strict_json(raw.file.readline())["id"] == "next"  # and no result before it
    still_serves(raw)


def test_a_subscribe_whose_answer_would_not_fit_changes_nothing(raw: RawClient) -> None:
    """Its answer echoes the labels: a line of them is refused before it is applied."""
    labels = [f"l{i:05}" for i in range(7270)]
    request = {"cmd": "subscribe", "topics": ["events", "power"], "labels": labels, "id": 1}
    line = json.dumps(request, separators=(",", ":")).encode()
    answer = ask(raw, line.replace(b'"l07269"', b'"l07269' + b"x" * (MAX_LINE - 2 - len(line))
                                   + b'"'))
    assert (answer["class"], answer["code"], answer["id"]) == ("error", "too_large", 1)
    assert "nothing was changed" in answer["message"]
    assert ask(raw, b'{"cmd":"unsubscribe","topics":[],"id":2}')["topics"] == []


def test_events_with_a_long_id_hold_fewer_events_not_too_large(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """As many events as fit in the line with the id, for any id the protocol allows."""
    run = tmp_path / "prefilled"
    (run / "state").mkdir(parents=True)
    log = EventLog(str(run / "state" / "events.db"))
    now = time.time()  # (older events would be pruned by age)
    for _ in range(1000):
        log.append("camera_lost", now, reason="x" * 100)
    log.close(now)
    daemon = start_daemon(config=write_config(run / "config.toml", run,
                                              camera={"source": "synthetic:empty"}))
    longest = MAX_LINE - ID_ROOM - len(b'{"id":""}\n')
    counts = []
    daemon.connect().close()  # up and ready
    client = RawClient(str(daemon.socket))
    client.read()
    for length in (0, 30000, longest):
        request = {"cmd": "events", "limit": 1000, "id": "i" * length}
        answer = ask(client, json.dumps(request).encode())
        assert (answer["class"], answer["more"]) == ("reply", True), answer
        counts.append(len(answer["events"]))
    client.close()
    assert counts[0] > counts[1] > counts[2] >= 1
    assert daemon.stop() == 0


@pytest.mark.parametrize(
    "request_",
    [
        {"cmd": "\u2028" * 21000, "id": 1},  # 3 bytes in, 7 out after repr and escaping
        {"cmd": "\x01" * 10000, "id": 1},
        {"cmd": "status", "id": 1, **{f"unknown{i:05}": 0 for i in range(3000)}},
        {"cmd": "subscribe", "id": 1, "topics": ["results", "\x7f" * 10000]},
        {"cmd": "unsubscribe", "id": 1, "topics": [f"t{i}" for i in range(6000)]},
    ],
    ids=["cmd", "cmd-escapes", "fields", "topic", "topics"],
)
def test_errors_repeat_a_short_prefix_of_what_was_sent(
    raw: RawClient, request_: dict[str, Any]
) -> None:
    line = json.dumps(request_, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(line) < MAX_LINE
    raw.send(line + b"\n")
    answer = answer_line(raw)
    error = strict_json(answer)
    assert error["class"] == "error" and error["id"] == 1
    assert len(answer) < 1024 and "…" in error["message"]
    still_serves(raw)


def test_an_unknown_profile_is_named_by_a_short_prefix(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root = materialize("rk3588", tmp_path / "sys")
    daemon = start_daemon(
        camera={"source": "synthetic:empty"},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
    )
    daemon.connect().close()
    raw = RawClient(str(daemon.socket))
    assert raw.read()["capabilities"]["power"] is True
    raw.send(json.dumps({"cmd": "profile", "set": "p" * 60000, "id": 1}).encode() + b"\n")
    answer = answer_line(raw)
    error = strict_json(answer)
    assert (error["class"], error["code"], error["id"]) == ("error", "bad_request", 1)
    assert len(answer) < 1024 and "…" in error["message"] and "known: " in error["message"]
    raw.close()
    assert daemon.stop() == 0


# -- what a client without a JSON parser may rely on -------------------------------------


def compact(line: bytes) -> bytes:
    """line as the daemon promises to write it: compact JSON, class first, newline."""
    message = strict_json(line)
    assert next(iter(message)) == "class", line[:80]
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def test_every_line_is_compact_with_class_first(daemon: DaemonProcess) -> None:
    raw = RawClient(str(daemon.socket))
    lines = [raw.file.readline()]  # the hello
    raw.send(b'{"cmd":"status","id":1}\n{"cmd":"nope","id":[1, 2]}\nnot json\n'
             b'{"cmd" : "events", "since" : 0, "limit" : 3, "id" : {"a" : "\\u00e9 x"}}\n'
             b'{"cmd":"subscribe","topics":["results","events","power"],"id":2}\n')
    while sum(1 for line in lines if line.startswith(b'{"class":"result",')) < 5:
        line = raw.file.readline()
        assert line, "connection closed"
        lines.append(line)
    raw.close()
    classes = {strict_json(line)["class"] for line in lines}
    assert {"hello", "status", "error", "reply", "result"} <= classes
    for line in lines:
        assert line == compact(line)


def test_requests_sent_before_the_hello_are_answered_after_it(daemon: DaemonProcess) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10.0)
        sock.connect(str(daemon.socket))
        sock.sendall(b'{"cmd":"status","id":1}\n')  # not waiting for the hello
        lines = sock.makefile("rb")
        assert strict_json(lines.readline())["class"] == "hello"
        assert strict_json(lines.readline())["id"] == 1


def test_a_subscribe_is_answered_before_the_first_result(daemon: DaemonProcess) -> None:
    """Results come ~1000 a second here: any one sent before the reply would be seen."""
    for _ in range(20):
        raw = RawClient(str(daemon.socket))
        raw.read()
        raw.send(b'{"cmd":"subscribe","id":1}\n')
        first = raw.read()
        raw.close()
        assert (first["class"], first["id"]) == ("reply", 1)


def test_a_client_that_stops_sending_gets_every_answer_then_is_closed(
    daemon: DaemonProcess,
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10.0)
        sock.connect(str(daemon.socket))
        sock.sendall(b'{"cmd":"status","id":1}\n{"cmd":"snap","id":2}\n'
                     b'{"cmd":"events","limit":1,"id":3}\n')
        sock.shutdown(socket.SHUT_WR)  # what socat does at the end of its input
        lines = sock.makefile("rb").readlines()  # until the daemon closes
    answers = [strict_json(line) for line in lines]
    assert [(a["class"], a.get("id")) for a in answers] == [
        ("hello", None), ("status", 1), ("reply", 2), ("reply", 3)]
    assert answers[2]["result"]["class"] == "result"


# -- topics -------------------------------------------------------------------------------


def test_subscribe_to_no_topic_and_unsubscribe_from_an_unknown_one_are_refused(
    raw: RawClient,
) -> None:
    empty = ask(raw, b'{"cmd":"subscribe","topics":[],"min_score":0.5,"id":1}')
    assert (empty["class"], empty["code"], empty["id"]) == ("error", "bad_request", 1)
    typo = ask(raw, b'{"cmd":"unsubscribe","topics":["result"],"id":2}')
    assert (typo["class"], typo["code"], typo["id"]) == ("error", "bad_request", 2)
    assert "result" in typo["message"]
    for request in (b'{"cmd":"unsubscribe","topics":null,"id":5}',
                    b'{"cmd":"subscribe","labels":null,"id":6}'):
        answer = ask(raw, request)  # null is not a list: not taken for "all" or "none"
        assert (answer["class"], answer["code"]) == ("error", "bad_request")
    # None of these changed anything; the default still is results.
    assert ask(raw, b'{"cmd":"unsubscribe","topics":[],"id":3}')["topics"] == []
    assert ask(raw, b'{"cmd":"subscribe","id":4}')["topics"] == ["results"]


def test_a_reload_without_a_config_file_is_unavailable(tmp_path: Path) -> None:
    """Nothing in the request is wrong: the daemon runs on its built-in defaults."""
    daemon = Daemon(Config.model_validate({"daemon": {"state_dir": str(tmp_path)}}))
    root = SimpleNamespace(creds=PeerCreds(1, 0, 0), peer="pid=1 uid=0 gid=0")
    with pytest.raises(ProtocolError) as info:
        asyncio.run(Commands(daemon).reload(root, {"cmd": "reload"}))  # type: ignore[arg-type]
    assert info.value.code == "unavailable" and "no config file" in info.value.message
    daemon.eventlog.close(0.0)


# -- administrators: the peer's own groups ------------------------------------------------


def spare_group() -> grp.struct_group:
    """A group that neither root nor nobody has, to grant through a process's groups only."""
    nobody = pwd.getpwnam("nobody")
    for group in grp.getgrall():
        if group.gr_gid not in (0, nobody.pw_gid) and "nobody" not in group.gr_mem:
            return group
    pytest.skip("no group in the group database besides root's and nobody's")


def listed_member() -> tuple[grp.struct_group, pwd.struct_passwd]:
    """A group and a user that /etc/group lists in it (not as its primary group)."""
    for group in grp.getgrall():
        for name in group.gr_mem:
            try:
                user = pwd.getpwnam(name)
            except KeyError:
                continue
            if user.pw_uid != 0 and user.pw_gid != group.gr_gid:
                return group, user
    pytest.skip("the group database lists no user as a supplementary member of a group")


CLIENT = """\
import json, os, socket, sys
uid, gid, groups = int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
os.setgroups(groups); os.setgid(gid); os.setuid(uid)
s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])
f = s.makefile("rb")
f.readline()
s.sendall(b'{"cmd":"reload","id":1}\\n')
print(f.readline().decode(), end="")
"""


# The CLI as uid:gid without supplementary groups. It is imported first: the interpreter's
# own files may be where the user cannot read them (a venv made by root).
CLI_AS = """\
import os, sys
from wattgate.cli import main
os.setgroups([])
os.setgid(int(sys.argv[2]))
os.setuid(int(sys.argv[1]))
sys.exit(main(sys.argv[3:]))
"""


@dataclass
class Admins:
    """A running daemon whose socket any uid can reach, its daemon.admin_group, and the
    unprivileged user the tests ask it as."""

    daemon: DaemonProcess
    group: grp.struct_group
    nobody: pwd.struct_passwd

    def reload_as(
        self, user: Optional[pwd.struct_passwd] = None, gid: Optional[int] = None,
        groups: Sequence[int] = (),
    ) -> dict[str, Any]:
        """Ask for a reload from a process of user (nobody by default) with primary group
        gid (the user's by default) and these supplementary groups.

        The tests run as root; the child sets its groups and drops to uid/gid before it
        connects, as a service started with SupplementaryGroups= would be.
        """
        user = user or self.nobody
        ids = [str(user.pw_uid), str(user.pw_gid if gid is None else gid), json.dumps(groups)]
        out = subprocess.run(
            [sys.executable, "-c", CLIENT, str(self.daemon.socket), *ids],
            capture_output=True, text=True, timeout=60, check=True,
        )
        answer: dict[str, Any] = json.loads(out.stdout)
        return answer


StartAdmins = Callable[..., Admins]


@pytest.fixture
def admins(start_daemon: StartDaemon) -> Iterator[StartAdmins]:
    """start(group=spare_group(), **sections) -> Admins: a daemon with that admin group.
    Each daemon started must stop cleanly (exit 0) at teardown."""
    # pytest's tmp dirs are private to root: the socket goes where nobody can reach it.
    public = Path(tempfile.mkdtemp(prefix="wattgate-test-"))
    public.chmod(0o755)
    started: list[DaemonProcess] = []

    def start(group: Optional[grp.struct_group] = None, **sections: dict[str, Any]) -> Admins:
        group = group or spare_group()
        daemon = start_daemon(daemon={
            "socket": str(public / f"wattgate{len(started)}.sock"), "socket_mode": 0o666,
            "admin_group": group.gr_name,
        }, **sections)
        started.append(daemon)
        daemon.connect().close()
        return Admins(daemon, group, pwd.getpwnam("nobody"))

    yield start
    shutil.rmtree(public)
    for daemon in started:
        assert daemon.stop() == 0


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root to start clients as other ids"
)


@needs_root
def test_a_supplementary_group_the_process_holds_makes_an_admin(admins: StartAdmins) -> None:
    setup = admins()
    held = setup.reload_as(groups=[setup.group.gr_gid])
    assert (held["class"], held["id"], held.get("reloaded")) == ("reply", 1, True)
    primary = setup.reload_as(gid=setup.group.gr_gid)
    assert primary.get("reloaded") is True
    without = setup.reload_as()
    assert (without["class"], without["code"]) == ("error", "forbidden")


@needs_root
def test_the_cli_pinning_a_profile_without_the_right_exits_77(
    admins: StartAdmins, tmp_path: Path,
) -> None:
    """EX_NOPERM, not 1: a script can tell "not allowed" from a daemon's other errors."""
    root = materialize("rk3588", tmp_path / "sys")
    setup = admins(power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")})
    nobody = setup.nobody
    run = subprocess.run(
        [sys.executable, "-c", CLI_AS, str(nobody.pw_uid), str(nobody.pw_gid), "profile",
         "performance", "--socket", str(setup.daemon.socket)],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 77, run.stderr
    assert run.stderr.startswith("wattgate: forbidden:") and len(run.stderr.splitlines()) == 1


@needs_root
def test_a_peer_in_too_many_groups_for_so_peergroups_is_judged_from_proc(
    admins: StartAdmins,
) -> None:
    """Python reads 256 groups at most through SO_PEERGROUPS; beyond, /proc/<pid>/status."""
    setup = admins()
    many = [g for g in range(40000, 40400) if g != setup.group.gr_gid][:300]
    held = setup.reload_as(groups=[*many, setup.group.gr_gid])
    assert held.get("reloaded") is True
    without = setup.reload_as(groups=many)
    assert (without["class"], without["code"]) == ("error", "forbidden")


@needs_root
def test_a_listed_member_that_dropped_the_group_is_no_admin(admins: StartAdmins) -> None:
    group, user = listed_member()
    setup = admins(group)
    dropped = setup.reload_as(user)
    assert (dropped["class"], dropped["code"]) == ("error", "forbidden")
    kept = setup.reload_as(user, groups=[group.gr_gid])
    assert kept.get("reloaded") is True


@needs_root
def test_without_so_peergroups_the_groups_come_from_proc() -> None:
    """Kernels before 4.13 have no SO_PEERGROUPS: /proc/<pid>/status of the peer decides."""
    group = spare_group()
    nobody = pwd.getpwnam("nobody")
    code = (
        "import os, sys\n"
        f"os.setgroups([{group.gr_gid}]); os.setgid({nobody.pw_gid}); os.setuid({nobody.pw_uid})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        peer = PeerCreds(child.pid, nobody.pw_uid, nobody.pw_gid)
        assert proc_groups(peer) == (group.gr_gid,)
        assert is_admin(peer, group.gr_name)
        # Another process at that pid (the peer exited, the pid was reused): no groups.
        stranger = PeerCreds(child.pid, nobody.pw_uid + 1, nobody.pw_gid)
        assert proc_groups(stranger) == ()
    finally:
        child.communicate("")
    gone: Optional[tuple[int, ...]] = proc_groups(PeerCreds(child.pid, 0, 0))
    assert gone is None  # unreadable: the user database decides


# Faults that cannot be made on demand here, injected into the real daemon: an event log
# whose file is damaged while the daemon runs, and a command that fails in a way nobody
# foresaw. Everything else is the real daemon on a real socket.
FAILING_COMMANDS = """
import sqlite3, sys
import wattgate.daemon.commands as commands
import wattgate.daemon.eventlog as eventlog
def since(self, seq, limit):
    raise sqlite3.DatabaseError("database disk image is malformed")
async def status(self, session, request):
    raise RuntimeError("an unforeseen failure")
eventlog.EventLog.since, commands.Commands.status = since, status
from wattgate.cli import main
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_command_that_keeps_failing_is_logged_once_and_a_bad_event_log_says_so(
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    """A client repeating a request that keeps failing wrote the same traceback to the
    journal every time; `events` on a damaged log answered only "internal error"."""
    daemon = start_daemon(argv=lambda config: [sys.executable, "-c", FAILING_COMMANDS,
                                               str(config)])
    with daemon.connect() as client:
        for _ in range(3):
            with pytest.raises(ClientError) as info:
                client.request("events", since=0)
            assert info.value.code == "unavailable"
            assert info.value.message == (
                "the event log cannot be read: database disk image is malformed")
            with pytest.raises(ClientError) as info:
                client.request("status")
            assert info.value.message == "internal error; see the daemon's log"
        assert client.request("subscribe", topics=["events"])["class"] == "reply"  # serving
    assert daemon.stop() == 0
    log = daemon.log()
    assert log.count("RuntimeError: an unforeseen failure") == 1, log
    assert "command 'status' failed (logged once" in log

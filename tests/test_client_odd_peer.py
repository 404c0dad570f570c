"""What both clients and the CLI make of a peer whose lines are odd but could come: a
message class added within protocol version 1, JSON nested deeper than the parser goes,
and numbers that are not JSON. Stand-in daemons on real AF_UNIX sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_client_errors import HELLO, assert_one_line, cli, serve_lines
from wattgate.client import AsyncClient, Client, ClientError

NEWTHING = {"class": "newthing", "id": 1, "foo": 1}


def line(message: dict[str, Any]) -> bytes:
    """A message as the daemon writes it: compact JSON and a newline."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def test_a_class_it_does_not_know_with_the_request_s_id_is_not_the_answer(
    tmp_path: Path,
) -> None:
    """docs/protocol.md, Versioning: new message classes may come within version 1, and a
    client ignores those it does not know. Any message with the request's id was taken for
    its answer: status printed the new message, and events and profile failed with a
    KeyError traceback on it. Only reply, status and error answer a request."""
    path = str(tmp_path / "newer.sock")
    status = {"class": "status", "id": 1, "version": "x"}
    server = serve_lines(path, HELLO, line(NEWTHING) + line(status))

    with Client(path, timeout=30) as client:
        assert client.request("status") == status
        assert next(client.messages()) == NEWTHING  # among the unasked, not lost

    async def talk() -> tuple[dict[str, Any], dict[str, Any]]:
        async with await AsyncClient.connect(path) as client:
            answer = await asyncio.wait_for(client.request("status"), 30)
            return answer, await asyncio.wait_for(client.next_message(), 30)

    assert asyncio.run(talk()) == (status, NEWTHING)
    server.join(30)


def test_the_cli_takes_the_answer_not_a_class_it_does_not_know(tmp_path: Path) -> None:
    path = str(tmp_path / "newer-events.sock")
    events = [{"class": "event", "seq": 1, "ts": 1.0, "kind": "motion_start"},
              {"class": "event", "seq": 2, "ts": 2.0, "kind": "motion_end"}]
    reply = {"class": "reply", "cmd": "events", "id": 1, "events": events, "last_seq": 2,
             "oldest_seq": 1, "more": False}
    server = serve_lines(path, HELLO, line(NEWTHING) + line(reply), connections=1)
    run = cli("events", "--json", "--socket", path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert [json.loads(printed) for printed in run.stdout.splitlines()] == events
    server.join(30)


async def _async_request(path: str) -> dict[str, Any]:
    async with await AsyncClient.connect(path) as client:
        return await asyncio.wait_for(client.request("status"), 30)


def _both_refuse(path: str) -> list[ClientError]:
    """The error each client raises talking to the stand-in at path: the sync client's,
    then the async client's."""
    raised = []
    with pytest.raises(ClientError) as info, Client(path, timeout=30) as client:
        client.request("status")
    raised.append(info.value)
    with pytest.raises(ClientError) as async_info:
        asyncio.run(_async_request(path))
    raised.append(async_info.value)
    return raised


def _json_error(run: Any) -> dict[str, Any]:
    """The CLI's one error with --json: exit 1, a line on stderr, one object on stdout."""
    assert_one_line(run, 1, "protocol")
    assert run.stdout.count("\n") == 1, run.stdout
    failure: dict[str, Any] = json.loads(run.stdout)
    assert failure["class"] == "error" and failure["code"] == "protocol"
    return failure


def test_json_nested_deeper_than_the_parser_goes_is_a_protocol_error(tmp_path: Path) -> None:
    """json.loads raises RecursionError, not ValueError, for a line of 50000 `[`, well
    under the line limit: it came out of both clients as such, and out of the CLI as a
    traceback with nothing on stdout under --json."""
    path = str(tmp_path / "deep.sock")
    server = serve_lines(path, b"[" * 50000 + b"\n", None, connections=3)
    for error in _both_refuse(path):
        assert error.code == "protocol"
        assert "sent JSON nested too deeply" in error.message
    failure = _json_error(cli("status", "--json", "--socket", path))
    assert "nested too deeply" in failure["message"]
    server.join(30)


@pytest.mark.parametrize(
    ("number", "named"),
    [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"),
     ("1e400", "1e400"), ("-1e400", "-1e400")],
)
def test_a_number_that_is_not_json_is_a_protocol_error(
    tmp_path: Path, number: str, named: str,
) -> None:
    """The daemon writes strict JSON (RFC 8259) and refuses NaN and Infinity in requests.
    json.loads took them, and 1e400 as inf, and the CLI's --json wrote them back out as
    NaN or Infinity: output that is not JSON."""
    path = str(tmp_path / "nan.sock")
    answer = b'{"class":"status","id":1,"version":"x","uptime_s":' + number.encode() + b"}\n"
    server = serve_lines(path, HELLO, answer, connections=3)
    for error in _both_refuse(path):
        assert error.code == "protocol"
        assert f"a number that is not finite, {named}" in error.message
    failure = _json_error(cli("status", "--json", "--socket", path))
    assert named in failure["message"]
    server.join(30)

"""Texts the daemon builds itself (from the config, from a reload's checks) never break the
64 KiB line: a client reading with a fixed buffer must get every hello and every error.

Text copied from a request is cut to a few dozen characters (server.echo); these tests are
about the rest: a profile's description in every hello and status, a rule's name in every
profile_change, a refused reload's problems quoting a long value, the refusal of a request
whose id fills its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import DaemonProcess, pinnable_board, write_config
from tests.test_requests import ask, strict_json
from tests.test_socket import RawClient
from wattgate.config import ONE_LINE_CHARS, ConfigError, parse_config
from wattgate.daemon.hub import MAX_LINE

StartDaemon = Callable[..., DaemonProcess]


@pytest.mark.parametrize(("raw", "key"), [
    ({"profiles": {"mine": {"description": "d" * (ONE_LINE_CHARS + 1)}}},
     "profiles.mine.description"),
    ({"rules": [{"name": "n" * (ONE_LINE_CHARS + 1), "profile": "balanced",
                 "on_battery": True}]}, "rules.0.name"),
])
def test_a_config_text_too_long_for_a_line_is_refused_naming_its_key(
    raw: dict[str, Any], key: str
) -> None:
    """A 70 000-character description was taken ("ok"), and then every hello was over the
    line limit and every status too_large: no client could use the daemon."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    assert any(p.startswith(key) and str(ONE_LINE_CHARS) in p for p in info.value.problems)
    edge = {section: value for section, value in raw.items()}
    text = "x" * ONE_LINE_CHARS
    if "profiles" in edge:
        edge["profiles"] = {"mine": {"description": text}}
    else:
        edge["rules"] = [{**raw["rules"][0], "name": text}]
    parse_config(edge)  # at the limit: taken


def test_a_hello_over_the_line_leaves_fields_out(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """The names of many profiles (1100 of 64 characters, each valid) outgrow a line: the
    unasked hello is fitted as the other unasked messages are, its largest field left out
    and named."""
    names = [f"p{i:04}" + "n" * 59 for i in range(1100)]  # 64 characters each
    config = pinnable_board(tmp_path, camera={"source": "synthetic:empty"})
    config.write_text(config.read_text() + "".join(
        f'\n[profiles.{name}]\ninclude = "balanced"\n' for name in names))
    daemon = start_daemon(config=config)
    daemon.connect().close()  # up and ready
    client = RawClient(str(daemon.socket))
    try:
        line = client.file.readline()
        assert len(line) <= MAX_LINE
        hello = strict_json(line)
        assert hello["class"] == "hello" and "profile" in hello["omitted"]
        assert hello["proto"] == 1
    finally:
        client.close()


def test_a_refused_reload_says_why_even_when_its_problems_outgrow_a_line(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """A bad value of 70 000 characters: the answer was too_large ("the answer would be
    70168 bytes"), hiding that the config was refused and where."""
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(run / "config.toml", run, camera={"source": "synthetic:empty"})
    daemon = start_daemon(config=config)
    daemon.connect().close()
    config.write_text(config.read_text().replace(
        "[gate]", "[gate]\nenabled = \"" + "y" * 70_000 + "\"", 1)
        if "[gate]" in config.read_text()
        else config.read_text() + '\n[gate]\nenabled = "' + "y" * 70_000 + '"\n')
    client = RawClient(str(daemon.socket))
    try:
        client.read()
        line = b'{"cmd":"reload","id":7}'
        answer = ask(client, line)
        assert (answer["class"], answer["code"], answer["id"]) == ("error", "bad_request", 7)
        assert "gate.enabled" in answer["message"] and "cut" in answer["message"]
    finally:
        client.close()


def test_a_request_refused_for_its_id_says_it_was_not_run_even_without_the_id(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """An id that fills the whole line: the refusal cannot carry it back, and the answer
    said only that "the answer would be N bytes", as if the profile set had run."""
    daemon = start_daemon(config=pinnable_board(tmp_path, camera={"source": "synthetic:empty"}))
    daemon.connect().close()
    client = RawClient(str(daemon.socket))
    try:
        client.read()
        head = b'{"cmd":"profile","set":"powersave","id":"'
        line = head + b"a" * (MAX_LINE - len(head) - 3) + b'"}'
        answer = ask(client, line)
        assert (answer["class"], answer["code"]) == ("error", "too_large")
        assert "id" not in answer and "not run" in answer["message"]
        assert ask(client, b'{"cmd":"profile","id":1}')["profile"]["name"] != "powersave"
    finally:
        client.close()

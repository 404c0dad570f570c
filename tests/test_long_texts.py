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
from wattgate.config import NAME_CHARS, ONE_LINE_CHARS, ConfigError, parse_config
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


@pytest.mark.parametrize(("raw", "key"), [
    ({"profiles": {"p" * (NAME_CHARS + 1): {"include": "balanced"}}}, "profiles"),
    ({"profiles": {"": {"include": "balanced"}}}, "profiles"),
    ({"profiles": {"two\nlines": {"include": "balanced"}}}, "profiles"),
    ({"model": {"variants": {"v" * (NAME_CHARS + 1): {"path": "light.tflite"}}}},
     "model.variants"),
    ({"model": {"variants": {"": {"path": "light.tflite"}}}}, "model.variants"),
])
def test_a_profile_or_variant_name_that_is_no_name_is_refused_naming_its_table(
    raw: dict[str, Any], key: str
) -> None:
    """Names go into every status, profile answer and profile_change: a profile named with
    70 000 characters made every status too_large, and one named "" or with a line break
    could not be told apart in a log line. A name is 1 to 64 characters, none a control
    character; the error names the table and shows the start of the name, not all of it."""
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    problems = [p for p in info.value.problems if p.startswith(key + ": the name ")]
    assert problems and all(len(p) < 600 for p in problems), info.value.problems
    assert any(str(NAME_CHARS) in p or "control" in p or "empty" in p for p in problems), problems
    parse_config({"profiles": {"n" * NAME_CHARS: {"include": "balanced"}},
                  "model": {"variants": {"v" * NAME_CHARS: {"path": "light.tflite"}}}})


def test_a_bad_value_is_quoted_in_part_with_its_length() -> None:
    """A 70 000-character value made its error line (and check-config's output, and a
    refused reload's answer) 70 000 characters long to say that it was too long."""
    with pytest.raises(ConfigError) as info:
        parse_config({"profiles": {"mine": {"description": "d" * 70_000}}})
    (problem,) = info.value.problems
    assert problem.startswith("profiles.mine.description: got 'ddd") and len(problem) < 600
    assert "(70000 characters)" in problem and f"at most {ONE_LINE_CHARS}" in problem


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
    """Problems that outgrow a line (a bad value of 70 000 characters once; an error line
    now quotes 400 of them, so here a thousand unknown keys): the answer was too_large ("the
    answer would be 70168 bytes"), hiding that the config was refused and where."""
    run = tmp_path / "run"
    run.mkdir()
    config = write_config(run / "config.toml", run, camera={"source": "synthetic:empty"})
    daemon = start_daemon(config=config)
    daemon.connect().close()
    unknown = "".join(f"unknown_key_{i:04}_{'k' * 40} = 1\n" for i in range(1000))
    config.write_text(config.read_text() + "\n[gate]\n" + unknown)
    client = RawClient(str(daemon.socket))
    try:
        client.read()
        line = b'{"cmd":"reload","id":7}'
        answer = ask(client, line)
        assert (answer["class"], answer["code"], answer["id"]) == ("error", "bad_request", 7)
        assert f"gate.unknown_key_0000_{'k' * 40}: unknown key" in answer["message"]
        assert "cut" in answer["message"]
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

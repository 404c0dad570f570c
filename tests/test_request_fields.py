"""How the daemon and its clients read a request's fields and an answer's id, over real
AF_UNIX connections to the real daemon: what is refused, what is taken, and what is said."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from tests.conftest import DaemonProcess
from tests.fixtures.boards import materialize
from tests.test_socket import RawClient
from wattgate.client import ClientError

StartDaemon = Callable[..., DaemonProcess]


def cli(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The `wattgate` command against this daemon's socket."""
    return subprocess.run(
        [sys.executable, "-m", "wattgate.cli", *args, "--socket", str(daemon.socket)],
        capture_output=True, text=True, timeout=60,
    )


def test_the_cli_names_who_pinned_a_profile_once(start_daemon: StartDaemon, tmp_path: Path
                                                  ) -> None:
    """The daemon's reason for a pinned profile already says "pinned by ..."; the CLI
    added the pin again in brackets."""
    root = materialize("rk3588", tmp_path / "sys")
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          power={"sysfs_root": str(root)})
    daemon.connect().close()
    pinned = cli(daemon, "profile", "powersave")
    assert pinned.returncode == 0, pinned.stderr
    assert pinned.stdout.startswith("powersave: pinned by pid=")
    assert pinned.stdout.count("pinned by") == 1, pinned.stdout
    assert daemon.stop() == 0


def test_an_empty_labels_list_is_refused_like_an_empty_topics_list(
    start_daemon: StartDaemon,
) -> None:
    """`"labels": []` was taken as a filter that no detection passes: the client got no
    result at all and no word why."""
    daemon = start_daemon(camera={"source": "synthetic:empty"})
    with daemon.connect() as client:
        with pytest.raises(ClientError) as info:
            client.request("subscribe", labels=[])
        assert info.value.code == "bad_request" and "'labels'" in info.value.message
        # Refused whole: the subscription is as it was, none.
        assert client.request("unsubscribe", topics=[])["topics"] == []
    assert daemon.stop() == 0


def test_a_bad_profile_request_is_bad_request_even_without_power_control(
    start_daemon: StartDaemon,
) -> None:
    """`{"set": 5}` is wrong whatever the daemon can do; it was answered unavailable, so
    the client's mistake looked like the board's."""
    daemon = start_daemon(camera={"source": "synthetic:empty"})
    with daemon.connect() as client:
        assert client.hello["capabilities"]["power"] is False
        with pytest.raises(ClientError) as info:
            client.request("profile", set=5)
        assert info.value.code == "bad_request" and "'set'" in info.value.message
        with pytest.raises(ClientError) as info:
            client.request("profile", set="powersave")  # well-formed: the board's turn
        assert info.value.code == "unavailable"
    assert daemon.stop() == 0


def test_the_client_takes_only_its_own_integer_id_for_its_answer(
    start_daemon: StartDaemon,
) -> None:
    """Answers were matched with ==, and in Python True == 1 == 1.0: the answer to a request
    the program sent itself with id true or 1.0 was taken for request() id 1's."""
    daemon = start_daemon(camera={"source": "synthetic:empty"})  # profile: unavailable
    with daemon.connect() as client:
        client.send({"cmd": "profile", "id": True})
        client.send({"cmd": "profile", "id": 1.0})
        assert client.request("status")["class"] == "status"  # its id is 1
        others = client.messages()
        assert [(m["class"], type(m["id"]), m["id"]) for m in (next(others), next(others))
                ] == [("error", bool, True), ("error", float, 1.0)]
    assert daemon.stop() == 0


DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def test_integer_ids_come_back_as_the_protocol_page_says(start_daemon: StartDaemon) -> None:
    """The page said every integer id comes back byte for byte; `-0` comes back as `0`
    (it is the integer 0 to any JSON parser). The page now says so, and this holds it to it."""
    page = " ".join(DOCS.read_text().split())
    assert "an integer comes back byte for byte, except `-0`, which comes back as `0`" in page
    daemon = start_daemon(camera={"source": "synthetic:empty"})
    daemon.connect().close()
    raw = RawClient(str(daemon.socket))
    raw.read()  # hello
    for sent, back in ((b"-0", b"0"), (b"-12", b"-12"), (b"0", b"0"),
                       (b"123456789012345678901234567890", b"123456789012345678901234567890")):
        raw.send(b'{"cmd":"status","id":' + sent + b"}\n")
        line = raw.file.readline()
        assert line.startswith(b'{"class":"status","id":' + back + b","), line[:80]
    raw.close()
    assert daemon.stop() == 0


def test_integer_fields_take_a_float_with_no_fraction(start_daemon: StartDaemon) -> None:
    """JSON has no integer type, and a script's `timeout * 1000` is a float: 5000.0 was
    refused as "must be an integer". It is that integer now; a fraction, a bool and a
    number out of range are still refused."""
    daemon = start_daemon(camera={"source": "synthetic:empty"})
    with daemon.connect(timeout=60) as client:
        assert client.request("snap", timeout_ms=60000.0)["result"]["class"] == "result"
        events = client.request("events", since=0.0, limit=2.0)
        assert len(events["events"]) <= 2
        for fields, says in (({"timeout_ms": 5000.5}, "must be an integer"),
                             ({"timeout_ms": True}, "must be an integer"),
                             ({"timeout_ms": 1e300}, "must be within 1..60000"),
                             ({"timeout_ms": 0.0}, "must be within 1..60000")):
            with pytest.raises(ClientError) as info:
                client.request("snap", **fields)
            assert info.value.code == "bad_request" and says in info.value.message, fields
        with pytest.raises(ClientError) as info:
            client.request("events", limit=-1e-300)
        assert info.value.code == "bad_request"
    assert daemon.stop() == 0


def status_section() -> str:
    """The `status` command's part of docs/protocol.md, its whitespace made single."""
    text = DOCS.read_text().split("\n### status\n", 1)[1].split("\n### ", 1)[0]
    return " ".join(text.split())


def test_the_status_errors_of_a_lost_battery_and_the_light_sensor_are_documented(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """status shows why the battery or the light sensor has no reading; the page did not
    say so, so a client could not tell such a battery from one that reads."""
    root = materialize("intel-mtl", tmp_path / "sys")
    daemon = start_daemon(camera={"source": "synthetic:empty"},
                          power={"sysfs_root": str(root)})
    with daemon.connect() as client:
        (root / "class/power_supply/BAT0").unlink()
        deadline = time.monotonic() + 30
        while "error" not in (battery := client.request("status")["power"]["battery"]):
            assert time.monotonic() < deadline, battery
            time.sleep(0.1)
        light = client.request("status")["sensors"]["light"]
    assert daemon.stop() == 0
    assert battery == {"name": "BAT0", "error": "gone"}
    page = status_section()
    for text in ("`power.battery`", '`error`: `"gone"` when its sysfs node vanished',
                 '`"no answer"` when a read of it hangs', "battery rules",
                 "hold their state", "`sensors` has `light`",
                 'Its `error` is `"no answer"` while a read of the sensor has hung',
                 *(f"`{key}`" for key in light)):
        assert text in page, text

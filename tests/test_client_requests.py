"""What the Python client sends: only what the daemon can answer by id, over a real
AF_UNIX connection to the real daemon."""

from __future__ import annotations

from typing import Callable

import pytest

from tests.conftest import DaemonProcess
from wattgate.client import ClientError

StartDaemon = Callable[..., DaemonProcess]


@pytest.mark.parametrize("text", ["\udcff", "\ud83d\ude00", "a\ud800"],
                         ids=["undecodable-argv-byte", "split-pair", "lone"])
def test_a_string_that_is_not_unicode_is_refused_before_it_is_sent(
    start_daemon: StartDaemon, text: str,
) -> None:
    """A command-line argument that is not UTF-8 reaches Python as a lone surrogate
    (`wattgate profile $'\\xff'`). Sent as a \\u escape, the daemon refused the line as
    bad_json, which it cannot answer with the request's id: the client waited for its
    answer until it timed out, and the CLI said "try again"."""
    daemon = start_daemon(camera={"source": "synthetic:empty"})
    with daemon.connect() as client:
        with pytest.raises(ClientError) as info:
            client.request("profile", set=text)
        assert info.value.code == "bad_request" and "not sent" in info.value.message
        assert client.request("status")["class"] == "status"
    assert daemon.stop() == 0

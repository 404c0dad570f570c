"""docs/protocol.md: where the daemon drives no power knobs (`capabilities.power` false)
a subscription to `power` is taken and stays silent. A real daemon whose sysfs root has no
knob at all (an empty tree), a real socket; the silence is checked over three power ticks
while a results subscription on the same connection keeps delivering, so the connection
and the daemon were alive throughout."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess

StartDaemon = Callable[..., DaemonProcess]


def test_the_power_topic_is_silent_without_power_knobs(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    root = tmp_path / "sys"
    root.mkdir()
    daemon = start_daemon(power={"sysfs_root": str(root)}, camera={"source": "synthetic:office"},
                          gate={"enabled": False})
    with daemon.connect() as client:
        assert client.hello["capabilities"]["power"] is False
        reply = client.request("subscribe", topics=["power", "results"])
        assert reply["topics"] == ["power", "results"]
        client.settimeout(20.0)
        first = last = None
        classes = set()
        for message in client.messages():
            classes.add(message["class"])
            if message["class"] == "result":
                first = first if first is not None else message["ts"]
                last = message["ts"]
                if last - first >= 3.0:  # three ticks of the power controller's second
                    break
    assert daemon.stop() == 0
    assert classes == {"result"}

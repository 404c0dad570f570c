"""fanout's subscribers against a real daemon at its max_clients: a refused or dropped
subscriber is a measurement error, not a window measured with fewer, and a configuration
waits for the previous one's connections to be let go before opening its own."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import fanout
from bench.common import DaemonRun, daemon
from bench.pipeline import write_raw_video
from wattgate.client import Client
from wattgate.drivers.synthetic import make_scene


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fanout") / "person.avi"
    scene = make_scene("person", 640, 480, 30.0)
    write_raw_video(path, [scene.frame(i) for i in range(90, 98)], 30.0)
    return path


@pytest.fixture
def three_places(video: Path) -> Iterator[tuple[DaemonRun, Client]]:
    """A daemon taking 3 connections: the control one and two subscribers."""
    with daemon(False, camera={"source": str(video), "loop": True, "realtime": True},
                gate={"enabled": False}, daemon={"max_clients": 3}) as run:
        yield run, run.connect()


def test_a_refused_subscriber_is_a_measurement_error(
        three_places: tuple[DaemonRun, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused for longer than a configuration's connections take to be let go."""
    monkeypatch.setattr(fanout, "RELEASE_TIMEOUT_S", 1.0)
    run, control = three_places
    with pytest.raises(fanout.SubscriberLost, match="busy"):
        fanout.measure(run.socket_path, control, run.pid, 3, False, 0.6, 0.3)


def test_a_stream_that_ends_is_let_go_and_flagged() -> None:
    """Once the peer has closed, the socket is readable for ever: left registered, the
    reader would spin on it for the whole window."""
    mine, theirs = socket.socketpair()
    theirs.close()
    reader = fanout.Reader(mine)
    try:
        fanout.pump([reader], 0.3, record=True)
        assert reader.closed
        with pytest.raises(fanout.SubscriberLost, match="ended its stream"):
            fanout.check_subscribers([reader])
    finally:
        mine.close()


def test_a_configuration_waits_for_the_previous_connections_to_go(
        three_places: tuple[DaemonRun, Client]) -> None:
    """Two connections still held when a 2-subscriber configuration starts (as the last
    configuration's are, for a moment after they close) would take its places."""
    run, control = three_places
    held = [fanout.connect(run.socket_path) for _ in range(2)]

    def close_held() -> None:
        for sock in held:
            sock.close()

    closer = threading.Timer(0.5, close_held)
    closer.start()
    try:
        measured = fanout.measure(run.socket_path, control, run.pid, 2, False, 0.6, 0.3)
    finally:
        closer.join()
    assert measured["received"] > 0

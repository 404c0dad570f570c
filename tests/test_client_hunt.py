"""The Python client and the client commands of the CLI against real daemons and against
real AF_UNIX servers that misbehave: what a script or a user sees when something goes
wrong, and that no answer, result or event is lost or taken for another."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_client_errors import assert_one_line, cli
from wattgate.client import AsyncClient, Client, ClientError


@pytest.fixture
def full_socket(tmp_path: Path) -> Iterator[str]:
    """A listener whose queue of connections not yet accepted is full: a daemon whose event
    loop is busy, stopped, or still loading its model under a listening socket. listen(0)
    queues one; the next non-blocking connect() fails EAGAIN."""
    path = str(tmp_path / "full.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(0)
        queued: list[socket.socket] = []
        try:
            while True:
                waiting = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                queued.append(waiting)
                waiting.setblocking(False)
                waiting.connect(path)
        except BlockingIOError:
            yield path
        finally:
            for waiting in queued:
                waiting.close()


async def _async_connect(path: str) -> Any:
    return await asyncio.wait_for(AsyncClient.connect(path), 30)


def test_a_full_connection_queue_is_busy_not_no_daemon(full_socket: str) -> None:
    """connect() fails EAGAIN while the listener's queue is full: a daemon is there. Both
    clients said "unavailable" (the CLI's 69, "no daemon"), and the asyncio client, which
    took EAGAIN for a connection in progress, said "closed (Invalid argument)"."""
    with pytest.raises(ClientError) as sync_info:
        Client(full_socket, timeout=5)
    with pytest.raises(ClientError) as async_info:
        asyncio.run(_async_connect(full_socket))
    for info in (sync_info, async_info):
        assert info.value.code == "busy", info.value
        assert full_socket in info.value.message and "try again" in info.value.message
    assert_one_line(cli("status", "--socket", full_socket), 75, "busy", full_socket,
                    "try again")

"""Server.close and the connections accepted just before it: each is closed by it.

asyncio takes a few turns of the loop from accepting a connection to running the
server's handler for it (a task makes the transport, the protocol's connection_made
starts the handler). A close in those turns left the connection to the garbage collector
or to the process's exit: its client waited, with neither a hello nor the end of the
stream, and the handler and writer tasks were left pending for asyncio.run to destroy.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
from pathlib import Path

import pytest

from wattgate.config import DaemonConfig
from wattgate.daemon.hub import Hub
from wattgate.daemon.server import STOPPING, Server

# Turns of the loop between a client's connect and the close: from before asyncio
# accepts it to after its handler is running, the window in between included.
TURNS = range(10)
EOF_WAIT_S = 10.0  # generous: a condition waited for, not a duration measured


def _read_until_end(client: socket.socket) -> tuple[bytes, bool]:
    """What the client has received so far, and whether the daemon's end has closed."""
    received = b""
    while True:
        poller = select.poll()
        poller.register(client.fileno(), select.POLLIN)
        if not poller.poll(0):
            return received, False
        try:
            chunk = client.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return received, False
        except ConnectionResetError:  # closed with nothing read: as good as the end
            return received, True
        if not chunk:
            return received, True
        received += chunk


@pytest.mark.parametrize("turns", TURNS)
def test_a_client_accepted_as_the_server_closes_sees_its_connection_end(
    tmp_path: Path, turns: int
) -> None:
    path = str(tmp_path / "wattgate.sock")

    async def scenario() -> tuple[bytes, bool, list[str]]:
        loop = asyncio.get_running_loop()
        server = Server(DaemonConfig(socket=path), Hub(), {}, lambda: {"class": "hello"})
        await server.start()
        server.set_ready()
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)  # in the backlog: the loop accepts it on its next turn
            for _ in range(turns):
                await asyncio.sleep(0)
            await server.close()
            deadline = loop.time() + EOF_WAIT_S
            received, ended = _read_until_end(client)
            while not ended and loop.time() < deadline:  # the loop still runs meanwhile
                await asyncio.sleep(0.01)
                more, ended = _read_until_end(client)
                received += more
        finally:
            client.close()
        left = [repr(task.get_coro()) for task in asyncio.all_tasks()
                if task is not asyncio.current_task()]
        return received, ended, left

    received, ended, left = asyncio.run(scenario())
    assert ended, f"no end of the stream after {received!r}"
    assert left == []
    for line in received.splitlines(keepends=True):  # whole lines: a hello, or why not
        message = json.loads(line)
        assert message["class"] == "hello" or (
            message["class"], message["code"], message["message"]
        ) == ("error", "unavailable", STOPPING), message

"""A client connection that ended in an error nobody waited for is not an ERROR.

asyncio's streams keep how a connection ended in a future that only wait_closed() reads; a
connection the daemon dropped without that wait (its write failed, or the daemon stopped
first) was reported when the future was collected, as "Future exception was never
retrieved" with a traceback: the demo printed one when its client left as the daemon
stopped. Real futures and a real event loop, with the daemon's handler installed.
"""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from wattgate.daemon.server import quiet_departures


def drop_a_failed_future(exc: BaseException) -> list[logging.LogRecord]:
    """Records logged when a future holding exc is collected unread, under the handler."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(keep)
    root.setLevel(logging.DEBUG)
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(quiet_departures)
        future = loop.create_future()
        future.set_exception(exc)
        del future
        gc.collect()
    finally:
        loop.close()
        root.removeHandler(keep)
        root.setLevel(old_level)
    return records


@pytest.mark.parametrize("exc", [BrokenPipeError(32, "Broken pipe"),
                                 ConnectionResetError(104, "Connection reset by peer")])
def test_a_connection_that_ended_unwaited_for_is_logged_at_debug(exc: OSError) -> None:
    records = drop_a_failed_future(exc)
    assert not [r for r in records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in records]
    assert any(r.levelno == logging.DEBUG and "client connection ended" in r.getMessage()
               for r in records)


def test_any_other_unretrieved_error_is_still_reported() -> None:
    records = drop_a_failed_future(ValueError("a bug"))
    assert any(r.levelno == logging.ERROR and "never retrieved" in r.getMessage()
               for r in records), [r.getMessage() for r in records]

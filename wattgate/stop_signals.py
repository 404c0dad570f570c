"""Stop signals as an exception, for commands that leave things behind if killed outright.

`wattgate bench` starts daemons in temporary directories, `simulate` builds a fake board,
the demo runs a daemon on a simulated board. The default action of SIGTERM or SIGHUP
(`timeout`, a CI runner cancelling a job, `kill`, a closed SSH session) ended such a
process at once and left its daemons running and its directories behind. Within
`raised_by`, the signal raises StopSignal instead, which unwinds through every `with` and
`finally` on the way out, as Ctrl-C's KeyboardInterrupt does, and the command exits
128 + the signal's number (`StopSignal.exit_status`), as a shell reports a killed one.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Optional


class StopSignal(BaseException):
    """A stop signal arrived. A BaseException, as KeyboardInterrupt is: the `except
    Exception` guards of what runs meanwhile (a benchmark, the power controller's reads)
    must not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


@contextmanager
def raised_by(signals: Sequence[signal.Signals]) -> Iterator[None]:
    """Within, each of `signals` raises StopSignal.

    Once only: the first one ignores them all, so a second cannot cut short the clean-up
    the first began. The handlers found are put back after (a caller in the same process,
    the tests, keeps its own). A signal found ignored stays ignored: `nohup wattgate bench
    all` must outlive the terminal it began in. Off the main thread, where Python sets no
    handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Optional[FrameType]) -> None:
        for each in signals:
            signal.signal(each, signal.SIG_IGN)
        raise StopSignal(signum)

    previous = {each: signal.getsignal(each) for each in signals}
    for each, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(each, stop)
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)

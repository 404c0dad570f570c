"""The newest-frame slot between the capture and inference threads.

It holds one item. A new frame replaces an untaken one, which is counted as stale: a
model slower than the camera drops old frames instead of building latency. A file read
faster than real time has no "newest": its reader waits for the slot instead (`wait`),
so every frame the gate passes is inferred and no CPU goes to frames thrown away.
"""

from __future__ import annotations

import threading
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self.stale = 0  # frames replaced before the inference thread took them

    def put(self, item: T, wait: bool = False) -> None:
        """Hand over item; replace an untaken one, or with `wait` first wait until it is taken."""
        with self._cond:
            while wait and self._item is not None and not self._closed:
                self._cond.wait()
            if self._item is not None:
                self.stale += 1
            self._item = item
            self._cond.notify_all()

    def take(self, timeout: Optional[float] = None) -> Optional[T]:
        """The newest item, waiting up to timeout; None on timeout or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            self._cond.notify_all()  # a waiting put may go on
            return None if self._closed else item

    def close(self) -> None:
        """Wake the taker for good: take() returns None from now on."""
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

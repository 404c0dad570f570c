"""The newest-frame slot: cameras drop stale frames, fast file reads wait for the model."""

from __future__ import annotations

import threading
import time

from wattgate.daemon.slot import LatestSlot


def test_a_new_item_replaces_an_untaken_one_and_counts_it_stale() -> None:
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    slot.put(2)
    assert slot.take(0) == 2
    assert slot.stale == 1
    assert slot.take(0) is None


def test_a_waiting_put_loses_nothing() -> None:
    slot: LatestSlot[int] = LatestSlot()
    taken: list[int] = []

    def consume() -> None:
        while len(taken) < 200:
            item = slot.take(5)
            if item is not None:
                taken.append(item)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(200):
        slot.put(i, wait=True)
    consumer.join(10)
    assert taken == list(range(200))
    assert slot.stale == 0


def test_close_releases_a_waiting_put() -> None:
    slot: LatestSlot[int] = LatestSlot()
    slot.put(1)
    putter = threading.Thread(target=slot.put, args=(2,), kwargs={"wait": True})
    putter.start()
    time.sleep(0.05)
    assert putter.is_alive()  # waiting for the untaken item
    slot.close()
    putter.join(5)
    assert not putter.is_alive()
    assert slot.take(0) is None

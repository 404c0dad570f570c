"""Reloads that load a new model do not leave the daemon's memory higher each time.

Each model load ran in a new thread. glibc's malloc gave the new threads other arenas (up
to 8 a core), and each arena kept the free space a load's transient buffers left behind:
on 2 cores 20 such reloads left the daemon's resident memory about 80 MB higher, growing
until every arena had its share. Loads now run one after another in one thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import pinnable_board
from tests.test_infer_image_memory import MIB, resident


def test_reloads_of_a_new_model_leave_the_memory_where_the_first_one_did(
    start_daemon: Any, tmp_path: Path,
) -> None:
    config = pinnable_board(tmp_path, camera={"source": "synthetic:office"},
                            model={"score_threshold": 0.5})
    text = config.read_text()
    assert "score_threshold = 0.5\n" in text
    daemon = start_daemon(config=config)
    with daemon.connect() as client:
        client.settimeout(60)

        def reload_with(threshold: float) -> None:
            config.write_text(text.replace("score_threshold = 0.5\n",
                                           f"score_threshold = {threshold}\n"))
            answer = client.request("reload")
            assert answer["reloaded"] is True, answer

        reload_with(0.55)  # the first new model: what a reload needs, in place
        reload_with(0.5)
        before = resident(daemon.proc.pid)
        for n in range(20):
            reload_with(0.55 if n % 2 == 0 else 0.5)
        grown = resident(daemon.proc.pid) - before
    assert daemon.stop() == 0
    assert grown <= 32 * MIB, grown / MIB

"""Start-up warm-up: what the daemon runs once before READY so that memory does not grow after.

The clip and the warm-up frame are checked for what they make the gate and the model do; the
real daemon for the order of things (the first frame through the gate, then READY), never for
how long anything takes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import pytest

from bench.common import NotifyListener
from tests.conftest import DaemonProcess
from wattgate.config import GateConfig
from wattgate.daemon.warmup import ROWS, clip, model_frame, warm_gate
from wattgate.drivers.inference import Model

StartDaemon = Callable[..., DaemonProcess]

# The pipeline's gate takes its first real frame slowly (the warm-up's small frames pass at
# once) and leaves a mark once it has: READY must not come before that mark.
SLOW_FIRST_FRAME = """
import sys, time
from pathlib import Path
from wattgate.policies.gating import MotionGate
mark = Path(sys.argv[1])
real_update = MotionGate.update_bgr
def update_bgr(self, frame, now):
    verdict = real_update(self, frame, now)
    if frame.shape[0] == 480 and not mark.exists():  # a camera frame, not a warm-up one
        time.sleep(1.0)
        mark.write_text("through the gate")
    return verdict
MotionGate.update_bgr = update_bgr
from wattgate.cli import main
sys.exit(main(["run", "--config", sys.argv[2]]))
"""


def test_the_clip_takes_the_gate_through_every_kind_of_frame() -> None:
    reasons = [v.reason for v in warm_gate(GateConfig())]
    assert reasons[0] == "calibrating"
    for reason in ("heartbeat", "idle", "motion", "cooldown", "lighting"):
        assert reason in reasons, reasons
    moving = [i for i, r in enumerate(reasons) if r == "motion"]
    # The block stops halfway and is taken into the background (a cooldown while it stands)
    # before it moves on: still-region absorption runs too.
    assert "cooldown" in reasons[moving[0] : moving[-1]]


def test_the_warm_up_gate_is_small_whatever_the_configured_size() -> None:
    assert next(clip()).shape == (2 * ROWS, 2 * ROWS * 4 // 3, 3)
    assert warm_gate(GateConfig(frame_height=ROWS // 2))  # smaller settings stay as they are
    assert warm_gate(GateConfig(enabled=False)) == []


@pytest.mark.parametrize("rows", [16, 24, 40, ROWS])
def test_a_small_gate_is_taken_through_every_kind_of_frame_too(rows: int) -> None:
    """A gate configured smaller than the warm-up's own size runs the same paths: on a clip
    made at its size, gates of 16 to 40 rows never saw the lamp as lighting."""
    reasons = {v.reason for v in warm_gate(GateConfig(frame_height=rows))}
    assert reasons >= {"calibrating", "heartbeat", "idle", "motion", "cooldown", "lighting"}


def test_the_warm_up_frame_has_a_face_for_the_model_to_decode() -> None:
    frame = model_frame(640, 480)
    assert frame.shape == (480, 640, 3)
    detections = Model.load(None).infer(frame).detections
    assert [d.label for d in detections] == ["face"]
    x0, y0, x1, y1 = detections[0].box
    assert x0 < 320 < x1 and y0 < 240 < y1


def test_ready_comes_once_the_first_frame_is_through_the_gate(
    start_daemon: StartDaemon, notify: NotifyListener, tmp_path: Path
) -> None:
    mark = tmp_path / "first-frame"
    daemon = start_daemon(  # the office scene, 640x480, gate on
        env={"NOTIFY_SOCKET": str(notify.path)},
        argv=lambda config: [sys.executable, "-c", SLOW_FIRST_FRAME, str(mark), str(config)],
    )
    notify.wait_for("READY=1")
    assert mark.exists(), "READY came before the first frame was through the gate"
    assert daemon.stop() == 0


def test_ready_does_not_wait_for_frames_from_a_missing_camera(
    start_daemon: StartDaemon, notify: NotifyListener, tmp_path: Path
) -> None:
    daemon = start_daemon(
        env={"NOTIFY_SOCKET": str(notify.path)},
        camera={"source": str(tmp_path / "not-there.mp4"), "stall_s": 600.0},
    )
    notify.wait_for("READY=1")
    with daemon.connect() as client:
        status = client.request("status")
    assert status["source"]["state"] == "waiting"
    assert status["pipeline"]["frames"] == 0
    assert daemon.stop() == 0

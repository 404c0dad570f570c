"""With `[gate] enabled = false` motion is not measured: every result's `motion` reads score
0 with no boxes, even while a face walks in, and docs/protocol.md says so (a client could
not tell "nothing moved" from "not measured"). The message keeps its shape: within a
protocol major only additive changes are allowed. A real daemon reads a real video."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.conftest import DaemonProcess, FaceVideo

StartDaemon = Callable[..., DaemonProcess]
PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"


def test_with_the_gate_off_motion_reads_zero_and_the_protocol_says_so(
    start_daemon: StartDaemon, face_video: FaceVideo
) -> None:
    page = " ".join(PROTOCOL.read_text().split())
    assert ("With the gate off (`gate.enabled = false`) motion is not measured: every "
            'result\'s `motion` is `{"score":0.0,"boxes":[]}`, whatever moves') in page
    daemon = start_daemon(camera={"source": str(face_video.path), "realtime": False},
                          gate={"enabled": False})
    with daemon.connect() as client:
        client.request("subscribe", topics=["results"])
        client.settimeout(60)
        for result in client.messages():
            if result["class"] != "result":
                continue
            assert result["reason"] == "disabled", result
            assert result["motion"] == {"score": 0.0, "boxes": []}, result
            if result["frame"] in face_video.face_frames and result["detections"]:
                break  # the face has come in: the gate, on, saw it as motion
    assert daemon.stop() == 0

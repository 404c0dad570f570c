"""A reload that changes gate.frame_height: an MJPEG camera's reduced decode follows it.

The decode scale (1/8, 1/4, 1/2) is chosen at open for the gate's rows. Kept across a
reload, a gate raised from 100 to 400 rows got 135 real rows stretched to 400, and one
lowered from 400 to 100 kept decoding 540 rows a frame, 16 times the pixels it needs.

The streams are real JPEGs back to back in a file, read through FFmpeg as undecoded packets
(tests/test_mjpeg_resize.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_config
from tests.test_daemon import wait_log
from tests.test_mjpeg_resize import write_stream
from wattgate.config import CameraConfig
from wattgate.daemon.camera_watch import SupervisedSource
from wattgate.drivers.camera import CaptureSource, open_source

FULL_HD = (1920, 1080)


def luma_rows_read(source: CaptureSource | SupervisedSource) -> int:
    frame = source.read()
    assert frame is not None and frame.luma is not None
    return int(frame.luma.shape[0])


@pytest.mark.parametrize(("opened", "reloaded", "before", "after"),
                         [(100, 400, 135, 540), (400, 100, 540, 135)])
def test_an_open_mjpeg_source_decodes_for_the_new_rows(
    tmp_path: Path, opened: int, reloaded: int, before: int, after: int,
) -> None:
    path = write_stream(tmp_path / "cam.mjpeg", [FULL_HD] * 4)
    source = open_source(CameraConfig(source=str(path), format="mjpeg", realtime=False),
                         luma_rows=opened)
    try:
        assert isinstance(source, CaptureSource) and source.raw == "MJPG"
        assert luma_rows_read(source) == before
        source.follow_luma_rows(reloaded)
        assert luma_rows_read(source) == after
    finally:
        source.close()


def test_the_supervised_source_passes_the_rows_on_and_keeps_them_for_a_reopen(
    tmp_path: Path,
) -> None:
    path = write_stream(tmp_path / "cam.mjpeg", [FULL_HD] * 3)
    source = SupervisedSource(CameraConfig(source=str(path), format="mjpeg", realtime=False),
                              luma_rows=100, udev=False)
    try:
        assert luma_rows_read(source) == 135
        source.follow_luma_rows(400)
        assert luma_rows_read(source) == 540
        assert source.luma_rows == 400  # what a source opened after a loss is given
    finally:
        source.stop()


# `wattgate run` that logs the decode scale of each MJPEG frame when it changes.
SCALE_LOGGING = """
import sys
import wattgate.drivers.camera as camera
from wattgate.cli import main
real = camera.frame_from_mjpeg
last = [None]
def logged(data, index, ts, mono, size, reduce, *rest):
    if reduce != last[0]:
        last[0] = reduce
        print(f"decode scale 1/{reduce}", file=sys.stderr, flush=True)
    return real(data, index, ts, mono, size, reduce, *rest)
camera.frame_from_mjpeg = logged
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_reload_of_the_gates_rows_reaches_the_running_cameras_decode(
    start_daemon: Any, tmp_path: Path,
) -> None:
    path = write_stream(tmp_path / "cam.mjpeg", [FULL_HD] * 10)
    camera = {"source": str(path), "format": "mjpeg", "realtime": True, "fps": 5.0,
              "loop": True}
    daemon = start_daemon(
        camera=camera, gate={"frame_height": 100},
        argv=lambda config: [sys.executable, "-c", SCALE_LOGGING, str(config)],
    )
    with daemon.connect() as client:
        wait_log(daemon, "decode scale 1/8")
        write_config(daemon.config, daemon.config.parent, camera=camera,
                     gate={"frame_height": 400})
        assert client.request("reload")["message"] == "reloaded"
        wait_log(daemon, "decode scale 1/2")
    assert daemon.stop() == 0, daemon.log()

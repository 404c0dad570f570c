"""A recording rewritten in place while it is played: a recorder writing its next clip to
the same path with O_TRUNC (``ffmpeg -y``, cv2.VideoWriter, ``cp new old``) keeps the inode,
and the new recording was taken for the old one cut short: reopened at the old one's frame
number, its first frames never played, or (shorter than where the old one stopped) never
played at all. It is played from its first frame, as a file renamed over the old one is,
while a file really cut short (truncated, or still being appended to) is handled as before.

Every file is a real AVI written by cv2.VideoWriter, read through FFmpeg.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from tests.test_camera_watch import (
    FAST,
    avi_frame_chunks,
    bar_x,
    file_config,
    frames_until_none,
    shows_its_bar,
    write_video,
)
from wattgate.daemon.camera_watch import SupervisedSource
from wattgate.drivers.camera import CaptureSource, Frame


def write_new_clip(path: Path, frames: int) -> Path:
    """Another recording than write_video's: its frame k shows the bar at x = 600 - 10 k."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (640, 480))
    assert writer.isOpened()
    for k in range(frames):
        image = np.full((480, 640, 3), 70, np.uint8)
        cv2.rectangle(image, (600 - 10 * k, 200), (608 - 10 * k, 280), (255, 255, 255), -1)
        writer.write(image)
    writer.release()
    return path


def of_new_clip(frame: Frame) -> bool:
    """Whether a frame is write_new_clip's frame with its index."""
    return abs(bar_x(frame) - (604 - 10 * frame.index)) <= 2


def test_a_file_rewritten_in_place_shorter_is_replaced_not_cut_short(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "camera.avi", frames=60)
    new = write_new_clip(tmp_path / "new.avi", frames=5)
    inode = os.stat(clip).st_ino
    source = CaptureSource(str(clip), file_config(clip))
    try:
        frames = [source.read() for _ in range(30)]
        shutil.copyfile(new, clip)  # cp new.avi camera.avi: O_TRUNC, the same inode
        assert os.stat(clip).st_ino == inode
        frames += frames_until_none(source)
    finally:
        source.close()
    assert source.end_reason == "replaced"  # was "cut short", and reopened at its frame
    assert all(f is not None and shows_its_bar(f) for f in frames)  # the old file's, read


def test_a_rewrite_that_had_written_nothing_at_the_cut_is_played_from_frame_0(
    tmp_path: Path,
) -> None:
    """The recorder has truncated the file and not written yet (cv2.VideoWriter buffers its
    first frames) when the read stops: nothing tells a rewrite from a cut then. The file is
    reopened once the new recording is in it, which is told from the old one there: its
    20 frames are played from frame 0. They were opened at the old file's frame number,
    past their end, and never played."""
    clip = write_video(tmp_path / "camera.avi", frames=60)
    new = write_new_clip(tmp_path / "new.avi", frames=20).read_bytes()
    events: list[str] = []

    def lost(reason: str) -> None:  # the recorder's buffer reaches the file while lost
        events.append(reason)
        with clip.open("r+b") as out:  # the same inode, as the truncation left it
            out.write(new)

    source = SupervisedSource(file_config(clip, stall_s=0.5), on_lost=lost,
                              on_back=lambda: events.append("back"), settings=FAST,
                              udev=False)
    try:
        frames = [source.read() for _ in range(30)]
        clip.open("wb").close()  # the recorder's O_TRUNC
        while (frame := source.read()) is not None:
            frames.append(frame)
        state = source.status()["state"]
    finally:
        source.stop()
    assert all(f is not None for f in frames)
    old = [f for f in frames if f is not None and shows_its_bar(f)]
    rest = [f for f in frames[len(old):] if f is not None]
    assert [f.index for f in old] == list(range(len(old))) and len(old) >= 30
    assert [f.index for f in rest] == list(range(20))
    assert all(of_new_clip(f) for f in rest)
    assert len(events) == 2 and "cut short" in events[0] and events[1] == "back"
    assert state == "ended"


def test_a_file_truncated_by_mistake_is_still_cut_short(tmp_path: Path) -> None:
    """Truncated, not rewritten: what it still holds is the recording read, so it stops cut
    short where its bytes do, to be resumed there (or ended once it stays so)."""
    clip = write_video(tmp_path / "camera.avi", frames=60)
    offset, _ = avi_frame_chunks(clip.read_bytes())[40]
    source = CaptureSource(str(clip), file_config(clip, format="mjpeg"))
    try:
        frames = [source.read() for _ in range(30)]
        os.truncate(clip, offset)
        frames += frames_until_none(source)
    finally:
        source.close()
    assert source.end_reason == "cut short"
    assert [f.index for f in frames if f is not None] == list(range(source.position))
    assert 30 <= source.position < 60  # where the bytes FFmpeg had read ahead stop
    assert all(f is not None and shows_its_bar(f) for f in frames)


def test_a_rewrite_with_larger_frames_ends_the_old_recording_before_its_next_frame(
    tmp_path: Path,
) -> None:
    """A recording of larger frames written over the one playing: the read went on through
    the old recording's index over the new bytes, and for about 6 s at 15 fps (78 frames)
    delivered pictures of neither recording, each of which the gate took for motion, until
    a read failed. The file is looked at before each read, and the read ends "replaced"
    at the first after the rewrite."""
    clip = write_video(tmp_path / "camera.avi", frames=200)
    new = tmp_path / "new.avi"
    writer = cv2.VideoWriter(str(new), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (1280, 720))
    rng = np.random.default_rng(7)
    for _ in range(120):  # noise: large frames, each a different picture
        writer.write(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8))
    writer.release()
    source = CaptureSource(str(clip), file_config(clip))
    try:
        frames = [source.read() for _ in range(30)]
        shutil.copyfile(new, clip)  # cp new.avi camera.avi: O_TRUNC, the same inode
        frames += frames_until_none(source)
    finally:
        source.close()
    assert source.end_reason == "replaced"
    assert all(f is not None and shows_its_bar(f) for f in frames)  # none of neither
    assert len(frames) <= 31  # at most the one read ahead before the rewrite

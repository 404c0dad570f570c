"""Where a file cut short is played from when it is reopened: at the frame it reached while
it is the same file, still being written, and from frame 0 once another file has taken its
path (a recorder's rotation renames a new recording over it). Real AVIs written by
cv2.VideoWriter, read through FFmpeg.
"""

from __future__ import annotations

from pathlib import Path

from tests.test_camera_watch import FAST, file_config, put_in_place, shows_its_bar, write_video
from tests.test_file_rewritten import of_new_clip, write_new_clip
from wattgate.daemon.camera_watch import SupervisedSource
from wattgate.drivers.camera import Frame


def test_a_file_cut_short_then_renamed_over_is_played_from_frame_0(tmp_path: Path) -> None:
    """A recording still being written is cut short at frame N, and before the reopen a new
    whole recording is renamed over its path (another inode). The new file was opened at
    frame N: its first N frames were never gated nor inferred."""
    whole = write_video(tmp_path / "whole.avi", frames=60).read_bytes()
    new = write_new_clip(tmp_path / "new.avi", frames=40)
    clip = tmp_path / "camera.avi"
    clip.write_bytes(whole[: len(whole) // 2])
    events: list[str] = []

    def lost(reason: str) -> None:  # the rotation happens while the file is lost
        events.append(reason)
        put_in_place(new, clip)

    source = SupervisedSource(file_config(clip), on_lost=lost,
                              on_back=lambda: events.append("back"), settings=FAST,
                              udev=False)
    frames: list[Frame] = []
    try:
        while (frame := source.read()) is not None:
            frames.append(frame)
    finally:
        source.stop()
    old = [f for f in frames if shows_its_bar(f) and not of_new_clip(f)]
    rest = frames[len(old):]
    assert len(events) == 2 and "cut short" in events[0] and events[1] == "back"
    assert [f.index for f in old] == list(range(len(old))) and len(old) >= 10
    assert [f.index for f in rest] == list(range(40))
    assert all(of_new_clip(f) for f in rest)


def test_a_file_played_to_its_end_says_it_ended_and_nothing_was_lost(tmp_path: Path) -> None:
    """A whole file ends: `on_ended` is told once, and nothing was reported lost."""
    clip = write_video(tmp_path / "whole.avi", frames=10)
    lost: list[str] = []
    ended: list[str] = []
    source = SupervisedSource(file_config(clip), on_lost=lost.append, on_ended=ended.append,
                              settings=FAST, udev=False)
    try:
        while source.read() is not None:
            pass
    finally:
        source.stop()
    assert ended == ["end of file"] and lost == []
    assert source.state == "ended"

"""The camera supervisor on real sources: video files written by cv2.VideoWriter that appear
late or are cut mid-stream, an MJPEG-over-HTTP camera on the loopback that stalls, and the
real daemon picking up a camera file that appears after it started.

Nothing here asserts how long anything took: tests wait, with generous timeouts, for
something to happen, and check the supervisor's own schedule (its retry delays) for the cap.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from tests.conftest import FaceVideo
from tests.test_camera_formats import write_mjpeg_stream
from wattgate.config import CameraConfig
from wattgate.daemon.camera_watch import Backoff, SupervisedSource, WatchSettings
from wattgate.drivers import v4l2
from wattgate.drivers.camera import CaptureSource, Frame, SourceError

FAST = WatchSettings(reopen_min_s=0.05, reopen_max_s=0.4, healthy_s=5.0, poll_s=0.05)


def write_video(path: Path, frames: int = 60, fps: float = 30.0, fourcc: str = "MJPG") -> Path:
    """An AVI (MJPG, or another codec OpenCV's FFmpeg writes: mp4v, XVID) whose frame i
    shows a white bar at x = 10 i."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (640, 480))
    assert writer.isOpened()
    for i in range(frames):
        image = np.full((480, 640, 3), 70, np.uint8)
        cv2.rectangle(image, (10 * i, 200), (10 * i + 8, 280), (255, 255, 255), -1)
        writer.write(image)
    writer.release()
    return path


def bar_x(frame: Frame) -> float:
    grey = cv2.cvtColor(frame.color(), cv2.COLOR_BGR2GRAY)
    return float(np.nonzero(grey[240] > 200)[0].mean())


def shows_its_bar(frame: Frame) -> bool:
    """Whether a frame of write_video's shows the picture its index says: the right one."""
    return abs(bar_x(frame) - (10 * frame.index + 4)) <= 2


def avi_frame_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, payload size) of each chunk in an AVI's movi list: write_video's frames, in
    order. A chunk is a four-byte id, a little-endian 32-bit size and the payload, padded
    to an even length (RIFF)."""
    movi = data.index(b"movi")
    end = movi + int.from_bytes(data[movi - 4: movi], "little")
    chunks, at = [], movi + 4
    while at < end:
        size = int.from_bytes(data[at + 4: at + 8], "little")
        chunks.append((at, size))
        at += 8 + size + size % 2
    return chunks


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


class Reader:
    """The pipeline's capture thread, reduced to reading: frames and the events it was told."""

    def __init__(self, cfg: CameraConfig, settings: WatchSettings = FAST, **kw: Any) -> None:
        self.frames: list[Frame] = []
        self.events: list[tuple[str, ...]] = []
        self.source = SupervisedSource(
            cfg,
            on_lost=lambda reason: self.events.append(("lost", reason)),
            on_back=lambda: self.events.append(("back",)),
            settings=settings,
            udev=False,
            **kw,
        )
        self.returned_none = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            frame = self.source.read()
            if frame is None:
                self.returned_none.set()
                return
            self.frames.append(frame)

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]

    def stop(self) -> None:
        self.source.stop()
        assert self.returned_none.wait(10), "read() did not return after stop()"


@pytest.fixture
def readers() -> Iterator[list[Reader]]:
    made: list[Reader] = []
    yield made
    for reader in made:
        reader.source.stop()


def file_config(path: Path, **values: Any) -> CameraConfig:
    return CameraConfig(source=str(path), realtime=False, **values)


def put_in_place(src: Path, dst: Path) -> None:
    """Copy then rename, as a recorder or an admin would: the file appears whole."""
    tmp = dst.with_suffix(".part")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# -- backoff ------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap_and_forgives_a_healthy_run() -> None:
    backoff = Backoff(0.5, 8.0, healthy_s=10.0)
    delays = [backoff.failure(now=float(i)) for i in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    backoff.success(now=100.0)
    assert backoff.failure(now=105.0) == 8.0  # five seconds of frames is not yet healthy
    backoff.success(now=106.0)
    assert backoff.failure(now=116.0) == 0.5  # ten seconds is: start again from the first
    assert backoff.failures == 1
    backoff.failure(now=117.0)
    backoff.reset()  # the camera was plugged in again
    assert backoff.next_delay == 0.5 and backoff.failures == 0
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0, 1.0)


# -- files ----------------------------------------------------------------------------------------


def test_a_file_that_appears_after_start_is_picked_up(
    tmp_path: Path, readers: list[Reader]
) -> None:
    video = write_video(tmp_path / "source.avi", frames=30)
    target = tmp_path / "camera.avi"
    reader = Reader(file_config(target))
    readers.append(reader)
    wait_for(lambda: reader.events, what="camera reported unavailable")
    status = reader.source.status()
    assert status["state"] == "waiting" and "no such file" in status["reason"]
    assert reader.events == [("lost", f"no such file: {target}")]
    assert not reader.frames
    put_in_place(video, target)
    assert reader.returned_none.wait(30), "the file was not played to its end"
    assert [f.index for f in reader.frames] == list(range(30))
    assert reader.kinds() == ["lost", "back"]
    status = reader.source.status()
    assert status["state"] == "ended" and status["frames"] == 30
    assert status["width"] == 640 and status["fps"] == 30.0


def test_a_file_still_being_written_is_reopened_with_capped_backoff_and_resumed(
    tmp_path: Path, readers: list[Reader]
) -> None:
    """A recording copied while it grows: the reader catches up with the copy half way, and
    the copy goes on in small pieces. Every reopen resumes where the last read stopped, the
    retries back off up to their cap, and the whole file is played once, to its end."""
    whole = write_video(tmp_path / "whole.avi", frames=60)
    data = whole.read_bytes()
    target = tmp_path / "camera.avi"
    target.write_bytes(data[: len(data) // 2])
    settings = replace(FAST, reopen_min_s=0.1, reopen_max_s=0.8)
    capped = threading.Event()

    def copy_on() -> None:  # a little at a time until the cap was seen, then the rest
        with target.open("ab", buffering=0) as out:
            written = len(data) // 2
            while written < len(data):
                piece = 200 if not capped.is_set() else len(data)
                written += out.write(data[written: written + piece])
                time.sleep(0.01)

    copier = threading.Thread(target=copy_on, daemon=True)
    reader = Reader(file_config(target, format="mjpeg"), settings)
    readers.append(reader)
    copier.start()
    wait_for(lambda: reader.events, what="the cut to be noticed")
    assert reader.events[0][0] == "lost" and "cut short" in reader.events[0][1]
    reached = len(reader.frames)
    assert reached >= 20

    delays: set[float] = set()

    def seen_cap() -> bool:  # retried while the copy grows, until the delay reached its cap
        status = reader.source.status()
        if status["state"] == "lost":
            delays.add(status["retry_delay_s"])
            assert status["retry_delay_s"] <= settings.reopen_max_s
        return settings.reopen_max_s in delays

    wait_for(seen_cap, what="the backoff to reach its cap")
    capped.set()
    assert len(delays) >= 3  # it grew: 0.1, 0.2, 0.4, 0.8
    copier.join(30)
    assert reader.returned_none.wait(30), "the file was not played to its end"
    assert [f.index for f in reader.frames] == list(range(60)), "a frame lost or repeated"
    assert all(shows_its_bar(f) for f in reader.frames)  # each the right picture
    kinds = reader.kinds()
    assert kinds == ["lost", "back"] * (len(kinds) // 2)
    assert reader.source.status()["state"] == "ended"


def test_a_frame_a_cut_tore_in_two_is_played_once_the_rest_of_it_arrives(
    tmp_path: Path, readers: list[Reader], caplog: pytest.LogCaptureFixture
) -> None:
    """A recording copied while it grows, the copy stopped inside frame 30: the reader gets
    its first half, which does not decode, and then the cut. When the rest arrives, frame
    30 is played from its now whole bytes, and every frame once. The resume began after
    the torn frame, which was lost for good."""
    data = write_video(tmp_path / "whole.avi", frames=60).read_bytes()
    offset, size = avi_frame_chunks(data)[30]
    cut = offset + 8 + size // 2
    target = tmp_path / "camera.avi"
    target.write_bytes(data[:cut])
    reader = Reader(file_config(target, format="mjpeg"))
    readers.append(reader)
    wait_for(lambda: reader.events, what="the cut to be noticed")
    assert [f.index for f in reader.frames] == list(range(30))
    with target.open("ab") as out:
        out.write(data[cut:])
    assert reader.returned_none.wait(30), "the file was not played to its end"
    assert [f.index for f in reader.frames] == list(range(60))
    assert all(shows_its_bar(f) for f in reader.frames)
    assert reader.events[0] == ("lost", "file cut short at frame 30")
    assert not [r for r in caplog.records if "dropped" in r.getMessage()]  # none was


@pytest.mark.parametrize("share", [0.3, 0.5, 0.9])
def test_a_frame_a_cut_tore_is_not_delivered_half_decoded_in_colour(
    tmp_path: Path, readers: list[Reader], share: float
) -> None:
    """camera.format = "auto" on an MPEG-4 part 2 AVI copied while it grows, the copy
    stopped inside frame 30: FFmpeg decodes the torn frame's first bytes with error
    concealment, and that picture was delivered as frame 30 (the gate saw a change, the
    model ran on it), and the resume went on after it. It is held back until the rest has
    come, and then played whole, once. (A torn frame FFmpeg cannot decode at all leaves
    the frame before it last: that one is held back and read again in its place.)"""
    data = write_video(tmp_path / "whole.avi", frames=60, fourcc="mp4v").read_bytes()
    offset, size = avi_frame_chunks(data)[30]
    cut = offset + 8 + int(size * share)
    target = tmp_path / "camera.avi"
    target.write_bytes(data[:cut])
    reader = Reader(file_config(target))
    readers.append(reader)
    wait_for(lambda: reader.events, what="the cut to be noticed")
    held = len(reader.frames)
    assert held in (29, 30)
    assert reader.events[0] == ("lost", f"file cut short at frame {held}")
    with target.open("ab") as out:
        out.write(data[cut:])
    assert reader.returned_none.wait(30), "the file was not played to its end"
    assert [f.index for f in reader.frames] == list(range(60))
    assert all(shows_its_bar(f) for f in reader.frames)


def frames_until_none(source: CaptureSource) -> list[Frame]:
    """Every frame a source gives until it says it has stopped."""
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    return frames


def test_a_frame_a_cut_tore_is_not_counted_or_warned_as_corrupt_but_a_corrupt_one_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A recording with a corrupt frame 45 (its JPEG zeroed) copied while it grows, the
    copy stopped inside frame 30 and opened again there while still cut, as the supervisor
    does, then completed. The torn frame 30 is not counted as corrupt nor warned about as
    dropped: it is not dropped but read again, and played once whole. It was, at every
    reopen while the file grew. Frame 45 is dropped, counted and warned about once."""
    data = bytearray(write_video(tmp_path / "whole.avi", frames=60).read_bytes())
    chunks = avi_frame_chunks(bytes(data))
    offset, corrupt = chunks[45]
    data[offset + 8: offset + 8 + corrupt] = bytes(corrupt)
    offset, size = chunks[30]
    cut = offset + 8 + size // 2
    target = tmp_path / "camera.avi"
    target.write_bytes(data[:cut])
    cfg = file_config(target, format="mjpeg")
    caplog.set_level(logging.INFO, logger="wattgate.camera")
    sources = [CaptureSource(str(target), cfg)]
    frames = frames_until_none(sources[0])
    sources.append(CaptureSource(str(target), cfg, start_frame=30))  # the file not grown yet
    assert sources[1].read() is None
    with target.open("ab") as out:
        out.write(data[cut:])
    sources.append(CaptureSource(str(target), cfg, start_frame=30))
    frames += frames_until_none(sources[2])
    for source in sources:
        source.close()
    assert [f.index for f in frames] == [i for i in range(60) if i != 45]
    assert all(shows_its_bar(f) for f in frames)
    assert [(s.end_reason, s.position) for s in sources] == [
        ("cut short", 30), ("cut short", 30), ("ended", 60)]
    assert [s.corrupt for s in sources] == [0, 0, 1]
    dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert dropped == [f"camera {target}: frame 45 dropped: an MJPEG buffer of {corrupt} "
                       "bytes that does not decode"]


def test_a_cut_inside_the_last_frame_but_one_is_a_cut_not_the_end(tmp_path: Path) -> None:
    """A file one frame short of its header's count has ended (a header may count one
    frame too many). Torn inside frame 58 of 60, the file was taken for one that stopped
    one short, since the torn frame was counted as read: it ended, and frames 58 and 59 of
    a recording still being written were lost."""
    data = write_video(tmp_path / "whole.avi", frames=60).read_bytes()
    offset, size = avi_frame_chunks(data)[58]
    target = tmp_path / "camera.avi"
    target.write_bytes(data[: offset + 8 + size // 2])
    source = CaptureSource(str(target), file_config(target, format="mjpeg"))
    frames = frames_until_none(source)
    source.close()
    assert [f.index for f in frames] == list(range(58))
    assert (source.end_reason, source.position, source.corrupt) == ("cut short", 58, 0)


class AppendedAfterRead:
    """A real VideoCapture whose file gets ``rest`` appended right after its read number
    ``reads``: a recorder's write landing between two reads inside CaptureSource.read,
    which no timing from outside can arrange. Everything else is the capture's own."""

    def __init__(self, cap: Any, target: Path, rest: bytes, reads: int) -> None:
        self.cap, self.target, self.rest, self.left = cap, target, rest, reads

    def read(self) -> tuple[bool, Any]:
        answer = self.cap.read()
        self.left -= 1
        if self.left == 0:
            with self.target.open("ab") as out:
                out.write(self.rest)
        return answer  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cap, name)


def test_a_torn_frame_whose_rest_comes_before_the_next_read_is_read_again(
    tmp_path: Path,
) -> None:
    """The read of frame 30 gets the bytes before a cut, and the recorder writes the rest
    before the next read: that read found the file grown, the demuxer resynced at frame 31,
    and frame 30 was dropped as corrupt for good. A buffer that does not decode in a file
    grown since it was opened is now taken for a torn one: cut short there, read again."""
    data = write_video(tmp_path / "whole.avi", frames=60).read_bytes()
    offset, size = avi_frame_chunks(data)[30]
    cut = offset + 8 + size // 2
    target = tmp_path / "camera.avi"
    target.write_bytes(data[:cut])
    cfg = file_config(target, format="mjpeg")
    first = CaptureSource(str(target), cfg)
    first._cap = AppendedAfterRead(  # type: ignore[assignment]
        first._cap, target, data[cut:], reads=31)
    frames = frames_until_none(first)
    first.close()
    second = CaptureSource(str(target), cfg, start_frame=first.position)
    frames += frames_until_none(second)
    second.close()
    assert [f.index for f in frames] == list(range(60))
    assert all(shows_its_bar(f) for f in frames)
    assert first.corrupt == second.corrupt == 0


def test_a_file_whose_header_overstates_its_length_ends_once_unchanged_for_stall_s(
    tmp_path: Path, readers: list[Reader]
) -> None:
    """A recording a power cut left unfinished: its header counts 60 frames, the file holds
    half of them, and nothing writes it any more. Reopens find it as it was at the cut, and
    once it has been so for stall_s it ends like a whole file. It was reopened and reported
    lost for ever."""
    data = write_video(tmp_path / "whole.avi", frames=60).read_bytes()
    target = tmp_path / "camera.avi"
    target.write_bytes(data[: len(data) // 2])
    reader = Reader(file_config(target, format="mjpeg", stall_s=1.0))
    readers.append(reader)
    assert reader.returned_none.wait(20), f"never ended: {reader.source.status()}"
    reached = len(reader.frames)
    assert 20 <= reached <= 31
    assert [f.index for f in reader.frames] == list(range(reached))
    assert len(reader.events) == 1 and "cut short" in reader.events[0][1]
    status = reader.source.status()
    assert status["state"] == "ended" and status["reason"] == "end of file"
    assert status["reopens"] >= 1


def test_a_looping_file_whose_header_overstates_its_length_starts_again_from_frame_0(
    tmp_path: Path, readers: list[Reader]
) -> None:
    """camera.loop on a recording a power cut left unfinished: once it has been unchanged
    for stall_s it is played again from its first frame, as a whole file is, and at each
    later end at once, with no new loss reported. It ended although the config said loop."""
    data = write_video(tmp_path / "whole.avi", frames=60).read_bytes()
    target = tmp_path / "camera.avi"
    target.write_bytes(data[: len(data) // 2])
    reader = Reader(file_config(target, format="mjpeg", stall_s=1.0, loop=True))
    readers.append(reader)

    def passes() -> list[list[int]]:  # the indices played, split where each pass starts
        runs: list[list[int]] = []
        for frame in list(reader.frames):
            if frame.index == 0:
                runs.append([])
            runs[-1].append(frame.index)
        return runs

    wait_for(lambda: len(passes()) >= 4 or reader.returned_none.is_set(), what="4 passes")
    assert not reader.returned_none.is_set(), f"ended: {reader.source.status()}"
    whole = passes()[:-1]  # the last may still be playing
    assert 20 <= len(whole[0]) <= 31 and whole == [list(range(len(whole[0])))] * len(whole)
    assert all(shows_its_bar(f) for f in list(reader.frames))
    assert reader.kinds() == ["lost", "back"]
    assert reader.source.status()["state"] == "running"


def test_stop_wakes_a_reader_waiting_for_a_missing_camera(
    tmp_path: Path, readers: list[Reader]
) -> None:
    reader = Reader(file_config(tmp_path / "never.avi"))
    readers.append(reader)
    wait_for(lambda: reader.source.state == "waiting" and reader.events)
    reader.stop()
    assert reader.source.read() is None


def test_a_bad_spec_is_an_error_at_once_but_an_absent_camera_is_not() -> None:
    for spec, problem in (("synthetic:no-such-scene", "unknown scene"),
                          ("udev:ID_SERIAL", "expected udev:KEY=VALUE")):
        with pytest.raises(ValidationError, match=problem):  # check-config's
            CameraConfig(source=spec)
        with pytest.raises(SourceError):  # and the supervisor's, for a config not validated
            SupervisedSource(CameraConfig.model_construct(source=spec), udev=False)
    absent = SupervisedSource(CameraConfig(source="udev:ID_SERIAL=nobody"), udev=False)
    assert absent.state == "waiting"
    absent.stop()


def open_fds() -> int:
    """How many file descriptors this process has open now."""
    return len(os.listdir("/proc/self/fd"))


def test_stopping_udev_watching_closes_its_netlink_socket_at_once() -> None:
    """A daemon reopens its camera source on every reload; each SupervisedSource starts a
    udev monitor (a real NETLINK_KOBJECT_UEVENT socket here, no mock). stop() must give
    the socket back then and there: with the cycle collector off, as it may be for long
    stretches in a daemon that allocates little, a socket left to it piled up."""
    context = v4l2.udev_context()
    if context is None:
        pytest.skip("no libudev")
    try:
        v4l2.monitor(context)
    except OSError as exc:
        pytest.skip(f"no netlink socket here: {exc}")
    cfg = CameraConfig(source="udev:ID_SERIAL=nobody")
    gc.collect()
    gc.disable()
    try:
        baseline = open_fds()
        for _ in range(10):
            source = SupervisedSource(cfg, settings=FAST, udev=context)
            assert "hotplug" not in source.status()  # its monitor thread did start
            source.stop()
            del source
        assert open_fds() == baseline
    finally:
        gc.enable()


def test_a_looping_synthetic_scene_runs_through_the_supervisor() -> None:
    source = SupervisedSource(CameraConfig(source="synthetic:person", realtime=False), udev=False)
    try:
        frames = [source.read() for _ in range(5)]
        assert [f.index for f in frames if f is not None] == [0, 1, 2, 3, 4]
        assert source.state == "running" and source.paced is False
    finally:
        source.stop()


# -- a stalling network camera --------------------------------------------------------------------


class StallingCamera(ThreadingHTTPServer):
    """An MJPEG-over-HTTP camera on the loopback whose first connection goes silent after
    `good` frames and keeps the socket open; later connections stream normally."""

    daemon_threads = True

    def __init__(self, good: int = 10) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.good = good
        self.connections = 0
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/video.mjpg"

    def close(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: StallingCamera

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        server = self.server
        server.connections += 1
        first = server.connections == 1
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(3000):
            if server.release.is_set():
                return
            if first and i == server.good:
                server.release.wait(60)  # silent, socket open: a stall, not an error
                return
            image = np.full((240, 320, 3), 60, np.uint8)
            cv2.circle(image, ((i * 7) % 320, 120), 20, (255, 255, 255), -1)
            jpeg = cv2.imencode(".jpg", image)[1].tobytes()
            head = f"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
            try:
                self.wfile.write(head.encode() + jpeg + b"\r\n")
            except OSError:
                return
            time.sleep(0.02)


def test_a_stalled_stream_is_noticed_and_reopened(readers: list[Reader]) -> None:
    camera = StallingCamera(good=10)
    try:
        cfg = CameraConfig(source=camera.url, stall_s=1.0, format="mjpeg")
        reader = Reader(cfg)
        readers.append(reader)
        wait_for(lambda: reader.kinds() == ["lost", "back"], what="stall, then back")
        assert reader.events[0][1].startswith("stalled: no frame for")
        count = len(reader.frames)
        wait_for(lambda: len(reader.frames) >= count + 20, what="frames after the stall")
        assert camera.connections >= 2
        indices = [f.index for f in reader.frames]
        assert indices == list(range(len(indices)))  # numbering goes on across the reopen
        frame = reader.frames[-1]
        assert frame.luma is not None and frame.size == (320, 240)  # MJPEG packets over HTTP
        status = reader.source.status()
        assert status["state"] == "running" and status["reopens"] >= 1
        assert "reason" not in status
        reader.stop()
    finally:
        camera.close()


# -- the real daemon -------------------------------------------------------------------------------

def test_the_daemon_starts_without_its_camera_and_serves_it_when_it_appears(
    start_daemon: Any, face_video: FaceVideo, tmp_path: Path
) -> None:
    target = tmp_path / "late" / "camera.avi"
    target.parent.mkdir()
    daemon = start_daemon(
        camera={"source": str(target), "loop": True}, gate={"enabled": False}
    )
    with daemon.connect() as client:
        status = client.request("status")
        assert status["source"]["state"] == "waiting"
        assert "no such file" in status["source"]["reason"]
        client.request("subscribe", topics=["results", "events"])
        put_in_place(face_video.path, target)
        client.settimeout(60.0)
        results, kinds = [], []
        for message in client.messages():
            if message.get("class") == "result":
                results.append(message)
            elif message.get("class") == "event":
                kinds.append(message.get("kind"))
            if len(results) >= 3:
                break
        assert "camera_back" in kinds
        assert client.request("status")["source"]["state"] == "running"
    assert daemon.stop() == 0


def test_sigterm_stops_a_daemon_that_is_waiting_for_its_camera(
    start_daemon: Any, tmp_path: Path
) -> None:
    daemon = start_daemon(camera={"source": str(tmp_path / "never.avi")})
    with daemon.connect() as client:
        wait_for(lambda: client.request("status")["source"]["state"] == "waiting")
    assert daemon.stop(timeout=10.0) == 0
    assert "camera" in daemon.log() and "unavailable" in daemon.log()


def test_a_file_replaced_while_open_is_played_next_without_a_loss(tmp_path: Path) -> None:
    """Log rotation: a new recording renamed over the one being played is opened at the
    old one's end, from its first frame. It was reported as a lost camera (a warning,
    camera_lost and camera_back events, a backoff) though nothing was wrong."""
    path = write_mjpeg_stream(tmp_path / "clip.mjpeg", [(320, 240)] * 4)
    events: list[str] = []
    source = SupervisedSource(file_config(path), on_lost=events.append,
                              on_back=lambda: events.append("back"), settings=FAST, udev=False)
    try:
        assert source.read() is not None
        os.replace(write_mjpeg_stream(tmp_path / "new.part", [(160, 120)] * 6), path)
        sizes = []
        while (frame := source.read()) is not None:
            height, width = frame.color().shape[:2]
            sizes.append((width, height))
        assert sizes == [(320, 240)] * 3 + [(160, 120)] * 6
        assert source.state == "ended" and events == []
    finally:
        source.stop()


def test_status_shows_the_size_a_stream_changed_to(tmp_path: Path) -> None:
    """A raw MJPEG stream whose pictures shrink mid-way (a camera whose resolution was
    changed while it streamed), read as MJPEG packets: status shows the size of the frames
    now coming, not the one found at open. (OpenCV's own decode scales such frames to the
    first size, which status then rightly keeps.)"""
    path = write_mjpeg_stream(tmp_path / "cam.mjpeg", [(320, 240)] * 3 + [(160, 120)] * 3)
    source = SupervisedSource(file_config(path, format="mjpeg"), settings=FAST, udev=False)
    try:
        seen = []
        while (frame := source.read()) is not None:
            status = source.status()
            seen.append((frame.full_size, (status["width"], status["height"])))
            assert f"{status['width']}x{status['height']}@" in status["description"]
        assert seen == [((320, 240), (320, 240))] * 3 + [((160, 120), (160, 120))] * 3
    finally:
        source.stop()


def test_a_lost_and_returned_camera_is_logged_with_its_message_ids(
    tmp_path: Path, readers: list[Reader], caplog: pytest.LogCaptureFixture
) -> None:
    """`journalctl MESSAGE_ID=...` is how a sysadmin finds when a camera dropped out and came
    back (logs.MessageId documents both ids); the two lines carried none."""
    from wattgate.daemon.logs import MessageId

    data = write_video(tmp_path / "whole.avi", frames=30).read_bytes()
    target = tmp_path / "camera.avi"
    target.write_bytes(data[: len(data) // 2])
    caplog.set_level(logging.INFO, logger="wattgate")
    reader = Reader(file_config(target, format="mjpeg"))
    readers.append(reader)
    wait_for(lambda: reader.events, what="the cut to be noticed")
    with target.open("ab") as out:
        out.write(data[len(data) // 2:])
    wait_for(lambda: ("back",) in reader.events, what="the camera back")
    ids = {getattr(r, "MESSAGE_ID", None): r.getMessage() for r in caplog.records}
    assert "unavailable" in ids.get(MessageId.CAMERA_LOST, ""), ids
    assert "camera back" in ids.get(MessageId.CAMERA_FOUND, ""), ids

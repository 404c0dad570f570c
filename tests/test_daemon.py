"""The real daemon, end to end: a video file in, results out to a real AF_UNIX client."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.conftest import (
    DaemonProcess,
    FaceVideo,
    tree_snapshot,
    write_config,
    write_face_video,
)
from tests.fixtures.boards import materialize
from wattgate.client import Client, ClientError
from wattgate.config import Config
from wattgate.daemon.app import Daemon, RateMeter

StartDaemon = Callable[..., DaemonProcess]


def iou(a: list[float], b: tuple[int, int, int, int]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def results(client: Client, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    client.settimeout(timeout)
    got: list[dict[str, Any]] = []
    for message in client.messages():
        if message["class"] == "result":
            got.append(message)
        if len(got) >= count:
            return got
    raise AssertionError("unreachable")


def wait_status(client: Client, done: Callable[[dict[str, Any]], bool], timeout: float = 30.0
                ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = client.request("status")
        if done(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def settled(status: dict[str, Any]) -> bool:
    pipe = status["pipeline"]
    return bool(pipe["skipped"] + pipe["inferred"] + pipe["stale_dropped"] == pipe["frames"])


def test_face_in_a_video_file_reaches_a_socket_client(
    start_daemon: StartDaemon, face_video: FaceVideo
) -> None:
    daemon = start_daemon(camera={"source": str(face_video.path)})
    with daemon.connect() as client:
        assert client.hello["class"] == "hello"
        assert client.hello["proto"] == 1
        assert client.hello["model"]["kind"] == "blazeface"
        client.request("subscribe", topics=["results"])
        client.settimeout(60)
        faces = []
        for result in client.messages():
            if result["class"] != "result":
                continue
            assert 0 <= result["frame"] < face_video.frames
            assert result["latency_ms"] >= 0
            assert set(result["motion"]) == {"score", "boxes"}
            if result["frame"] not in face_video.face_frames:
                assert result["detections"] == [], result
                continue
            assert len(result["detections"]) == 1, result
            det = result["detections"][0]
            assert det["label"] == "face"
            assert iou(det["box"], face_video.face_box) > 0.4, (det, face_video.face_box)
            faces.append(result)
            if len(faces) == 3:
                break
        # The face's arrival is motion: its first frame reached the model.
        assert faces[0]["frame"] == face_video.face_frames[0]
        assert faces[0]["reason"] == "motion"
        assert faces[0]["motion"]["boxes"]
    assert daemon.stop() == 0


def test_file_without_loop_ends_and_daemon_keeps_serving(
    start_daemon: StartDaemon, face_video: FaceVideo
) -> None:
    daemon = start_daemon(camera={"source": str(face_video.path), "realtime": False})
    with daemon.connect() as client:
        status = wait_status(client, lambda s: s["source"]["state"] == "ended" and settled(s))
        assert status["source"]["state"] == "ended"
        pipe = status["pipeline"]
        assert pipe["frames"] == face_video.frames
        # Every frame was skipped by the gate, inferred, or replaced while the model was busy.
        assert settled(status), pipe
        assert pipe["skipped"] > 0  # the idle stretch before the face never reached the model
        assert client.request("status")["class"] == "status"
    assert daemon.stop() == 0


def test_gate_off_infers_every_frame_in_order(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    video = write_face_video(tmp_path / "short.avi", fps=15.0, frames=45)
    daemon = start_daemon(camera={"source": str(video.path)}, gate={"enabled": False})
    with daemon.connect() as client:
        client.request("subscribe", topics=["results"])
        got = results(client, 10)
        frames = [m["frame"] for m in got]
        seqs = [m["seq"] for m in got]
        assert frames == sorted(set(frames)), frames  # newest first is never reordered
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no result lost on the way
        assert all(m["reason"] == "disabled" for m in got)
        status = wait_status(client, lambda s: s["source"]["state"] == "ended" and settled(s))
        pipe = status["pipeline"]
        assert pipe["skipped"] == 0
        assert pipe["inferred"] + pipe["stale_dropped"] == pipe["frames"] == video.frames
    assert daemon.stop() == 0


def test_signals_stop_cleanly_and_remove_the_socket(start_daemon: StartDaemon) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        daemon = start_daemon()
        daemon.connect().close()
        mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
        assert mode == 0o660
        assert daemon.stop(sig, timeout=5.0) == 0, daemon.log()
        assert not daemon.socket.exists()


def test_sighup_keeps_old_config_when_new_one_is_bad(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(gate={"heartbeat_s": 5.0})
    with daemon.connect() as client:
        text = daemon.config.read_text()
        daemon.config.write_text(text.replace("heartbeat_s = 5.0", "heartbeat_s = -1"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_log(daemon, "reload rejected")
        assert "gate.heartbeat_s" in daemon.log()
        assert client.request("status")["class"] == "status"
        moved = text.replace("heartbeat_s = 5.0", "heartbeat_s = 3.0").replace(
            "/state", "/state-elsewhere")
        daemon.config.write_text(moved)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_log(daemon, "reloaded")
        assert "daemon.state_dir changed; taking effect after a restart" in daemon.log()
        assert client.request("status")["pipeline"]["frames"] >= 0
    assert daemon.stop() == 0


def test_a_sighup_while_the_daemon_loads_its_libraries_is_a_reload_not_its_end(
    start_daemon: StartDaemon,
) -> None:
    """A SIGHUP's default action ends the process. Sent while `wattgate run` imports
    OpenCV (a reload right after a start), it killed the daemon before it was up."""
    daemon = start_daemon(gate={"heartbeat_s": 5.0})
    maps = Path(f"/proc/{daemon.proc.pid}/maps")
    while daemon.proc.poll() is None and "cv2" not in maps.read_text(errors="replace"):
        time.sleep(0.001)
    daemon.config.write_text(
        daemon.config.read_text().replace("heartbeat_s = 5.0", "heartbeat_s = 3.0"))
    daemon.proc.send_signal(signal.SIGHUP)
    with daemon.connect() as client:
        wait_log(daemon, "reloaded")
        assert "a SIGHUP came during start-up" in daemon.log()
        assert client.request("status")["class"] == "status"
    assert daemon.stop() == 0


def test_result_numbers_go_on_across_a_reload_that_restarts_the_pipeline(
    start_daemon: StartDaemon,
) -> None:
    """`seq` counts results since the daemon started (docs/protocol.md): a reload that
    builds a new pipeline (a camera setting changed) goes on from the last number."""
    daemon = start_daemon(gate={"enabled": False}, camera={"realtime": False, "stall_s": 5.0})
    with daemon.connect() as client:
        client.request("subscribe", topics=["results"])
        client.settimeout(30)
        messages = client.messages()
        before = next(m["seq"] for m in messages if m["class"] == "result" and m["seq"] > 20)
        text = daemon.config.read_text()
        daemon.config.write_text(text.replace("stall_s = 5.0", "stall_s = 4.0"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_log(daemon, "reloaded")
        seqs = [next(m["seq"] for m in messages if m["class"] == "result")]
        while len(seqs) < 200:  # well past the new pipeline's first results
            message = next(messages)
            if message["class"] == "result":
                seqs.append(message["seq"])
        assert seqs[0] > before
        assert all(b > a for a, b in zip(seqs, seqs[1:])), seqs
    assert daemon.stop() == 0


def test_a_reload_of_gate_and_model_settings_keeps_the_source_where_it_was(
    start_daemon: StartDaemon, face_video: FaceVideo
) -> None:
    """Only a camera change builds a new pipeline: a file that has ended stays ended (it
    is not played again from its first frame) and the counters go on."""
    daemon = start_daemon(camera={"source": str(face_video.path), "realtime": False},
                          gate={"heartbeat_s": 5.0}, model={"score_threshold": 0.5})
    with daemon.connect() as client:
        ended = wait_status(client, lambda s: s["source"]["state"] == "ended" and settled(s))
        text = daemon.config.read_text()
        daemon.config.write_text(text.replace("heartbeat_s = 5.0", "heartbeat_s = 4.0")
                                 .replace("score_threshold = 0.5", "score_threshold = 0.6"))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_log(daemon, "reloaded")
        time.sleep(0.5)  # a file played again would be well under way by now
        status = client.request("status")
        assert status["source"]["state"] == "ended"
        assert status["pipeline"] == ended["pipeline"]
    assert "reload rejected" not in daemon.log()
    assert daemon.stop() == 0


# `wattgate run` that writes every thread's stack to its log on SIGUSR1. The handler runs
# in Python, holding the GIL: faulthandler's dump reads the other threads' frames from a
# signal handler while they run, and can crash the daemon it is looking at.
STACK_DUMPING = """
import signal, sys, traceback
from wattgate.cli import main
def dump(signum, frame):
    stacks = (traceback.format_stack(f) for f in sys._current_frames().values())
    sys.stderr.write("".join(line for stack in stacks for line in stack) + "stacks written\\n")
    sys.stderr.flush()
signal.signal(signal.SIGUSR1, dump)
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_reloads_at_the_same_time_leave_one_pipeline(start_daemon: StartDaemon) -> None:
    """Three clients reload at once, each time after a camera change: the reloads take
    turns, so the pipelines replaced are all stopped (none is left capturing)."""
    daemon = start_daemon(camera={"source": "synthetic:empty", "width": 320, "height": 240},
                          argv=lambda config: [sys.executable, "-c", STACK_DUMPING, str(config)])
    text = daemon.config.read_text()
    clients = [daemon.connect() for _ in range(3)]
    try:
        for width in (336, 352, 368):
            daemon.config.write_text(text.replace("width = 320", f"width = {width}"))
            for n, client in enumerate(clients):
                client.send({"cmd": "reload", "id": n})
            for n, client in enumerate(clients):
                assert next(m for m in client.messages() if m.get("id") == n)["reloaded"]
    finally:
        for client in clients:
            client.close()
    daemon.proc.send_signal(signal.SIGUSR1)
    wait_log(daemon, "stacks written")
    log = daemon.log()
    assert (log.count("in _capture_loop"), log.count("in _infer_loop")) == (1, 1), log
    assert daemon.stop() == 0


def wait_log(daemon: DaemonProcess, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in daemon.log():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{daemon.log()}"
        time.sleep(0.05)


# `wattgate run` whose gate raises on the 30th frame, as OpenCV does on a buffer a driver
# got wrong: no source here delivers such a frame, so the gate is made to fail instead.
ONE_BAD_FRAME = """
import sys, threading, cv2
import wattgate.policies.gating as gating
from wattgate.cli import main
real, calls = gating.MotionGate.update_bgr, []
def update_bgr(self, frame, now):
    if threading.current_thread().name == "wattgate-capture":
        calls.append(now)
    if len(calls) == 30:
        raise cv2.error("one bad frame")
    return real(self, frame, now)
gating.MotionGate.update_bgr = update_bgr
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_a_frame_the_gate_fails_on_is_counted_and_capture_goes_on(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(camera={"source": "synthetic:office", "width": 320, "height": 240},
                          argv=lambda config: [sys.executable, "-c", ONE_BAD_FRAME, str(config)])
    with daemon.connect() as client:
        status = wait_status(client, lambda s: s["pipeline"]["frames"] >= 45)
        assert status["pipeline"]["failed"] == 1
        assert not status["pipeline"]["source_ended"]
        assert client.request("snap", timeout_ms=5000)["result"]["reason"] == "snap"
    assert daemon.log().count("not gated; going on with the next") == 1
    assert daemon.stop() == 0


def test_missing_model_or_unusable_state_dir_exits_69_with_one_clear_line(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """(A camera or file that is not there is waited for; an unknown scene is a config
    error, exit 78: tests/test_config.py.)"""
    not_a_dir = tmp_path / "state-is-a-file"
    not_a_dir.write_text("")
    cases = [
        ({"model": {"path": str(tmp_path / "nope.tflite")}}, "nope.tflite"),
        ({"daemon": {"state_dir": str(not_a_dir)}}, f"daemon.state_dir {not_a_dir}"),
    ]
    for sections, needle in cases:
        daemon = start_daemon(**sections)
        assert daemon.wait() == 69
        errors = [line for line in daemon.log().splitlines() if line.startswith("wattgate:")]
        assert len(errors) == 1 and needle in errors[0], daemon.log()
        assert not daemon.socket.exists()


def test_what_is_not_a_socket_at_daemon_socket_is_left_alone(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """Anything at daemon.socket that did not answer a connection was deleted: a regular
    file (daemon.socket mistyped as the config's own path) or a directory went with it.
    It is refused with 69, as a restart meets it again (RestartPreventExitStatus=69)."""
    kept = tmp_path / "kept.toml"
    kept.write_text("[daemon]\n")
    folder = tmp_path / "folder"
    (folder / "inside").mkdir(parents=True)
    for path, kind in ((kept, "regular file"), (folder, "directory")):
        daemon = start_daemon(daemon={"socket": str(path)})
        assert daemon.wait() == 69
        assert f"wattgate: daemon.socket {path}: there is a {kind} there, not a socket" \
            in daemon.log()
    assert kept.read_text() == "[daemon]\n" and (folder / "inside").is_dir()


def test_second_daemon_does_not_steal_a_live_socket(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    first = start_daemon()
    first.connect().close()
    # the same socket, its own state_dir (one daemon per state_dir is refused earlier, 69)
    config = write_config(tmp_path / "second.toml", first.socket.parent,
                          daemon={"state_dir": str(tmp_path / "second-state")},
                          power={"journal_dir": str(tmp_path / "second-journal")})
    second = start_daemon(config=config)
    assert second.wait() == 69  # as a second daemon on one state_dir
    assert f"wattgate: daemon.socket {first.socket}: another daemon is listening" \
        in second.log()
    sharing = start_daemon(config=first.config)  # the same state_dir as well
    assert sharing.wait() == 69
    assert "one daemon per daemon.state_dir" in sharing.log(), sharing.log()
    with first.connect() as client:
        assert client.request("status")["class"] == "status"
    assert first.stop() == 0


def test_a_stopping_daemon_leaves_a_socket_file_bound_since_by_another(
    start_daemon: StartDaemon,
) -> None:
    """A restart where the new daemon binds the path before the old one has finished
    stopping: the old one removes only its own socket file."""
    first = start_daemon(camera={"source": "synthetic:empty"})
    first.connect().close()
    first.socket.unlink()  # as a new daemon finds it: its owner stopped listening
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as successor:
        successor.bind(str(first.socket))
        successor.listen(1)
        assert first.stop() == 0
        assert first.socket.exists()


def test_a_snap_waiting_when_the_daemon_stops_is_answered_unavailable(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """The camera (a file not there yet) gives no frame, so the snap waits; a stop answers
    it, and the connections left open end without an error in the log."""
    daemon = start_daemon(camera={"source": str(tmp_path / "not-yet.avi")})
    waiting = daemon.connect()
    idle = daemon.connect()  # connected, asking nothing
    waiting.send({"cmd": "snap", "timeout_ms": 60000, "id": 1})
    time.sleep(0.5)  # the snap is waiting by now
    daemon.proc.send_signal(signal.SIGTERM)
    answer = next(m for m in waiting.messages() if m.get("id") == 1)
    assert answer == {"class": "error", "code": "unavailable", "id": 1,
                      "message": "the daemon is stopping"}
    assert daemon.wait() == 0
    waiting.close()
    idle.close()
    assert "ERROR" not in daemon.log() and "Traceback" not in daemon.log()


def test_client_reports_a_missing_socket(tmp_path: Path) -> None:
    try:
        Client(str(tmp_path / "none.sock"))
    except ClientError as exc:
        assert exc.code == "unavailable"
        assert "none.sock" in exc.message
    else:
        raise AssertionError("connected to a socket that does not exist")


def test_frame_rate_starts_again_when_a_new_pipeline_counts_from_zero() -> None:
    meter = RateMeter()
    for second in range(4):
        meter.sample(float(second), 15 * second)  # 15 fps
    assert meter.rate() == 15.0
    meter.sample(4.0, 3)  # a reload: the new pipeline's counters start at 0
    assert meter.rate() == 0.0  # one sample: no rate yet, and never a negative one
    meter.sample(5.0, 18)
    assert meter.rate() == 15.0


def test_a_failing_part_of_the_tick_is_logged_once_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = Config.model_validate({"daemon": {"state_dir": str(tmp_path)}})
    daemon = Daemon(cfg)
    calls: list[float] = []

    def flaky(now: float) -> None:
        calls.append(now)
        if now < 3:
            raise OSError("database is locked")

    with caplog.at_level(logging.INFO, logger="wattgate.daemon"):
        for second in range(5):
            with daemon._guarded("event log"):
                flaky(float(second))
    assert calls == [0.0, 1.0, 2.0, 3.0, 4.0]  # tried every second, failing or not
    failed = [r for r in caplog.records if "event log failed" in r.getMessage()]
    back = [r for r in caplog.records if "event log works again" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert len(back) == 1
    daemon.eventlog.close(0.0)


# `wattgate run` whose model load waits for a line on a FIFO before loading: an NPU
# delegate compiling a graph for minutes on first boot, which this machine has no NPU for.
SLOW_LOAD = """
import sys
from wattgate.cli import main
from wattgate.drivers.inference import Model
real_load = Model.load.__func__
def load(cls, *args, **kwargs):
    print("model load started", file=sys.stderr, flush=True)
    with open(sys.argv[2]) as fifo:
        fifo.readline()
    return real_load(cls, *args, **kwargs)
Model.load = classmethod(load)
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_sigterm_during_a_long_model_load_stops_at_once_and_restores_power(
    start_daemon: StartDaemon, tmp_path: Path,
) -> None:
    """systemd stopping a daemon whose model takes minutes to load: it must not wait for
    the load (then the stop timeout's SIGKILL would leave the board's power state as the
    idle profile set it), but exit 0 with every sysfs value as it found it."""
    root = materialize("rk3588", tmp_path / "board")
    before = tree_snapshot(root)
    fifo = tmp_path / "compile"
    os.mkfifo(fifo)
    daemon = start_daemon(
        camera={"source": "synthetic:empty", "width": 320, "height": 240},
        power={"sysfs_root": str(root), "journal_dir": str(tmp_path / "journal")},
        argv=lambda config: [sys.executable, "-c", SLOW_LOAD, str(config), str(fifo)],
    )
    wait_log(daemon, "model load started", timeout=60.0)
    assert tree_snapshot(root) != before  # the idle profile is in place meanwhile
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        assert daemon.wait(timeout=30.0) == 0, daemon.log()
    finally:  # a load still waiting (the daemon did not stop) reads the end of the FIFO
        with contextlib.suppress(OSError):  # ENXIO: no reader, the daemon is gone
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert tree_snapshot(root) == before
    assert "Traceback" not in daemon.log(), daemon.log()

"""Protocol v1 over real sockets: events that survive restarts, snap, infer, filters, access."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import pytest

from tests.conftest import ASTRONAUT_FACE, DaemonProcess, skimage_image, write_config
from tests.test_client_errors import assert_nothing_waits
from tests.test_daemon import settled, wait_status
from wattgate.client import AsyncClient, Client, ClientError
from wattgate.config import MAX_IMAGE_BYTES

StartDaemon = Callable[..., DaemonProcess]

# A scene where things move now and then, played fast so events come quickly.
BUSY = {"camera": {"source": "synthetic:person", "realtime": False}}


def jpeg_b64(name: str, quality: int = 80) -> str:
    ok, buf = cv2.imencode(".jpg", skimage_image(name), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return base64.b64encode(buf.tobytes()).decode()


def wait_events(client: Client, count: int, since: int = 0, timeout: float = 60.0
                ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        events: list[dict[str, Any]] = client.request("events", since=since, limit=1000)["events"]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def test_hello_describes_the_daemon(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.connect() as client:
        hello = client.hello
        assert hello["proto"] == 1
        assert hello["version"]
        assert hello["model"]["input"] == [128, 128, 3]
        caps = hello["capabilities"]
        assert set(caps["topics"]) == {"results", "events", "power"}
        assert {"status", "subscribe", "events", "snap", "infer", "profile", "reload"} <= set(
            caps["commands"]
        )
    assert daemon.stop() == 0


def test_motion_on_every_other_frame_is_one_motion_start_not_one_a_frame(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """A blob flickering at the threshold moves on every other frame: each frame sent a
    motion_start or motion_end, 15 events a second written to the event log. One episode
    ends gate.cooldown_s after its last motion."""
    fps, still, flicker = 15.0, 45, 60  # 3 s to calibrate, then 4 s of flicker
    path = tmp_path / "flicker.avi"
    rng = np.random.default_rng(3)
    base = cv2.resize(rng.uniform(70, 170, (12, 16, 3)).astype(np.uint8), (640, 480),
                      interpolation=cv2.INTER_NEAREST)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (640, 480))
    for i in range(still + flicker):
        frame = base.copy()
        if i >= still and i % 2 == 0:
            x = 100 + 4 * (i - still)
            frame[300:340, x:x + 40] = 20
        writer.write(frame)
    writer.release()
    daemon = start_daemon(camera={"source": str(path), "realtime": False},
                          gate={"cooldown_s": 1.0})
    with daemon.connect() as client:
        wait_status(client, lambda s: s["source"]["state"] == "ended" and settled(s))
        events = client.request("events", since=0, limit=1000)["events"]
    kinds = [e["kind"] for e in events if e["kind"] in ("motion_start", "motion_end")]
    assert kinds.count("motion_start") == 1, kinds
    assert kinds.count("motion_end") <= 1, kinds  # the file ends within the cooldown
    assert daemon.stop() == 0


def test_a_face_in_every_other_result_is_one_detection_event(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    """A score at the threshold drops the label from every other result: each return was
    a detection event, half the frame rate into the event log."""
    path = tmp_path / "blink.avi"
    room = np.full((480, 640, 3), 90, np.uint8)
    face = cv2.resize(skimage_image("astronaut.png")[0:200, 110:310], (200, 200))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (640, 480))
    for i in range(60):
        frame = room.copy()
        if i % 2 == 0:
            frame[80:280, 380:580] = face
        writer.write(frame)
    writer.release()
    daemon = start_daemon(camera={"source": str(path), "realtime": False},
                          gate={"enabled": False})
    with daemon.connect() as client:
        status = wait_status(client, lambda s: s["source"]["state"] == "ended" and settled(s))
        assert status["pipeline"]["inferred"] == 60
        events = client.request("events", since=0, limit=1000)["events"]
    detections = [e for e in events if e["kind"] == "detection"]
    assert [e["labels"] for e in detections] == [["face"]], detections
    assert daemon.stop() == 0


def test_events_have_increasing_seq_and_survive_a_restart(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    run = tmp_path / "shared"
    run.mkdir()
    config = write_config(run / "config.toml", run, **BUSY)
    first = start_daemon(config=config)
    with first.connect() as client:
        client.request("subscribe", topics=["events"])
        live = next(m for m in client.messages() if m["class"] == "event")
        seen = wait_events(client, 4)
    assert first.stop() == 0
    assert len(seen) >= 4
    seqs = [e["seq"] for e in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {e["kind"] for e in seen} >= {"motion_start"}
    assert live in seen  # what a subscriber was sent is what the log kept

    second = start_daemon(config=config)
    with second.connect() as client:
        kept = client.request("events", since=0, limit=1000)["events"]
        # Every event the first daemon emitted is still there, unchanged, in order.
        assert kept[: len(seen)] == seen
        newer = wait_events(client, 1, since=seen[-1]["seq"])
        assert newer and newer[0]["seq"] > seen[-1]["seq"]
    assert second.stop() == 0


def test_events_since_pages_within_the_line_limit(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(**BUSY)
    with daemon.connect() as client:
        events = wait_events(client, 6)
        reply = client.request("events", since=0, limit=2)
        assert [e["seq"] for e in reply["events"]] == [e["seq"] for e in events[:2]]
        assert reply["more"] is True
        after = client.request("events", since=events[1]["seq"], limit=1)["events"]
        assert after == [events[2]]
        with pytest.raises(ClientError) as info:
            client.request("events", since=-1)
        assert info.value.code == "bad_request"
    assert daemon.stop() == 0


def test_snap_infers_the_next_frame_on_an_idle_scene(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(
        camera={"source": "synthetic:empty"}, gate={"heartbeat_s": 3600.0}
    )
    with daemon.connect() as client:
        # Calibrated (CALIBRATION_S) and idle: its end is inferred once, as a heartbeat.
        status = wait_status(client, lambda st: st["pipeline"]["inferred"] >= 1)
        before = status["pipeline"]["inferred"]
        assert before == 1, status
        requested = time.time()
        result = client.request("snap", timeout_ms=5000)["result"]
        assert result["class"] == "result"
        assert result["reason"] == "snap"
        assert result["ts"] >= requested - 0.2  # a frame captured after the request
        assert client.request("status")["pipeline"]["inferred"] == before + 1
    assert daemon.stop() == 0


def test_every_snap_is_answered_even_across_a_reload(start_daemon: StartDaemon) -> None:
    """A snap that comes while a frame is being read, or while a reload replaces the
    pipeline, is still answered with a frame captured after it."""
    # 4 fps: a frame is rarely captured between a snap and the reload that follows it
    daemon = start_daemon(
        camera={"source": "synthetic:empty", "fps": 4.0, "stall_s": 5.0},
        gate={"heartbeat_s": 3600.0},
    )
    with daemon.connect() as client, daemon.connect() as admin:
        time.sleep(2.5)  # calibrated and idle: only snaps are inferred
        for _ in range(8):  # back to back: one may land while a frame is in the gate
            assert client.request("snap", timeout_ms=3000)["result"]["reason"] == "snap"
        text = daemon.config.read_text()
        for stall in (4.0, 5.0, 4.0):  # a camera setting: the pipeline is built again
            daemon.config.write_text(text.replace("stall_s = 5.0", f"stall_s = {stall}"))
            admin.send({"cmd": "reload", "id": "r"})  # a new pipeline, while the snap waits
            result = client.request("snap", timeout_ms=1500)["result"]  # before a heartbeat
            assert result["class"] == "result"
            assert next(m for m in admin.messages() if m.get("id") == "r")["reloaded"]
    assert daemon.stop() == 0


def test_snap_times_out_when_no_frame_comes(
    start_daemon: StartDaemon, tmp_path: Path
) -> None:
    from tests.conftest import write_face_video

    video = write_face_video(tmp_path / "v.avi", frames=10)
    daemon = start_daemon(camera={"source": str(video.path), "realtime": False})
    with daemon.connect() as client:
        while client.request("status")["source"]["state"] != "ended":
            time.sleep(0.05)
        with pytest.raises(ClientError) as info:
            client.request("snap", timeout_ms=300)
        assert info.value.code == "unavailable"
        # A source that has ended gives no frame however long a snap waits: the answer
        # says so at once rather than after the whole timeout (up to a minute), naming it.
        client.settimeout(70.0)
        with pytest.raises(ClientError) as info:
            client.request("snap", timeout_ms=60000)
        assert info.value.code == "unavailable"
        assert "the source has ended (end of file)" in str(info.value), info.value
    assert daemon.stop() == 0


def test_infer_runs_the_model_on_a_client_image(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(camera={"source": "synthetic:empty"}, daemon={"max_image_bytes": 30000})
    with daemon.connect() as client:
        reply = client.request("infer", image=jpeg_b64("astronaut.png", quality=50))
        assert (reply["width"], reply["height"]) == (512, 512)
        [face] = reply["detections"]
        x0, y0, x1, y1 = face["box"]
        fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
        assert fx0 <= (x0 + x1) / 2 <= fx1 and fy0 <= (y0 + y1) / 2 <= fy1
        coffee = jpeg_b64("coffee.png", quality=50)
        assert client.request("infer", image=coffee)["detections"] == []
        bad = {
            "not base64!": "bad_request",
            base64.b64encode(b"hello").decode(): "bad_request",
            "": "bad_request",
            jpeg_b64("astronaut.png", quality=70): "too_large",  # about 37 KB, over 30000
            # 335 bytes claiming 12000x12000 pixels: refused before decoding 430 MB
            base64.b64encode(claims_size(12000, 12000)).decode(): "bad_request",
            base64.b64encode(
                cv2.imencode(".bmp", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
            ).decode(): "bad_request",
        }
        for image, code in bad.items():
            with pytest.raises(ClientError) as info:
                client.request("infer", image=image)
            assert info.value.code == code, info.value
        with pytest.raises(ClientError) as info:
            client.request("infer")
        assert info.value.code == "bad_request"
    assert daemon.stop() == 0


def claims_size(width: int, height: int) -> bytes:
    """A JPEG whose frame header claims width x height, cut off after its scan header."""
    jpeg = bytes(cv2.imencode(".jpg", np.zeros((16, 16), np.uint8))[1])
    frame = jpeg.index(b"\xff\xc0")
    jpeg = (jpeg[:frame + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big")
            + jpeg[frame + 9:])
    scan = jpeg.index(b"\xff\xda")
    return jpeg[:scan + 2 + int.from_bytes(jpeg[scan + 2:scan + 4], "big") + 8]


def test_an_image_at_the_default_limit_fits_a_line_and_one_over_it_is_refused(
    start_daemon: StartDaemon,
) -> None:
    daemon = start_daemon(camera={"source": "synthetic:empty"})
    jpeg = base64.b64decode(jpeg_b64("astronaut.png", quality=70))  # about 37 KB
    padded = jpeg + bytes(MAX_IMAGE_BYTES - len(jpeg))  # a decoder stops at the JPEG's end
    with daemon.connect() as client:
        image = base64.b64encode(padded).decode()
        reply = client.request("infer", image=image)
        assert (reply["width"], reply["height"]) == (512, 512)
        with pytest.raises(ClientError) as info:
            client.request("infer", image=base64.b64encode(padded + b"\0").decode())
        assert info.value.code == "too_large"
        assert client.request("status")["class"] == "status"  # the connection stays open
    assert daemon.stop() == 0


def test_subscribe_filters_by_score_and_label(start_daemon: StartDaemon, face_video: Any) -> None:
    daemon = start_daemon(
        camera={"source": str(face_video.path), "loop": True}, gate={"enabled": False}
    )
    with daemon.connect() as faces, daemon.connect() as cats:
        faces.request("subscribe", topics=["results"], labels=["face"], min_score=0.5)
        cats.request("subscribe", topics=["results"], labels=["cat"])
        faces.settimeout(30)
        got = [m for _, m in zip(range(10), faces.messages())]
        assert all(m["detections"] and m["detections"][0]["label"] == "face" for m in got)
        cats.settimeout(1.0)
        with pytest.raises(ClientError) as info:
            next(cats.messages())
        assert info.value.code == "timeout"  # no result had a cat in it
    assert daemon.stop() == 0


def test_profile_without_power_control_is_unavailable(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    with daemon.connect() as client:
        with pytest.raises(ClientError) as info:
            client.request("profile")
        assert info.value.code in ("unavailable",)
    assert daemon.stop() == 0


def run_as_nobody(socket_path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request from a process running as uid/gid 65534 and return the answer.

    The tests run as root; dropping to `nobody` in a child is the real way to get a
    peer whose SO_PEERCRED credentials are not an administrator's.
    """
    code = (
        "import json, os, socket, sys\n"
        "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb')\n"
        "f.readline()\n"
        "s.sendall(sys.argv[2].encode() + b'\\n')\n"
        "print(f.readline().decode(), end='')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(socket_path), json.dumps(request)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a client as another uid")
def test_control_needs_root_or_the_admin_group(start_daemon: StartDaemon) -> None:
    # pytest's tmp dirs are private to root: the socket goes where nobody can reach it.
    public = Path(tempfile.mkdtemp(prefix="wattgate-test-"))
    public.chmod(0o755)
    daemon = start_daemon(daemon={
        "socket": str(public / "wattgate.sock"), "socket_mode": 0o666,
        "admin_group": "wattgate-admins",
    })
    daemon.connect().close()
    refused = run_as_nobody(daemon.socket, {"cmd": "reload", "id": 1})
    assert (refused["class"], refused["code"], refused["id"]) == ("error", "forbidden", 1)
    assert "wattgate-admins" in refused["message"]
    allowed = run_as_nobody(daemon.socket, {"cmd": "status", "id": 2})
    assert allowed["class"] == "status"
    with daemon.connect() as root:
        reply = root.request("reload")
        assert reply["reloaded"] is True and reply["message"] == "reloaded"
    log = daemon.log()
    assert "refused reload" in log and "uid=65534" in log
    assert "reload requested by pid=" in log and "uid=0" in log
    assert daemon.stop() == 0
    shutil.rmtree(public)


def test_clients_beyond_max_clients_are_told_busy(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(daemon={"max_clients": 2})
    first, second = daemon.connect(), daemon.connect()
    with pytest.raises(ClientError) as info:
        Client(str(daemon.socket))
    assert info.value.code == "busy"
    first.close()
    time.sleep(0.2)
    third = daemon.connect()
    assert third.request("status")["clients"] == 2
    second.close()
    third.close()
    assert daemon.stop() == 0


def test_async_client(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(gate={"enabled": False})
    daemon.connect().close()

    async def talk() -> tuple[dict[str, Any], dict[str, Any]]:
        async with await AsyncClient.connect(str(daemon.socket)) as client:
            status = await client.request("status")
            await client.request("subscribe", topics=["results"])
            result = await asyncio.wait_for(client.next_message(), 30)
            return status, result

    status, result = asyncio.run(talk())
    assert status["class"] == "status"
    assert result["class"] == "result"
    assert daemon.stop() == 0


def test_cli_events_snap_and_profile(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(**BUSY)
    with daemon.connect() as client:
        wait_events(client, 2)
    sock = str(daemon.socket)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wattgate.cli", *args, "--socket", sock],
            capture_output=True, text=True, timeout=60,
        )

    events = cli("events", "--since", "0", "--json")
    assert events.returncode == 0, events.stderr
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert len(lines) >= 2 and all(e["class"] == "event" for e in lines)
    human = cli("events", "--since", str(lines[0]["seq"]))
    assert human.returncode == 0 and "motion_" in human.stdout
    watched = cli("watch", "--topics", "events", "--count", "1")  # a line, not raw JSON
    assert watched.returncode == 0, watched.stderr
    assert re.fullmatch(r"#\d+ +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \w+.*\n", watched.stdout), \
        watched.stdout
    snap = cli("snap", "--json")
    assert snap.returncode == 0, snap.stderr
    # Any frame captured after the request answers it; on a busy scene that may be motion.
    assert json.loads(snap.stdout)["class"] == "result"
    profile = cli("profile")
    assert profile.returncode == 69  # EX_UNAVAILABLE, like a daemon that is not there
    assert "unavailable" in profile.stderr
    assert daemon.stop() == 0


def test_half_open_and_silent_connections_do_not_block_others(start_daemon: StartDaemon) -> None:
    daemon = start_daemon()
    daemon.connect().close()
    silent = []
    for _ in range(20):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(daemon.socket))
        sock.sendall(b'{"cmd": "stat')  # half a request, never finished
        silent.append(sock)
    with daemon.connect() as client:
        assert client.request("status")["clients"] == 21
    for sock in silent:
        sock.shutdown(socket.SHUT_WR)  # half-closed: the daemon sees EOF mid-line
    with daemon.connect() as client:
        deadline = time.monotonic() + 10
        while client.request("status")["clients"] > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.request("status")["clients"] == 1
    for sock in silent:
        sock.close()
    assert daemon.stop() == 0


def test_client_reads_on_after_a_timeout(start_daemon: StartDaemon) -> None:
    daemon = start_daemon(camera={"source": "synthetic:empty"}, gate={"heartbeat_s": 3600.0})
    with daemon.connect() as client:
        client.request("subscribe", topics=["results"])
        assert_nothing_waits(client, 0.05)  # an idle scene: nothing to say
        client.settimeout(10)
        assert client.request("snap")["result"]["class"] == "result"
        assert client.request("status")["class"] == "status"
    assert daemon.stop() == 0

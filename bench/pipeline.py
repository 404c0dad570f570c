"""`pipeline`: the real daemon with gating off against a bare `interpreter.invoke()` loop.

Frames: 3 s of the `person` scene at 640x480 written as uncompressed I420 AVI files, which
the daemon plays in a loop. A file source stamps a frame after reading it, as a camera
driver does, and raw I420 costs about what a camera's buffer does (a copy and a colour
conversion), so the source does not compete with the model for the CPU the way an MJPEG
decode would. Model: the bundled BlazeFace, one interpreter thread everywhere.

Throughput: the daemon plays the file with realtime = false, which is "the pipeline's full
rate": a file read faster than real time waits for the model instead of dropping frames, so
the model is the bottleneck and the capture thread prepares frame n+1 while the model runs on
frame n. Each repeat pauses the daemons (SIGSTOP) and runs, in this process, on the same
decoded frames:
  bare       set_tensor + invoke + get_tensor of each output, on input tensors prepared
             before the loop: the floor, `bare_fps`;
  bare+prep  the same plus a minimal letterbox/normalise of each frame with OpenCV;
  model      wattgate's Model.infer (letterbox, input conversion, invoke, decode), all in one
             thread;
then resumes one daemon at a time and counts the results a socket client receives in a
window (`daemon_fps`).

`cpu_bound_ratio` is bare CPU ms a frame / the daemon's inference thread CPU ms a result:
the fps ratio the two would have on an otherwise idle machine, where the inference thread
has a core to itself. CPU time hardly depends on what else runs, so this one is stable on a
busy machine where the fps ratio is not.

The same throughput comparison is repeated with a larger model (BlazeFace's 256x256
back-camera model, about 7x the invoke time) as `larger_model`: the daemon's costs per frame
are roughly fixed, so their share shrinks as the model grows.

`camera_input` (information, no target): the CPU time a frame of making the model's input
from a camera's NV12, YUYV or MJPEG buffer at 640x480, 1280x720 and 1920x1080, by decoding
the whole frame in colour first against the daemon's way with a camera's frames (YUV
converted at the model's size, JPEG decoded at a DCT scale that fills it; the file source
here decodes to BGR).

Latency: a third daemon plays the file at 30 fps, so no frame waits for a busy model. Added
latency = (time the client read the result - capture time `ts`) - the frame's own invoke
time `infer_ms`: everything the daemon adds around the model, up to a client's read. The
same figure at saturation is `*_saturated` (it includes the wait in the newest-frame slot
for the invoke in progress, which is by design). The <= 2 ms target is on the 30 fps
figure, and its name says so; the saturated p99 is shown beside it, with no target.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np

from bench.common import (
    DaemonRun,
    Json,
    daemon,
    machine,
    percentile,
    ratio,
    read_video,
    summary,
    target,
    thread_cpu,
    thread_usage,
)
from wattgate.client import Client, ClientError
from wattgate.daemon.pipeline import prepare_frame
from wattgate.drivers import runtime
from wattgate.drivers.camera import (
    Frame,
    frame_from_mjpeg,
    frame_from_nv12,
    frame_from_yuyv,
    raw_from_bgr,
    reduction_for,
)
from wattgate.drivers.inference import Model, default_model_path
from wattgate.drivers.synthetic import make_scene

WIDTH, HEIGHT, FPS = 640, 480, 30.0
SCENE, FIRST_S, SECONDS = "person", 3.0, 3.0
LARGER_MODEL = "face_detection_back.tflite"
SERIES = ("bare", "bare_prep", "model", "daemon")
ROLES = ("infer", "capture", "loop")


class Bare:
    """The model with nothing around it: the baselines the daemon is measured against."""

    def __init__(self, frames: list[Any], path: Path) -> None:
        self.interp = runtime.Interpreter(model_path=str(path), num_threads=1)
        self.interp.allocate_tensors()
        detail = self.interp.get_input_details()[0]
        self.input_index = detail["index"]
        _, self.h, self.w, _ = (int(v) for v in detail["shape"])
        self.outputs = [d["index"] for d in self.interp.get_output_details()]
        self.frames = frames
        self.canvas = np.zeros((self.h, self.w, 3), np.uint8)
        self.tensors = [self.prepare(f).copy() for f in frames]

    def prepare(self, frame: Any) -> Any:
        """Letterbox into the input size, BGR to RGB, [-1, 1] float: a minimal preprocess."""
        fh, fw = frame.shape[:2]
        scale = min(self.w / fw, self.h / fh)
        nw, nh = round(fw * scale), round(fh * scale)
        x, y = (self.w - nw) // 2, (self.h - nh) // 2
        self.canvas[y : y + nh, x : x + nw] = cv2.resize(frame, (nw, nh))
        rgb = cv2.cvtColor(self.canvas, cv2.COLOR_BGR2RGB)
        return (rgb.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0))[None]

    def _run(self, seconds: float, prep: bool) -> tuple[float, float]:
        interp, outputs, n = self.interp, self.outputs, len(self.frames)
        count = 0
        cpu = time.thread_time()
        start = time.perf_counter()
        end = start + seconds
        while True:
            i = count % n
            tensor = self.prepare(self.frames[i]) if prep else self.tensors[i]
            interp.set_tensor(self.input_index, tensor)
            interp.invoke()
            for index in outputs:
                interp.get_tensor(index)
            count += 1
            now = time.perf_counter()
            if now >= end:
                return count / (now - start), (time.thread_time() - cpu) * 1000.0 / count

    def fps(self, seconds: float) -> tuple[float, float]:
        """(frames a second, CPU ms a frame) of set_tensor + invoke + get_tensor."""
        return self._run(seconds, prep=False)

    def fps_prep(self, seconds: float) -> tuple[float, float]:
        return self._run(seconds, prep=True)


def model_fps(model: Model, frames: list[Any], seconds: float) -> tuple[float, float]:
    """(frames a second, CPU ms a frame) of wattgate's Model.infer."""
    count = 0
    cpu = time.thread_time()
    start = time.perf_counter()
    end = start + seconds
    while True:
        model.infer(frames[count % len(frames)])
        count += 1
        now = time.perf_counter()
        if now >= end:
            return count / (now - start), (time.thread_time() - cpu) * 1000.0 / count


def model_stages(model: Model, frames: list[Any], count: int) -> Json:
    """CPU ms a frame of each stage of Model.infer, timed separately in a tight loop:
    `prepare` (letterbox, input conversion: the daemon does it on the capture thread) and
    `run` (set_tensor, invoke, decode: the inference thread's share)."""
    preparer = model.preparer()
    stages = {"prepare": 0.0, "run": 0.0}
    for i in range(count):
        t0 = time.thread_time()
        prepared = preparer.prepare(frames[i % len(frames)], keep=False)
        t1 = time.thread_time()
        model.run(prepared)
        t2 = time.thread_time()
        stages["prepare"] += t1 - t0
        stages["run"] += t2 - t1
    return {name: round(total * 1000.0 / count, 4) for name, total in stages.items()}


CAMERA_SIZES = ((640, 480), (1280, 720), (1920, 1080))


def camera_input(model: Model, picture: Any, repeats: int, count: int) -> Json:
    """CPU ms a frame to make the model's input from a camera's NV12, YUYV or MJPEG buffer:
    the whole frame decoded in colour and then letterboxed (`colour_first_ms`, what a
    source that decodes to BGR costs) against the daemon's way with a camera's frames
    (`model_size_ms`: YUV converted at the model's size, JPEG decoded at the smallest
    DCT scale that fills it). The two alternate within each repeat; the median of the
    repeats."""
    rows = [_input_row(model, cv2.resize(picture, size), layout, repeats, count)
            for size in CAMERA_SIZES for layout in ("NV12", "YUYV", "MJPG")]
    return {"statistic": f"CPU ms a frame, median of {repeats} repeats of {count}",
            "rows": rows}


def _input_row(model: Model, bgr: Any, layout: str, repeats: int, count: int) -> Json:
    frame = camera_frame(bgr, layout)
    preparer = model.preparer(frame.full_size)
    ways: dict[str, Callable[[], Any]] = {
        "colour_first": lambda: preparer.prepare(_whole_colour(frame), keep=False),
        "model_size": lambda: prepare_frame(preparer, frame, keep=False)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(repeats):
        for name, way in ways.items():
            way()
            start = time.thread_time()
            for _ in range(count):
                way()
            times[name].append((time.thread_time() - start) * 1000.0 / count)
    first = summary(times["colour_first"])["median"]
    at_model = summary(times["model_size"])["median"]
    width, height = frame.full_size
    return {"resolution": f"{width}x{height}", "layout": layout, "colour_first_ms": first,
            "model_size_ms": at_model, "model_size_vs_colour_first": ratio(at_model, first)}


def camera_frame(bgr: Any, layout: str) -> Frame:
    """The frame a camera delivering `layout` gives the daemon for this picture."""
    raw = raw_from_bgr(bgr, layout)
    if layout == "NV12":
        return frame_from_nv12(raw, 0, 0.0, 0.0)
    if layout == "YUYV":
        return frame_from_yuyv(raw, 0, 0.0, 0.0)
    frame = frame_from_mjpeg(raw, 0, 0.0, 0.0, (0, 0), reduction_for(bgr.shape[0]))
    assert frame is not None
    return frame


def _whole_colour(frame: Frame) -> Any:
    """The frame decoded in colour anew (Frame.color keeps its first decode)."""
    if frame.yuv is not None:
        return frame.yuv.bgr()
    assert frame.jpeg is not None
    return cv2.imdecode(frame.jpeg, cv2.IMREAD_COLOR)


def collect(client: Client, seconds: float) -> list[tuple[float, Json]]:
    """(wall-clock read time, result) for every result read within `seconds`."""
    got: list[tuple[float, Json]] = []
    end = time.monotonic() + seconds
    client.settimeout(0.5)
    messages = client.messages()
    while time.monotonic() < end:
        try:
            message = next(messages)
        except ClientError as exc:
            if exc.code == "timeout":
                continue
            raise
        if message.get("class") == "result":
            got.append((time.time(), message))
    return got


def rate(results: list[tuple[float, Json]]) -> float | None:
    if len(results) < 2:
        return None
    (t0, first), (t1, last) = results[0], results[-1]
    return (last["seq"] - first["seq"]) / (t1 - t0) if t1 > t0 else None


def added_ms(results: list[tuple[float, Json]]) -> tuple[list[float], list[float]]:
    """Per result: (capture -> client read) - infer_ms, and the daemon's own share of it
    (capture -> result ready) - infer_ms."""
    added = [(read - m["ts"]) * 1000.0 - m["infer_ms"] for read, m in results]
    inside = [m["latency_ms"] - m["infer_ms"] for _, m in results]
    return added, inside


def write_raw_video(path: Path, frames: list[Any], fps: float) -> None:
    """Uncompressed I420 AVI: reading a frame back costs about what a camera buffer does."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"I420"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()


def larger_model() -> Optional[Path]:
    """BlazeFace's 256x256 back-camera model from the same package: about 7x the work of the
    default, to show how the daemon's per-frame overhead scales with the model."""
    path = default_model_path().parent / LARGER_MODEL
    return path if path.is_file() else None


class Subject:
    """One model: its in-process baselines and the daemons that run it."""

    def __init__(self, name: str, path: Path, frames: list[Any], rendered: list[Any],
                 folder: Path, base: float) -> None:
        self.name, self.path, self.frames = name, path, frames
        self.bare = Bare(frames, path)
        self.bare.fps(0.3)
        self.model = Model.load(str(path), threads=1)
        for frame in frames[:5]:
            self.model.infer(frame)
        self.video = folder / f"{name}.avi"
        write_raw_video(self.video, rendered, FPS)
        self.fps: dict[str, list[float]] = {k: [] for k in SERIES}
        self.cpu: dict[str, list[float]] = {k: [] for k in SERIES}  # CPU ms a frame
        self.threads: dict[str, dict[str, list[float]]] = {
            "daemon": {role: [] for role in ROLES}}
        self.samples: list[Json] = []
        self.saturated: list[tuple[float, Json]] = []

    def baseline(self, key: str, seconds: float) -> None:
        """One window of an in-process loop: `bare`, `bare_prep` or `model`."""
        loop: dict[str, Callable[[float], tuple[float, float]]] = {
            "bare": self.bare.fps, "bare_prep": self.bare.fps_prep,
            "model": lambda t: model_fps(self.model, self.frames, t)}
        f, c = loop[key](seconds)
        self.fps[key].append(f)
        self.cpu[key].append(c)

    def daemon_window(self, key: str, results: list[tuple[float, Json]],
                      usage: list[Json], wall: float, captured: int) -> None:
        daemon_rate = rate(results)
        if daemon_rate is None:
            return
        if key == "daemon":
            self.saturated.extend(results)
        self.fps[key].append(daemon_rate)
        made = results[-1][1]["seq"] - results[0][1]["seq"]
        self.cpu[key].append(sum(t["cpu"] for t in usage) * wall * 1000.0 / made)
        roles = split_roles(usage)
        for role, thread in roles.items():
            per = made if role != "capture" else max(1, captured)
            self.threads[key][role].append(thread["cpu"] * wall * 1000.0 / per)
        if key == "daemon":
            self.samples.append({"repeat": len(self.samples), "frames_captured": captured,
                                 "results": made, "threads": [
                                     {**t, "role": _role(t, roles)} for t in usage[:4]]})

    def report(self) -> Json:
        stats = {k: summary(v, 1) for k, v in self.fps.items() if v}
        med = {k: st["median"] for k, st in stats.items()}
        return {
            "model": self.model.info.get("name"),
            "daemon_fps": med.get("daemon"),
            "bare_fps": med.get("bare"),
            "bare_prep_fps": med.get("bare_prep"),
            "model_fps": med.get("model"),
            "daemon_vs_bare": ratio(med.get("daemon"), med.get("bare")),
            "model_vs_bare": ratio(med.get("model"), med.get("bare")),
            "daemon_vs_model": ratio(med.get("daemon"), med.get("model")),
            "cpu_bound_ratio": ratio(summary(self.cpu["bare"])["median"],
                                     summary(self.threads["daemon"]["infer"])["median"]),
            "stats_fps": stats,
            "cpu_ms_per_frame": {k: summary(v, 3) for k, v in self.cpu.items() if v},
            "thread_cpu_ms": {k: {role: summary(v, 3) for role, v in per.items()}
                              for k, per in self.threads.items()},
            "daemon_threads": self.samples,
        }


def run(quick: bool = False, repeats: int | None = None) -> Json:
    at_start = machine()  # first: the run's own load must not count in its load average
    repeats = repeats or (1 if quick else 5)
    # --quick: enough for a few results of the 30 fps daemon a window, not a measurement
    window = 0.2 if quick else 3.0
    base = 0.2 if quick else 2.0
    settle = 0.1 if quick else 0.5
    scene = make_scene(SCENE, WIDTH, HEIGHT, FPS)
    first = round(FIRST_S * FPS)
    rendered = [scene.frame(i) for i in range(first, first + round(SECONDS * FPS))]
    if quick:
        rendered = rendered[:8]
    gate = {"enabled": False}
    with tempfile.TemporaryDirectory(prefix="wattgate-bench-") as tmp:
        folder = Path(tmp)
        live = folder / "live.avi"
        write_raw_video(live, rendered, FPS)
        frames = read_video(live)
        main = Subject("default", default_model_path(), frames, rendered, folder, base)
        subjects = [main]
        larger = None if quick else larger_model()
        if larger is not None:
            subjects.append(Subject("larger", larger, frames, rendered, folder, base))
        stages = model_stages(main.model, frames, 50 if quick else 500)
        yuv_input = camera_input(main.model, rendered[0], 1 if quick else repeats,
                                 5 if quick else 100)
        paced: list[tuple[float, Json]] = []
        per_repeat_p99: list[float] = []
        with contextlib.ExitStack() as stack:
            runs: list[tuple[Subject, str, DaemonRun]] = []
            for subject in subjects:
                camera = {"source": str(subject.video), "loop": True, "realtime": False}
                model = {"path": str(subject.path)}
                runs.append((subject, "daemon", stack.enter_context(
                    daemon(camera=camera, gate=gate, model=model))))
                if subject is main:
                    runs.append((subject, "latency", stack.enter_context(
                        daemon(camera={**camera, "source": str(live), "realtime": True},
                               gate=gate, model=model))))
            clients = {}
            for _, _key, run_ in runs:
                clients[run_.pid] = client = run_.connect()
                client.request("subscribe", topics=["results"])
            for _, _key, run_ in runs:
                collect(clients[run_.pid], settle)  # first invokes, XNNPACK set-up
                run_.pause()
            for _ in range(repeats):
                for subject, key, run_ in runs:
                    if key == "daemon":  # the baseline next to its daemon: the same load
                        subject.baseline("bare", base)
                    client = clients[run_.pid]
                    run_.resume()
                    collect(client, settle)  # the burst after SIGCONT is not steady
                    frames0 = client.request("status")["pipeline"]["frames"]
                    before, start = thread_cpu(run_.pid), time.monotonic()
                    results = collect(client, window)
                    after, wall = thread_cpu(run_.pid), time.monotonic() - start
                    frames1 = client.request("status")["pipeline"]["frames"]
                    run_.pause()
                    if key == "latency":
                        paced.extend(results)
                        p99 = percentile(added_ms(results)[0], 99)
                        if p99 is not None:
                            per_repeat_p99.append(p99)
                    else:
                        subject.daemon_window(key, results, thread_usage(before, after, wall),
                                              wall, frames1 - frames0)
                    if key == "daemon":
                        subject.baseline("model", base / 2)
                        if subject is main:
                            subject.baseline("bare_prep", base / 2)
    added, inside = added_ms(paced)
    added_sat, _ = added_ms(main.saturated)
    out: Json = {
        "bench": "pipeline",
        "machine": at_start,
        "repeats": repeats,
        "frames": len(frames),
        "source": f"{SCENE} {WIDTH}x{HEIGHT} I420 AVI",
        "threads": 1,
        "statistic": "fps: median of the repeats; latency: percentiles over all results",
        **main.report(),
        "p50_added_latency_ms": _round(percentile(added, 50)),
        "p99_added_latency_ms": _round(percentile(added, 99)),
        "p50_daemon_added_ms": _round(percentile(inside, 50)),
        "p99_daemon_added_ms": _round(percentile(inside, 99)),
        "p50_added_latency_ms_saturated": _round(percentile(added_sat, 50)),
        "p99_added_latency_ms_saturated": _round(percentile(added_sat, 99)),
        "latency_samples": len(added),
        "p99_added_per_repeat_ms": summary(per_repeat_p99, 3),
        "model_stages_cpu_ms": stages,
        "camera_input": yuv_input,
    }
    if len(subjects) > 1:
        out["larger_model"] = subjects[1].report()
    out["targets"] = [
        target("pipeline daemon_fps/bare_fps", out["daemon_vs_bare"], ">=", 0.95),
        # the target is for the paced source; the full-rate figure rides along, no target
        target("pipeline p99 added latency ms (30 fps source)", out["p99_added_latency_ms"],
               "<=", 2.0, note="at full rate, for information: p99 "
               f"{out['p99_added_latency_ms_saturated']} ms"),
    ]
    return out


def split_roles(usage: list[Json]) -> dict[str, Json]:
    """The daemon's threads by role: the event loop (main), the capture thread (the one that
    reads the file) and the inference thread (the busiest of the others)."""
    roles = {}
    for thread in usage:
        if thread["role"] == "main":
            roles["loop"] = thread
        elif thread["role"] == "reader":
            roles["capture"] = thread
    others = [t for t in usage if not t["role"]]
    if others:
        roles["infer"] = max(others, key=lambda t: float(t["cpu"]))
    return roles


def _role(thread: Json, roles: dict[str, Json]) -> str:
    return next((role for role, t in roles.items() if t is thread), "")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

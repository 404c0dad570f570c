"""`pipeline`: the real daemon with gating off against a bare `interpreter.invoke()` loop.

Frames: 3 s of the `person` scene at 640x480 written as uncompressed I420 AVI files, which
the daemon plays in a loop. A file source stamps a frame after reading it, as a camera
driver does, and raw I420 costs about what a camera's buffer does (a copy and a colour
conversion), so the source does not compete with the model for the CPU the way an MJPEG
decode would. Model: the bundled BlazeFace, one interpreter thread everywhere.

Throughput: the file is played at 1.5x the bare loop's rate (its header says so, and the
daemon paces files to their header), so the model is the bottleneck and the capture thread
is not spinning. Each repeat pauses the daemons (SIGSTOP) and runs, in this process, on the
same decoded frames:
  bare       set_tensor + invoke + get_tensor of each output, on input tensors prepared
             before the loop: the floor, `bare_fps`;
  bare+prep  the same plus a minimal letterbox/normalise of each frame with OpenCV;
  model      wattgate's Model.infer (letterbox, input conversion, invoke, decode);
then resumes one daemon at a time and counts the results a socket client receives in a
window (`daemon_fps`). `daemon_fps_unpaced` is the same daemon with realtime = false (the
source reads as fast as it can, most frames are dropped as stale), for comparison.

Latency: a third daemon plays the file at 30 fps, so no frame waits for a busy model. Added
latency = (time the client read the result - capture time `ts`) - the frame's own invoke
time `infer_ms`: everything the daemon adds around the model, up to a client's read. The
same figure at saturation is `*_saturated` (it includes the wait in the newest-frame slot
for the invoke in progress, which is by design).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from bench.common import (
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
from wattgate.drivers import runtime
from wattgate.drivers.inference import Model, default_model_path
from wattgate.drivers.synthetic import make_scene

WIDTH, HEIGHT, FPS = 640, 480, 30.0
SCENE, FIRST_S, SECONDS = "person", 3.0, 3.0


class Bare:
    """The model with nothing around it: the baselines the daemon is measured against."""

    def __init__(self, frames: list[Any]) -> None:
        self.interp = runtime.Interpreter(model_path=str(default_model_path()), num_threads=1)
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


def model_stages(model: Model, frames: list[Any], count: int) -> Optional[Json]:
    """CPU ms a frame of each stage of Model.infer, timed separately in a tight loop.

    Diagnostic only: it reaches into the model's private parts (letterbox, input writer,
    decoder) and reports None if they have changed shape."""
    try:
        box = model._letterbox  # private on purpose: a benchmark looking inside
        writer, interp = model._writer, model._interpreter
        index, outputs = model._input.index, model._outputs
        decoder = model._decoder
        from wattgate.drivers.decoders import dequantize
    except (AttributeError, ImportError):
        return None
    if box is None:
        return None
    stages = {"letterbox": 0.0, "input": 0.0, "invoke": 0.0, "decode": 0.0}
    for i in range(count):
        t0 = time.thread_time()
        canvas = box.fill(frames[i % len(frames)])
        t1 = time.thread_time()
        tensor = writer.write(canvas)
        t2 = time.thread_time()
        interp.set_tensor(index, tensor)
        interp.invoke()
        t3 = time.thread_time()
        decoded = decoder.decode([dequantize(interp.get_tensor(o.index), o) for o in outputs])
        [box.unmap(d.box) for d in decoded]
        t4 = time.thread_time()
        for name, took in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            stages[name] += took
    return {name: round(total * 1000.0 / count, 4) for name, total in stages.items()}


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
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"I420"), fps, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()


def run(quick: bool = False, repeats: int | None = None) -> Json:
    repeats = repeats or (1 if quick else 5)
    window = 0.6 if quick else 3.0
    base = 0.4 if quick else 2.0
    settle = 0.3 if quick else 0.5
    scene = make_scene(SCENE, WIDTH, HEIGHT, FPS)
    first = round(FIRST_S * FPS)
    rendered = [scene.frame(i) for i in range(first, first + round(SECONDS * FPS))]
    if quick:
        rendered = rendered[:8]
    with tempfile.TemporaryDirectory(prefix="wattgate-bench-") as tmp:
        live = Path(tmp) / "live.avi"
        write_raw_video(live, rendered, FPS)
        frames = read_video(live)
        bare = Bare(frames)
        bare.fps(0.3)
        fast_fps = min(5000.0, max(FPS, round(1.5 * bare.fps(base / 2)[0])))
        fast = Path(tmp) / "fast.avi"
        write_raw_video(fast, rendered, fast_fps)
        model = Model.load(None, threads=1)
        for frame in frames[:5]:
            model.infer(frame)
        stages = model_stages(model, frames, 50 if quick else 500)
        camera = {"source": str(fast), "loop": True, "realtime": True}
        gate = {"enabled": False}
        names = ("bare", "bare_prep", "model", "daemon", "daemon_unpaced")
        fps: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}  # CPU ms a frame
        saturated: list[tuple[float, Json]] = []
        paced: list[tuple[float, Json]] = []
        per_repeat_p99: list[float] = []
        roles = ("infer", "capture", "loop")
        threads = {name: {role: [] for role in roles} for name in ("daemon", "daemon_unpaced")}
        samples: list[Json] = []
        with contextlib.ExitStack() as stack:
            runs = {
                "daemon": stack.enter_context(daemon(camera=camera, gate=gate)),
                "daemon_unpaced": stack.enter_context(
                    daemon(camera={**camera, "realtime": False}, gate=gate)),
                "latency": stack.enter_context(
                    daemon(camera={**camera, "source": str(live)}, gate=gate)),
            }
            clients = {}
            for name, run_ in runs.items():
                clients[name] = run_.connect()
                clients[name].request("subscribe", topics=["results"])
            for name, run_ in runs.items():
                collect(clients[name], settle)  # first invokes, XNNPACK set-up
                run_.pause()
            for _ in range(repeats):
                for name, (f, c) in (("bare", bare.fps(base)),
                                     ("bare_prep", bare.fps_prep(base / 2)),
                                     ("model", model_fps(model, frames, base / 2))):
                    fps[name].append(f)
                    cpu[name].append(c)
                for name, run_ in runs.items():
                    run_.resume()
                    collect(clients[name], settle)  # the burst after SIGCONT is not steady
                    frames0 = clients[name].request("status")["pipeline"]["frames"]
                    before, start = thread_cpu(run_.pid), time.monotonic()
                    results = collect(clients[name], window)
                    after, wall = thread_cpu(run_.pid), time.monotonic() - start
                    frames1 = clients[name].request("status")["pipeline"]["frames"]
                    run_.pause()
                    if name == "latency":
                        paced.extend(results)
                        p99 = percentile(added_ms(results)[0], 99)
                        if p99 is not None:
                            per_repeat_p99.append(p99)
                        continue
                    if name == "daemon":
                        saturated.extend(results)
                    daemon_rate = rate(results)
                    if daemon_rate is None:
                        continue
                    fps[name].append(daemon_rate)
                    usage = thread_usage(before, after, wall)
                    made = results[-1][1]["seq"] - results[0][1]["seq"]
                    cpu[name].append(sum(t["cpu"] for t in usage) * wall * 1000.0 / made)
                    roles = split_roles(usage)
                    for role, thread in roles.items():
                        per = made if role != "capture" else max(1, frames1 - frames0)
                        threads[name][role].append(thread["cpu"] * wall * 1000.0 / per)
                    if name == "daemon":
                        samples.append({"repeat": len(samples), "frames_captured":
                                        frames1 - frames0, "results": made,
                                        "threads": [{**t, "role": _role(t, roles)}
                                                    for t in usage[:4]]})
    added, inside = added_ms(paced)
    added_sat, _ = added_ms(saturated)
    stats = {name: summary(values, 1) for name, values in fps.items()}
    med = {name: s["median"] for name, s in stats.items()}
    out: Json = {
        "bench": "pipeline",
        "machine": machine(),
        "repeats": repeats,
        "frames": len(frames),
        "source": f"{SCENE} {WIDTH}x{HEIGHT} I420 AVI",
        "source_fps": fast_fps,
        "model": model.info.get("name"),
        "threads": 1,
        "statistic": "fps: median of the repeats; latency: percentiles over all results",
        "daemon_fps": med["daemon"],
        "bare_fps": med["bare"],
        "bare_prep_fps": med["bare_prep"],
        "model_fps": med["model"],
        "daemon_fps_unpaced": med["daemon_unpaced"],
        "daemon_vs_bare": ratio(med["daemon"], med["bare"]),
        "model_vs_bare": ratio(med["model"], med["bare"]),
        "daemon_vs_model": ratio(med["daemon"], med["model"]),
        "p50_added_latency_ms": _round(percentile(added, 50)),
        "p99_added_latency_ms": _round(percentile(added, 99)),
        "p50_daemon_added_ms": _round(percentile(inside, 50)),
        "p99_daemon_added_ms": _round(percentile(inside, 99)),
        "p50_added_latency_ms_saturated": _round(percentile(added_sat, 50)),
        "p99_added_latency_ms_saturated": _round(percentile(added_sat, 99)),
        "latency_samples": len(added),
        "p99_added_per_repeat_ms": summary(per_repeat_p99, 3),
        "stats_fps": stats,
        "model_stages_cpu_ms": stages,
        "cpu_ms_per_frame": {name: summary(values, 3) for name, values in cpu.items()},
        "thread_cpu_ms": {name: {role: summary(values, 3) for role, values in per.items()}
                          for name, per in threads.items()},
        "daemon_threads": samples,
    }
    out["targets"] = [
        target("pipeline daemon_fps/bare_fps", out["daemon_vs_bare"], ">=", 0.95),
        target("pipeline p99 added latency ms", out["p99_added_latency_ms"], "<=", 2.0),
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

"""`gate`: milliseconds per frame of the gate against a copy, MOG2 and the Frigate-style peer.

The four run on the same frames in the same process, interleaved: each repeat times one pass
of every method over the frames, in a rotating order, so a noisy neighbour slows all of them
alike. Frames are a stretch of the `person` scene (idle room, then someone walking through),
held in memory (more of them than the CPU caches hold at 1080p, as a camera's buffers are).

Inputs, one row each:
  bgr    a BGR frame (what OpenCV's VideoCapture gives); copy = frame.copy()
  luma   the Y plane of the frame (I420/NV12 sources); copy = the plane's copy
  yuyv   a packed YUYV buffer (cv2.cvtColor BGR2YUV_YUY2), the gate reads its Y as a strided
         view; copy = the buffer's copy
  mjpeg  a JPEG (cv2.imencode, quality 80): ours and the Frigate-style peer decode it with
         IMREAD_REDUCED_GRAYSCALE_4, MOG2 with IMREAD_GRAYSCALE (full size, which it needs);
         copy = the compressed buffer's copy, and `decode_ms` = a full colour decode, what a
         source that decodes MJPEG to BGR pays before any gate sees the frame.
Times include what each method needs from that input (the mjpeg row includes decoding).
Times are CPU time of this process (all its threads) per frame: what a frame costs, and
unlike wall time not inflated when another process preempts a pass. The medians are the
reported values (`*_ms`); `stats` has min/median/max over the repeats.
"""

from __future__ import annotations

import gc
import time
from typing import Any, Callable

import cv2
import numpy as np

from bench.common import Json, machine, ratio, summary, target
from bench.frigate import FrigateStyleDetector
from wattgate.config import GateConfig
from wattgate.drivers.synthetic import make_scene
from wattgate.policies.gating import MotionGate

RESOLUTIONS = ((640, 480), (1280, 720), (1920, 1080))
INPUTS = ("bgr", "luma", "yuyv", "mjpeg")
# The targets are on frames as they are handed over (BGR, a Y plane) and YUYV; the
# mjpeg row includes a JPEG decode in every column, which dominates it: for information.
TARGET_INPUTS = ("bgr", "luma", "yuyv")
FPS = 15.0
FIRST_S, LAST_S = 1.5, 7.0  # a still room, then the first crossing of the person
JPEG_QUALITY = 80

Step = Callable[[int, float], Any]


def _frames(width: int, height: int, count: int) -> list[Any]:
    scene = make_scene("person", width, height, FPS)
    picks = np.linspace(FIRST_S * FPS, LAST_S * FPS, count).round().astype(int)
    return [scene.frame(int(i)) for i in picks]


def _inputs(frames: list[Any], kind: str) -> list[Any]:
    if kind == "bgr":
        return frames
    if kind == "luma":
        return [cv2.cvtColor(f, cv2.COLOR_BGR2YUV_I420)[: f.shape[0]].copy() for f in frames]
    if kind == "yuyv":
        return [cv2.cvtColor(f, cv2.COLOR_BGR2YUV_YUY2) for f in frames]
    if kind == "mjpeg":
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        return [cv2.imencode(".jpg", f, params)[1] for f in frames]
    raise ValueError(kind)


def _methods(kind: str, data: list[Any], width: int, height: int) -> dict[str, Step]:
    """name -> step(i, now) processing data[i]; every stateful method gets its own state."""
    gate = MotionGate(GateConfig())
    mog2 = cv2.createBackgroundSubtractorMOG2()
    peer = FrigateStyleDetector()
    size = (width, height)
    reduced = cv2.IMREAD_REDUCED_GRAYSCALE_4
    if kind == "bgr":
        return {
            "ours": lambda i, t: gate.update_bgr(data[i], t),
            "copy": lambda i, t: data[i].copy(),
            "mog2": lambda i, t: mog2.apply(data[i]),
            "frigate": lambda i, t: peer.detect_bgr(data[i]),
        }
    if kind == "luma":
        return {
            "ours": lambda i, t: gate.update_luma(data[i], t),
            "copy": lambda i, t: data[i].copy(),
            "mog2": lambda i, t: mog2.apply(data[i]),
            "frigate": lambda i, t: peer.detect_luma(data[i]),
        }
    if kind == "yuyv":
        return {
            "ours": lambda i, t: gate.update_luma(data[i][..., 0], t),
            "copy": lambda i, t: data[i].copy(),
            "mog2": lambda i, t: mog2.apply(data[i][..., 0]),
            "frigate": lambda i, t: peer.detect_luma(data[i][..., 0]),
        }
    return {
        "ours": lambda i, t: gate.update_luma(cv2.imdecode(data[i], reduced), t, size),
        "copy": lambda i, t: data[i].copy(),
        "mog2": lambda i, t: mog2.apply(cv2.imdecode(data[i], cv2.IMREAD_GRAYSCALE)),
        "frigate": lambda i, t: peer.detect_luma(cv2.imdecode(data[i], reduced), size),
        "decode": lambda i, t: cv2.imdecode(data[i], cv2.IMREAD_COLOR),
    }


def _time_pass(step: Step, count: int, clock: list[float]) -> float:
    """CPU ms per frame over one pass; clock[0] is the supplied time, advanced 1/FPS a frame.

    Process CPU time, not wall time: a pass lasts a few milliseconds, and on a shared machine
    one preemption would add another process's time slice to it. Process, not thread: MOG2
    and large resizes run on OpenCV's worker threads too, and all of that is the cost."""
    t = clock[0]
    start = time.process_time()
    for i in range(count):
        step(i, t)
        t += 1.0 / FPS
    elapsed = time.process_time() - start
    clock[0] = t
    return elapsed * 1000.0 / count


def measure(width: int, height: int, kind: str, frames: list[Any], repeats: int) -> Json:
    data = _inputs(frames, kind)
    methods = _methods(kind, data, width, height)
    clocks = {name: [0.0] for name in methods}
    # Past the gate's calibration, MOG2's and the peer's first frames, on the still room only:
    # cycling the whole stretch here would teach every method the person as scenery, and the
    # timed passes would see no motion at all.
    warm = round(2.5 * FPS)
    for name, step in methods.items():
        for _ in range(warm):
            step(0, clocks[name][0])
            clocks[name][0] += 1.0 / FPS
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    gc.disable()
    try:
        for r in range(repeats):
            for name in names[r % len(names):] + names[: r % len(names)]:
                times[name].append(_time_pass(methods[name], len(data), clocks[name]))
    finally:
        gc.enable()
    stats = {name: summary(values) for name, values in times.items()}
    row: Json = {"resolution": f"{width}x{height}", "input": kind}
    for name in ("ours", "copy", "mog2", "frigate", "decode"):
        if name in stats:
            row[f"{name}_ms"] = stats[name]["median"]
    row["ours_vs_copy"] = ratio(row["ours_ms"], row["copy_ms"])
    row["ours_vs_mog2"] = ratio(row["ours_ms"], row["mog2_ms"])
    row["ours_vs_frigate"] = ratio(row["ours_ms"], row["frigate_ms"])
    row["stats"] = stats
    return row


def run(quick: bool = False, repeats: int | None = None) -> Json:
    at_start = machine()  # first: the run's own load must not count in its load average
    resolutions = ((640, 480),) if quick else RESOLUTIONS
    repeats = repeats or (2 if quick else 9)
    count = 4 if quick else 24
    rows = []
    for width, height in resolutions:
        frames = _frames(width, height, count)
        for kind in INPUTS:
            rows.append(measure(width, height, kind, frames, repeats))
        del frames
    targets = []
    top = max(resolutions, key=lambda r: r[0] * r[1])
    for row in rows:
        if row["resolution"] != f"{top[0]}x{top[1]}":
            continue
        if row["input"] not in TARGET_INPUTS:
            continue
        label = f"{row['resolution']} {row['input']}"
        targets.append(target(f"gate ours/copy {label}", row["ours_vs_copy"], "<=", 1.0))
        targets.append(target(f"gate ours/mog2 {label}", row["ours_vs_mog2"], "<=", 0.1))
    return {
        "bench": "gate",
        "machine": at_start,
        "repeats": repeats,
        "frames_per_pass": count,
        "statistic": "process CPU ms a frame, median of the repeats; ratios median/median",
        "rows": rows,
        "targets": targets,
    }

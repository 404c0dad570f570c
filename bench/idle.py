"""`idle`: CPU time per wall-clock second of the running daemon watching an idle scene.

The daemon plays `synthetic:empty` at 1280x720, 15 fps, in real time, with the shipped gate
settings; after its calibration, the CPU time of the whole process (all threads, from
/proc/<pid>/stat) is sampled over windows. `cpu_cores` is the median window.

The synthetic source renders every frame (a copy of the room plus sensor noise), work a real
camera's driver does not ask of the CPU, so the same render and gate are also timed in this
process at the same pace: `source_cores` (render ms x fps) is what the source costs,
`gate_cores` what the gate does, and `cpu_cores_without_source` is the daemon's own share.
Per-thread figures (thread 0 is the event loop) show where the rest goes.
"""

from __future__ import annotations

import time

from bench.common import (
    Json,
    cpu_seconds,
    daemon,
    machine,
    summary,
    target,
    thread_cpu,
    thread_usage,
)
from wattgate.config import GateConfig
from wattgate.drivers.synthetic import make_scene
from wattgate.policies.gating import MotionGate

SCENE, WIDTH, HEIGHT, FPS = "empty", 1280, 720, 15.0


def in_process_costs(frames: int) -> tuple[float, float]:
    """(render ms, gate ms) a frame of the idle scene: CPU time of this thread, at the
    scene's own pace. Paced, because that is how the daemon runs them: between two frames
    other work evicts the room and the noise fields from the caches, which makes a render
    about three times dearer than in a tight loop."""
    scene = make_scene(SCENE, WIDTH, HEIGHT, FPS)
    gate = MotionGate(GateConfig())
    image = scene.frame(0)
    warm = round(2.5 * FPS)  # past calibration
    for i in range(warm):
        gate.update_bgr(image, i / FPS)
    render = gating = 0.0
    for i in range(frames):
        start = time.thread_time()
        image = scene.frame(i)
        middle = time.thread_time()
        gate.update_bgr(image, (warm + i) / FPS)
        end = time.thread_time()
        render += middle - start
        gating += end - middle
        time.sleep(max(0.0, 1.0 / FPS - (end - start)))
    return render * 1000.0 / frames, gating * 1000.0 / frames


def run(quick: bool = False, repeats: int | None = None) -> Json:
    at_start = machine()  # first: the run's own load must not count in its load average
    repeats = repeats or (1 if quick else 5)
    window = 0.3 if quick else 6.0  # --quick: a few frames at 15 fps, not a measurement
    camera = {"source": f"synthetic:{SCENE}", "width": WIDTH, "height": HEIGHT, "fps": FPS,
              "realtime": True}
    cores: list[float] = []
    with daemon(camera=camera) as run_:
        client = run_.connect()
        time.sleep(0.2 if quick else 3.0)  # the gate calibrates for 2 s
        status0 = client.request("status")["pipeline"]
        threads0, wall0 = thread_cpu(run_.pid), time.monotonic()
        for _ in range(repeats):
            cpu0, t0 = cpu_seconds(run_.pid), time.monotonic()
            time.sleep(window)
            cores.append((cpu_seconds(run_.pid) - cpu0) / (time.monotonic() - t0))
        threads = thread_usage(threads0, thread_cpu(run_.pid), time.monotonic() - wall0)
        status1 = client.request("status")["pipeline"]
    frames = status1["frames"] - status0["frames"]
    inferred = status1["inferred"] - status0["inferred"]
    render_ms, gate_ms = in_process_costs(4 if quick else 45)
    stats = summary(cores, 4)
    source = render_ms * FPS / 1000.0
    out: Json = {
        "bench": "idle",
        "machine": at_start,
        "repeats": repeats,
        "window_s": window,
        "scene": f"{SCENE} {WIDTH}x{HEIGHT} @ {FPS:g} fps",
        "statistic": "median of the windows",
        "cpu_cores": stats["median"],
        "stats": stats,
        "frames": frames,
        "inferred": inferred,
        "render_ms": round(render_ms, 3),
        "gate_ms": round(gate_ms, 3),
        "source_cores": round(source, 4),
        "gate_cores": round(gate_ms * FPS / 1000.0, 4),
        "cpu_cores_without_source": round(stats["median"] - source, 4),
        "threads": [t for t in threads if t["cpu"] > 0],
    }
    out["targets"] = [target("idle cpu_cores", out["cpu_cores"], "<=", 0.03)]
    return out

"""`gate-quality`: event recall and idle skip ratio on the labelled synthetic scenes.

Each scene is rendered once, frame by frame, and every frame goes to the three gates:
ours (MotionGate with the shipped defaults), MOG2 and the Frigate-style detector, the last
two behind `peers.Downstream`, the same cooldown / heartbeat rule ours applies, with a
warm-up as long as our calibration. `synthetic.score_gate` scores all three the same way.
`recall` is the target: an event (an interval with an object in view) is caught when the
model runs (`infer`) on one of the event's first 2 frames, so the model sees the object
while it is still entering. `recall_any_frame` is a looser figure for information only: an
event with any of its frames inferred, however late; a gap between the two means the model
saw the object only after it had entered. Idle
frames are those with nothing in view, outside the cooldown after presence, heartbeats and
warm-up excluded; idle_skip is the fraction of those not sent to the model.
Deterministic (the scenes are), so one pass is the measurement: there is nothing to repeat.
"""

from __future__ import annotations

from typing import Any

from bench.common import Json, machine, target
from bench.peers import Downstream, FrigateMotion, Mog2Motion
from wattgate.config import GateConfig
from wattgate.drivers.synthetic import CATCH_FRAMES, make_scene, score_gate
from wattgate.policies.gating import CALIBRATION_S, MotionGate

SCENES = ("empty", "sunrise", "lights", "ir-switch", "person", "small-object", "rain",
          "foliage", "auto-exposure", "conveyor")
QUICK_SCENES = ("empty", "person")
GATES = ("ours", "mog2", "frigate")


def _score(scene: Any, verdicts: list[Any], cooldown_s: float) -> Json:
    result = score_gate(scene, verdicts, cooldown_s)
    return {
        "recall": round(result.recall, 4),
        "recall_any_frame": round(result.any_frame_ratio, 4),
        "idle_skip": round(result.skip_ratio, 4),
        "events": len(result.caught),
        "caught": sum(result.caught),  # inferred on one of the first 2 frames
        "inferred_any_frame": sum(result.inferred_any),
        "idle_frames": result.idle,
        "skipped": result.skipped,
        "inferred": sum(bool(v.infer) for v in verdicts),
    }


def measure(name: str, width: int, height: int, fps: float) -> Json:
    cfg = GateConfig()
    scene = make_scene(name, width, height, fps)
    ours = MotionGate(cfg)
    peers: dict[str, Mog2Motion | FrigateMotion] = {
        "mog2": Mog2Motion(cfg.min_area, cfg.frame_height), "frigate": FrigateMotion()}
    rules = {key: Downstream(cfg.cooldown_s, cfg.heartbeat_s, CALIBRATION_S) for key in peers}
    verdicts: dict[str, list[Any]] = {key: [] for key in GATES}
    for i in range(scene.length):
        frame = scene.frame(i)
        now = i / fps
        verdicts["ours"].append(ours.update_bgr(frame, now))
        for key, peer in peers.items():
            verdicts[key].append(rules[key].decide(now, peer.motion(frame)))
    row: Json = {"scene": name, "frames": scene.length, "events": len(scene.events)}
    for key in GATES:
        row[key] = _score(scene, verdicts[key], cfg.cooldown_s)
    return row


def run(quick: bool = False, repeats: int | None = None) -> Json:
    """`repeats` is accepted for a uniform interface; a deterministic score needs one pass."""
    at_start = machine()  # first: the run's own load must not count in its load average
    names = QUICK_SCENES if quick else SCENES
    width, height = (320, 240) if quick else (640, 480)
    fps = 15.0
    rows = [measure(name, width, height, fps) for name in names]
    targets = []
    for row in rows:
        ours, frigate = row["ours"], row["frigate"]
        scene = row["scene"]
        targets.append(target(f"quality recall {scene}", ours["recall"], ">=", 1.0))
        targets.append(target(f"quality idle_skip {scene}", ours["idle_skip"], ">=", 0.95))
        targets.append(target(f"quality idle_skip - frigate's {scene}",
                              round(ours["idle_skip"] - frigate["idle_skip"], 4), ">=", 0.0))
    return {
        "bench": "gate-quality",
        "machine": at_start,
        "repeats": 1,
        "resolution": f"{width}x{height}",
        "fps": fps,
        "rule": {"cooldown_s": GateConfig().cooldown_s, "heartbeat_s": GateConfig().heartbeat_s,
                 "warmup_s": CALIBRATION_S, "catch_frames": CATCH_FRAMES},
        "scenes": rows,
        "targets": targets,
    }

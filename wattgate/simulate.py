"""`wattgate simulate`: replay a scene through the real gate and policy on an emulated board.

For the chosen profile and two baselines, in the same run:

* the profile: the real MotionGate and the real PowerController (rules, activity states,
  load feedback) writing a fake sysfs tree of the board, materialised in a temporary
  directory;
* ``always_on``: performance governors, the NPU held on at its top clock, every frame
  inferred;
* ``governor_only``: schedutil (or ondemand), the NPU's runtime PM and devfreq governor
  as the board ships them, every frame inferred: what a stock image does (the RK3588's
  NPU ships at runtime PM "auto", the Raspberry Pi 5's Hailo at "on").

simkernel.py plays the kernel (governors, runtime PM, the inference queue) and turns the
knobs into watts with the board's energy model. The model's time is its measured invoke
time on this machine (or ``--model-ms``), standing in for the board's NPU at its top
clock, and scaled down with the NPU's clock.

``energy_j`` and ``mean_power_w`` are the parts the policy steers (CPU clusters and the
NPU); ``board_energy_j`` and ``board_mean_power_w`` add the camera and the rest of the
board (static), which the policy cannot change and which are estimates. An event counts
as caught when one of its first two frames is inferred.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import cv2
import numpy as np
import numpy.typing as npt

from wattgate.boards import SIMULATED, energy_model, materialize
from wattgate.config import BUILTIN_PROFILES, Config, GateConfig, ProfileConfig
from wattgate.daemon.power import PowerController
from wattgate.drivers.sysfs import Sysfs
from wattgate.policies.energy import board_power
from wattgate.policies.gating import DISABLED, GateVerdict, MotionGate
from wattgate.policies.load import LoadSample
from wattgate.simkernel import SimBoard, WatchIO

Image = npt.NDArray[np.uint8]
CATCH_FRAMES = 2  # an event is caught when one of its first two frames is inferred
MODEL_RUNS = 20
# The controller writes from its own thread (daemon/power.py); the simulation waits for
# each step's writes so the board reads them at the same frame on every run. The writes go
# to a fake tree: this bound is only a guard against a hang, never reached.
SETTLE_S = 60.0

BASELINES: dict[str, dict[str, Any]] = {
    # the built-in performance profile, NPU floor and all, less cpu_epp and gpu_govern,
    # which this baseline has never set
    "always_on": {
        **{key: value for key, value in BUILTIN_PROFILES["performance"].items()
           if key not in ("cpu_epp", "gpu_govern")},
        "description": "baseline: performance governors, NPU held on, every frame inferred",
    },
    "governor_only": {
        "description": "baseline: stock governors and NPU runtime PM, every frame inferred",
        "cpu_governor": ["schedutil", "ondemand", "powersave"],
        # no npu_runtime_pm: the NPU's power/control stays as the board ships it
    },
}


class SimulateError(Exception):
    """Bad input (unknown board or scene, unreadable video or labels)."""


class NoModel(SimulateError):
    """The model to measure cannot be loaded: not bad usage but, as for `run`, no model."""


@dataclass(frozen=True)
class Footage:
    """Frames to replay and their ground truth."""

    name: str
    fps: float
    length: int
    events: tuple[tuple[int, int], ...]
    frames: Callable[[], Iterator[Image]]


def scene_footage(name: str) -> Footage:
    from wattgate.drivers.synthetic import UnknownScene, make_scene

    try:
        scene = make_scene(name)
    except UnknownScene as exc:
        raise SimulateError(str(exc)) from None

    def frames() -> Iterator[Image]:
        for i in range(scene.length):
            yield scene.frame(i)

    return Footage(f"scene {name}", scene.fps, scene.length, scene.events, frames)


def video_footage(video: Path, labels: Path) -> Footage:
    """A video file and its labels JSON: {"fps": F, "events": [[first, last], ...]}."""
    try:
        text = labels.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SimulateError(f"labels {labels}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SimulateError(f"labels {labels}: not UTF-8") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SimulateError(f"labels {labels}: not JSON: {exc}") from None
    fps, events = parse_labels(data, f"labels {labels}")
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise SimulateError(f"cannot open video {video}")
        # Counted, not CAP_PROP_FRAME_COUNT: FFmpeg takes that from the container's header,
        # which a recording cut short (power lost mid-write) overstates. The runs with the
        # gate stopped at the last real frame and the baselines went on to the header's
        # count, so they were compared over different lengths.
        length = 0
        while capture.grab():
            length += 1
    finally:
        capture.release()
    if length == 0:
        raise SimulateError(f"video {video} has no frames")
    # An event that starts past the end (labels of another video, or in milliseconds) is
    # missed by every strategy alike: each was reported with recall 0 and nothing said.
    for index, (first, _last) in enumerate(events):
        if first >= length:
            raise SimulateError(f"labels {labels}: events[{index}]: frame {first} beyond the "
                                f"video's {length} frames (numbered from 0)")

    def frames() -> Iterator[Image]:
        cap = cv2.VideoCapture(str(video))
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield np.asarray(frame, dtype=np.uint8)
        finally:
            cap.release()

    return Footage(f"video {video.name}", fps, length, events, frames)


LABELS_FORMAT = '{"fps": F, "events": [[first, last], ...]}'


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_frame(value: Any) -> bool:
    """A frame number: a whole number, 0 or more (228.0 too, as some tools write it)."""
    return _is_number(value) and math.isfinite(value) and value >= 0 and value == int(value)


def parse_labels(data: Any, where: str) -> tuple[float, tuple[tuple[int, int], ...]]:
    """fps and events of a labels document, or a SimulateError naming the field at fault.

    Checked field by field rather than converted: float() and int() took fps true as 1 fps
    and an event [1.5, 4] as frames 1 to 4, and what failed was told in Python's words
    ("'fps'", "too many values to unpack")."""
    if not isinstance(data, dict):
        raise SimulateError(f"{where}: not a JSON object {LABELS_FORMAT}")
    for key in ("fps", "events"):
        if key not in data:
            raise SimulateError(f"{where}: no {key} ({LABELS_FORMAT})")
    fps = data["fps"]
    # json reads NaN and Infinity
    if not (_is_number(fps) and math.isfinite(fps) and fps > 0):
        raise SimulateError(f"{where}: fps must be a number above 0, got {json.dumps(fps)}")
    if not isinstance(data["events"], list):
        raise SimulateError(f"{where}: events must be a list of [first, last] frame pairs")
    events = []
    for index, event in enumerate(data["events"]):
        # no strategy could catch an event that ends before it starts: recall alike for all
        if not (isinstance(event, list) and len(event) == 2
                and all(_is_frame(n) for n in event) and event[0] <= event[1]):
            raise SimulateError(f"{where}: events[{index}]: {json.dumps(event)} is not "
                                "[first, last], whole frame numbers with 0 <= first <= last")
        events.append((int(event[0]), int(event[1])))
    return float(fps), tuple(events)


def measure_model_ms(cfg: Config, frame: Image) -> tuple[float, str]:
    """Invoke time of the configured model on this machine, and its name.

    The fastest of MODEL_RUNS invokes: other processes only ever add time, so the minimum
    is the model's own cost (the reasoning behind timeit's advice to take the minimum).
    """
    from wattgate.drivers.inference import Model, ModelError

    try:
        model = Model.from_config(cfg.model)
    except ModelError as exc:
        raise NoModel(str(exc)) from None
    times = [model.infer(frame).invoke_ms for _ in range(MODEL_RUNS)]
    return min(times), str(model.info.get("name", "model"))


@dataclass
class RunResult:
    energy_j: float
    mean_power_w: float
    board_energy_j: float
    board_mean_power_w: float
    event_recall: float
    frames_inferred: int
    frames_total: int
    stale_dropped: int
    breakdown_j: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "energy_j": round(self.energy_j, 3),
            "mean_power_w": round(self.mean_power_w, 4),
            "event_recall": round(self.event_recall, 4),
            "frames_inferred": self.frames_inferred,
            "frames_total": self.frames_total,
            "stale_dropped": self.stale_dropped,
            "board_energy_j": round(self.board_energy_j, 3),
            "board_mean_power_w": round(self.board_mean_power_w, 4),
            "breakdown_j": {k: round(v, 3) for k, v in self.breakdown_j.items()},
        }


def recall(events: Sequence[tuple[int, int]], inferred: set[int]) -> float:
    if not events:
        return 1.0
    caught = sum(
        any(i in inferred for i in range(first, min(last, first + CATCH_FRAMES - 1) + 1))
        for first, last in events
    )
    return caught / len(events)


def settle(controller: PowerController) -> None:
    """Wait until the controller has written what it wants (deterministic runs)."""
    if not controller.settle(SETTLE_S):
        raise RuntimeError(f"the power writes did not settle within {SETTLE_S:.0f} s")


def run_one(cfg: Config, board: str, footage: Footage, model_ms: float, workdir: Path) -> RunResult:
    """One strategy over the whole footage on a freshly materialised board."""
    root = materialize(board, workdir / "sys")
    # The state_dir too: the controller notes its journal_dir there, and gives back the
    # journals of the others noted there (daemon/journal_dirs.py), the real board's.
    cfg = cfg.model_copy(update={"power": cfg.power.model_copy(update={
        "sysfs_root": str(root), "journal_dir": str(workdir / "journal"), "board": board,
        "enabled": True,
    }), "daemon": cfg.daemon.model_copy(update={"state_dir": str(workdir / "state")})})
    watch = WatchIO()
    controller = PowerController(cfg, io=watch)
    sim = SimBoard(Sysfs(root), watch, board_power(board, energy_model(board)), model_ms)
    gate = MotionGate(cfg.gate) if cfg.gate.enabled else None
    dt = 1.0 / footage.fps
    next_tick = 1.0
    cpu_sum = 0.0
    steps = 0
    frames = footage.frames() if gate is not None else None
    try:  # a stop signal (StopSignal) during the start stops its writer and restores too
        controller.start(0.0)
        for index in range(footage.length):
            now = index * dt
            looked = controller.on_frame(now)
            verdict: GateVerdict = DISABLED
            gated = False
            if frames is not None:
                frame = next(frames, None)
                if frame is None:
                    break
                if looked and gate is not None:
                    verdict = gate.update_bgr(frame, now)
                    gated = True
            admitted = looked and controller.on_gate(verdict, now)
            settle(controller)
            sim.step(index, now, dt, looked, gated, admitted)
            cpu_sum += sim.busiest_cpu_percent(dt)
            steps += 1
            if now + dt >= next_tick - 1e-9:
                c = sim.counters
                sample = LoadSample(now + dt, len(c.inferred), c.stale, c.infer_ms_total,
                                    cpu_sum / max(steps, 1))
                controller.tick(now + dt, sample)
                settle(controller)
                cpu_sum, steps = 0.0, 0
                next_tick += 1.0
    finally:
        controller.stop()
    meter = sim.meter
    seconds = max(meter.seconds, 1e-9)
    j = meter.joules
    return RunResult(
        energy_j=j.steerable,
        mean_power_w=j.steerable / seconds,
        board_energy_j=j.total,
        board_mean_power_w=j.total / seconds,
        event_recall=recall(footage.events, sim.counters.inferred),
        frames_inferred=len(sim.counters.inferred),
        frames_total=sim.counters.frames,
        stale_dropped=sim.counters.stale,
        breakdown_j={"cpu": j.cpu, "npu": j.npu, "camera": j.camera, "static": j.static},
    )


def baseline_config(cfg: Config, name: str) -> Config:
    profile = ProfileConfig.model_validate(BASELINES[name])
    return cfg.model_copy(update={
        "profiles": {**cfg.profiles, name: profile},
        "rules": [],
        "power": cfg.power.model_copy(update={"profile": name}),
        "gate": GateConfig(enabled=False),
    })


def simulate(
    board: str,
    footage: Footage,
    cfg: Optional[Config] = None,
    profile: Optional[str] = None,
    model_ms: Optional[float] = None,
) -> dict[str, Any]:
    """The whole report: the profile's run and both baselines, as the JSON output."""
    cfg = cfg or Config()
    if board not in SIMULATED:
        raise SimulateError(f"cannot simulate board {board!r}; boards with an energy model "
                            f"of their CPU or NPU: {', '.join(SIMULATED)}")
    model = board_power(board, energy_model(board))
    if profile is not None:
        if profile not in cfg.profiles:
            known = ", ".join(sorted(cfg.profiles))
            raise SimulateError(f"unknown profile {profile!r}; known: {known}")
        cfg = cfg.model_copy(update={"power": cfg.power.model_copy(update={"profile": profile})})
    model_name = "given"
    if model_ms is None:
        first = next(footage.frames(), None)
        if first is None:
            raise SimulateError(f"{footage.name} has no frames")
        model_ms, model_name = measure_model_ms(cfg, first)
    with tempfile.TemporaryDirectory(prefix="wattgate-sim-") as tmp:
        work = Path(tmp)
        result = run_one(cfg, board, footage, model_ms, work / "policy").to_dict()
        baselines = {
            name: run_one(baseline_config(cfg, name), board, footage, model_ms, work / name)
            .to_dict()
            for name in BASELINES
        }
    report: dict[str, Any] = {
        "board": board,
        "source": footage.name,
        "fps": footage.fps,
        "seconds": round(footage.length / footage.fps, 3),
        "profile": cfg.power.profile,
        "model": model_name,
        "model_ms": round(model_ms, 3),
        **result,
        "baselines": baselines,
        "ratios": {
            name: round(result["energy_j"] / b["energy_j"], 4) if b["energy_j"] else None
            for name, b in baselines.items()
        },
        "unmodelled": model.unmodelled,
        "energy_note": "energy_j: CPU clusters and NPU (what profiles steer); board_energy_j "
        "adds camera and static power; see wattgate/boards/" + board.replace("-", "_")
        + ".py for sources and estimates",
    }
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"wattgate simulate: board {r['board']}, {r['source']} ({r['frames_total']} frames "
        f"at {r['fps']:g} fps, {r['seconds']:g} s), profile {r['profile']}",
        f"model {r['model']}: {r['model_ms']:.2f} ms an inference at the NPU's top clock",
        "",
        f"{'':16}{'energy_j':>10}{'mean_w':>9}{'inferred':>10}{'recall':>8}"
        f"{'board_j':>10}{'board_w':>9}",
    ]
    rows = [(r["profile"], r), *list(r["baselines"].items())]
    for name, x in rows:
        lines.append(
            f"{name:16}{x['energy_j']:10.2f}{x['mean_power_w']:9.3f}"
            f"{x['frames_inferred']:>10}{x['event_recall']:8.2f}"
            f"{x['board_energy_j']:10.2f}{x['board_mean_power_w']:9.3f}"
        )
    ratios = ", ".join(
        f"{v:.3f} x {k}" for k, v in r["ratios"].items() if v is not None and not math.isnan(v)
    )
    lines += ["", f"{r['profile']} uses {ratios} (energy_j)", r["energy_note"]]
    if r["unmodelled"]:
        lines.append(f"not modelled on this board (counted as 0 W): {', '.join(r['unmodelled'])}")
    return "\n".join(lines)

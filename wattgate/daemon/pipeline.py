"""The capture and inference threads and the counters they keep.

capture thread: read -> gate -> (idle: count and drop) / (infer: prepare -> newest-frame slot)
inference thread: slot -> model -> `on_result` (thread-safe callback; the caller's thread
                  decodes the output into the result message)

Skipped frames never leave the capture thread. OpenCV and TFLite release the GIL, so
the two threads overlap on a multi-core board: a frame's colour decode, letterbox and input
conversion happen on the capture thread while the model runs on the previous one, and the
inference thread does little but invoke.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from wattgate.config import GateConfig
from wattgate.daemon.power import PowerController
from wattgate.daemon.slot import LatestSlot
from wattgate.drivers.camera import Frame, Image, Source
from wattgate.drivers.inference import InferenceResult, Model, Prepared, Preparer, RawOutput
from wattgate.policies.gating import GateVerdict, MotionGate

log = logging.getLogger("wattgate.pipeline")

Message = dict[str, Any]
# on_error(stage, what, frame): a stage of the pipeline began to fail ("gate", "inference")
# on a frame, or the capture thread stopped ("capture", frame None)
ErrorCallback = Callable[[str, str, Optional[int]], None]
TELL_FAILURES_EVERY_S = 60.0  # a stage's failures are logged and sent at most this often


@dataclass
class Counters:
    """Written by one thread each, read by the event loop (ints are atomic under the GIL);
    detections by the thread that decodes results."""

    frames: int = 0
    skipped: int = 0
    inferred: int = 0
    detections: int = 0
    infer_ms_total: float = 0.0
    last_capture: float = 0.0  # monotonic time of the newest frame (gated, skipped or dropped)
    # monotonic time a paced source's next frame is due, while the capture thread waits for
    # it: a wait longer than the watchdog's stall limit (fps 0.02) is not a stall
    paced_until: float = 0.0
    last_inference: float = 0.0  # monotonic time the newest inference finished
    busy_since: Optional[float] = None  # monotonic time the running invoke started
    source_ended: bool = False
    failed: int = 0  # frames the capture thread failed on (logged) and went past
    infer_failed: int = 0  # frames the model could not be run on (logged once a streak)

    def snapshot(self, stale: int) -> dict[str, Any]:
        mean = self.infer_ms_total / self.inferred if self.inferred else 0.0
        return {
            "frames": self.frames,
            "skipped": self.skipped,
            "inferred": self.inferred,
            "stale_dropped": stale,
            "detections": self.detections,
            "skip_ratio": round(self.skipped / self.frames, 4) if self.frames else 0.0,
            "mean_infer_ms": round(mean, 3),
            # exact, for the load feedback: a rounded mean times a count of millions is
            # off by up to half a second, more than a second's busy time
            "infer_ms_total": round(self.infer_ms_total, 3),
            "source_ended": self.source_ended,
            "failed": self.failed,
            "infer_failed": self.infer_failed,
        }


@dataclass(frozen=True)
class Job:
    frame: Frame
    verdict: GateVerdict
    prepared: Optional[Prepared]  # None: the inference thread prepares it itself


def motion_dict(verdict: GateVerdict) -> dict[str, Any]:
    return {"score": round(verdict.score, 5), "boxes": [list(b) for b in verdict.boxes]}


class Pipeline:
    """Owns one source, one gate and one model for as long as it runs."""

    def __init__(
        self,
        source: Source,
        gate: MotionGate,
        model: Model,
        on_result: Callable[[Inferred], None],
        on_motion: Callable[[bool, float], None],
        power: Optional[PowerController] = None,
        last_seq: int = 0,
        on_error: Optional[ErrorCallback] = None,
    ) -> None:
        """`last_seq`: the number of the last result before this pipeline (one it replaces
        on a reload), so result numbers go on from there. `on_error` (thread-safe) hears
        of a failure once per streak, at most once a minute a stage, as the log does:
        clients see it as an `error` event."""
        self.source = source
        self.power = power
        self.gate = gate
        self.model = model
        self.on_result = on_result
        self.on_motion = on_motion
        self.on_error = on_error
        self.counters = Counters()
        self.slot: LatestSlot[Job] = LatestSlot()
        self._stop = threading.Event()
        self._seq = last_seq
        self._snap_after: Optional[float] = None  # a snap wants a frame captured from then
        self._snap_lock = threading.Lock()
        self._recalibrate = threading.Event()
        self._quiet_until = -math.inf  # monotonic time motion is ignored until (suppress_motion)
        self._new_gate_cfg: Optional[GateConfig] = None
        self._media_time = time.monotonic()  # the gate's clock on a source with no real time
        self._media_frames = 0  # counters.frames when _media_time was last moved on
        self._model_lock = threading.Lock()  # one interpreter: pipeline and client images share it
        # The motion episode clients were told of: opened and closed by the capture thread
        # as the gate says, closed by any thread when the pipeline stops watching.
        self._episode_lock = threading.Lock()
        self._in_motion = False  # a motion_start was sent and its motion_end not yet
        self._last_moving = 0.0  # capture time (frame.ts) of the newest moving frame
        self._gated_ts = -math.inf  # capture time (frame.ts) of the frame gated before
        self._gate_now = 0.0  # the gate's clock at the frame being gated (_gate_clock)
        self._preparer = self._new_preparer(model)  # the capture thread's
        self._threads = [
            threading.Thread(target=self._capture_loop, name="wattgate-capture", daemon=True),
            threading.Thread(target=self._infer_loop, name="wattgate-infer", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 1.5) -> None:
        """Stop both threads; a thread stuck in a driver call is abandoned (it is a daemon)."""
        self._stop.set()
        self.end_motion(time.time())  # now, not after a capture thread stuck in a driver
        self.slot.close()
        wake = getattr(self.source, "stop", None)
        if wake is not None:  # a supervised source blocks in read() while its camera is lost
            wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        self.source.close()

    def status(self) -> dict[str, Any]:
        return self.counters.snapshot(self.slot.stale)

    @property
    def last_seq(self) -> int:
        """The number of the last result made (0 before the first)."""
        return self._seq

    def request_snap(self, after: float) -> None:
        """Send the next frame captured at or after monotonic time `after` to the model,
        whatever the gate says.

        A frame whose capture began earlier (the one being read or gated as the request
        comes) does not count: its result could not answer the request. The caller
        matches the answer by capture time, so a newer frame replacing this one in the
        slot still answers. Two pending requests wait for a frame after the later one.
        """
        with self._snap_lock:
            self._snap_after = after if self._snap_after is None else max(after, self._snap_after)

    def _take_snap(self, captured: float) -> bool:
        """Capture thread: whether the frame captured at `captured` is a wanted snap."""
        if self._snap_after is None:  # the usual case, read without the lock
            return False
        with self._snap_lock:
            if self._snap_after is None or captured < self._snap_after:
                return False
            self._snap_after = None
            return True

    def replace_gate(self, cfg: GateConfig) -> None:
        """New gate settings (a reload), taken by the capture thread, which owns the gate,
        before its next frame. Settings that leave the learnt scene valid are taken by the
        running gate (MotionGate.retune); otherwise a new gate calibrates on the scene from
        there, going on with the episode under way (MotionGate.carry_on): a reload is not
        on the list of what ends one."""
        self._new_gate_cfg = cfg

    def swap_model(self, model: Model) -> None:
        """A model variant from the power policy, taken between two frames.

        The capture thread's preparer is made for it now: the old one held the old model
        (its interpreter, tensors and threads) until the next frame the gate let through,
        on an idle scene the next heartbeat. A _prepare under way keeps its own reference."""
        with self._model_lock:
            self.model = model
        self._preparer = self._new_preparer(model)

    def suppress_motion(self, until: float) -> None:
        """Ignore motion until monotonic time `until` (sensors.light_suppress_s after a
        lighting change the light sensor saw): a frame the gate finds moving meanwhile is
        lighting, not motion, and the gate takes it as its background, so no episode opens
        on what the new light makes of it. The gate is not reset for it, nor for a
        request_recalibration meanwhile: a reset would learn whatever moves in its
        calibration (the person who switched the light on) as scenery, and miss it long
        after. Any thread may call it; a float is set whole."""
        self._quiet_until = until

    def request_recalibration(self) -> None:
        """Relearn the background from the next frame (lighting change, camera back).
        Within suppress_motion the gate is not reset: it takes each frame that changes as
        its background instead.

        Any thread may call it; the capture thread resets the gate, which it owns.
        """
        self._recalibrate.set()

    def camera_lost(self, now: float) -> None:
        """The camera stopped giving frames at wall-clock time `now` (a supervised
        source's on_lost or on_ended, called by the thread blocked in its read()).

        Nothing is seen while it is lost, so the motion episode under way ends at the loss
        (end_motion). The scene is relearnt from the first frame after it: the gate's memory
        of the motion before the loss would otherwise open a new episode at once.
        """
        self._recalibrate.set()
        self.end_motion(now)

    def end_motion(self, now: float) -> None:
        """Send the motion_end of the episode under way, if any: the pipeline stops watching
        the scene at wall-clock time `now` (camera lost, source ended, pipeline stopped) and
        the gate would never say it.

        Its ts is what the gate would have said had it kept seeing a still scene, cooldown_s
        after the last moving frame, or `now` if that is sooner: what happened after the
        scene was last watched is not known. Any thread; an episode ends once.
        """
        with self._episode_lock:
            if not self._in_motion:
                return
            self._in_motion = False
            self.on_motion(False, min(self._last_moving + self.gate.cfg.cooldown_s, now))

    def _set_motion(self, moving: bool, ts: float) -> None:
        """Capture thread: the gate began or ended an episode at frame time `ts`. None
        begins once the pipeline is stopping: stop() has sent its last motion_end, and a
        capture thread it abandons in a driver call would never send one."""
        with self._episode_lock:
            if moving != self._in_motion and not (moving and self._stop.is_set()):
                self._in_motion = moving
                self.on_motion(moving, ts)

    def infer_image(self, bgr: Image) -> InferenceResult:
        """Run the model on a client's image, between two pipeline frames."""
        with self._model_lock:
            return self.model.infer(bgr)

    # -- capture thread ---------------------------------------------------------------

    def _capture_loop(self) -> None:
        pacer = Pacer(self.source.fps) if self.source.paced else None
        failing = _FailureStreak()  # frames the gate could not take, in a row
        try:
            while not self._stop.is_set():
                if pacer is not None and pacer.period != 1.0 / self.source.fps:
                    pacer = Pacer(self.source.fps)  # a supervised file opened late: its own rate
                if pacer is not None:
                    now = time.monotonic()
                    delay = pacer.delay(now)
                    self.counters.paced_until = now + delay
                    if self._stop.wait(delay):
                        break
                frame = self.source.read()
                if frame is None:
                    self.counters.source_ended = True
                    log.info("source %s ended; still serving clients", self.source.description)
                    break
                power = self.power
                if (power is not None and self._snap_after is None
                        and not power.on_frame(frame.mono)):
                    self.counters.frames += 1  # the profile's capture_fps drops it unseen
                    self.counters.skipped += 1
                    self.counters.last_capture = frame.mono  # grabbed: capture is alive
                    continue
                try:
                    verdict = self._gate_one(frame)
                except Exception:  # one bad frame (a driver's odd buffer) is not the end
                    self.counters.failed += 1
                    if failing.failed(time.monotonic()):
                        log.exception("frame %d not gated; going on with the next (counted in "
                                      "status as pipeline.failed, logged again when gating "
                                      "works)", frame.index)
                        self._report("gate", frame.index)
                    # Nothing is watched meanwhile: the episode ends as for gated frames,
                    # cooldown_s after its last moving frame, not when gating works again.
                    if self._in_motion and frame.ts - self._last_moving > self.gate.cfg.cooldown_s:
                        self.end_motion(frame.ts)
                        self.gate.end_episode()
                    continue
                told = failing.ended()
                if told:
                    log.info("gating works again after %d failed frame(s)", told)
                if verdict.motion:
                    self._last_moving = frame.ts
                if self.gate.in_motion != self._in_motion:
                    moving = self.gate.in_motion
                    self._set_motion(moving, frame.ts if moving else self._ended_at(frame))
                self._gated_ts = frame.ts
        except Exception:
            # Not source_ended: capture stops making progress, so the watchdog's pings stop
            # and systemd restarts the daemon.
            log.exception("capture thread failed")
            self._report("capture", None)
        finally:  # ended, stopped or failed: no frame will end the episode under way
            self.end_motion(time.time())

    def _ended_at(self, frame: Frame) -> float:
        """Wall-clock time the episode the gate just found over ended: cooldown_s after its
        last moving frame (docs/protocol.md), as the gate's clock counts it back from this
        frame, and not before the frame gated before this one, which was still within it.
        Stamped by this frame, the end was up to a frame period late: a second at the
        1 fps of a power-saving capture rate."""
        ended = self.gate.episode_end
        if ended is None:
            return frame.ts
        return max(self._gated_ts, frame.ts - max(0.0, self._gate_now - ended))

    def _gate_clock(self, frame: Frame) -> float:
        """The time the gate's timers run on.

        A camera's frames happen in real time. A file or scene read faster than real time
        (camera.realtime = false) has only media time: 1 / fps a frame, so cooldown,
        heartbeat and background learning mean the same whatever the read speed. It is
        moved on by the frames since, at the source's fps now: frames / fps stepped back
        when a file was replaced by one of a higher rate, and the gate's timers read
        negative (calibrating for good, every frame "cooldown").
        """
        if self.source.live:
            return frame.mono
        frames = self.counters.frames
        self._media_time += (frames - self._media_frames) / self.source.fps
        self._media_frames = frames
        return self._media_time

    def _gate_one(self, frame: Frame) -> GateVerdict:
        counters = self.counters
        cfg, self._new_gate_cfg = self._new_gate_cfg, None
        if cfg is not None and not self.gate.retune(cfg):
            new_gate = MotionGate(cfg)
            new_gate.carry_on(self.gate)
            self.gate = new_gate
        quiet = frame.mono < self._quiet_until
        if self._recalibrate.is_set():
            self._recalibrate.clear()
            if not quiet:  # within suppress_motion, lighting_expected re-seats the background
                self.gate.reset()
        now = self._gate_now = self._gate_clock(frame)
        self.gate.lighting_expected = quiet
        if frame.luma is not None:
            size = frame.size if frame.size[0] else None
            verdict = self.gate.update_luma(frame.luma, now, source_size=size)
        else:
            verdict = self.gate.update_bgr(frame.color(), now)
        counters.frames += 1
        counters.last_capture = frame.mono
        if self._take_snap(frame.mono):
            verdict = replace(verdict, infer=True, reason="snap")
            self.gate.note_inferred(now)
        # Before the slot: a wake-up raises the NPU's clocks ahead of this frame's inference.
        if self.power is not None and not self.power.on_gate(verdict, frame.mono) and verdict.infer:
            verdict = replace(verdict, infer=False, reason="capped")
        if verdict.infer:
            # A camera's newest frame replaces a stale one; a file read faster than real
            # time waits for the model instead of reading frames only to drop them.
            job = Job(frame, verdict, self._prepare(frame))
            self.slot.put(job, wait=not (self.source.live or self.source.paced))
        else:
            counters.skipped += 1
        return verdict

    def _new_preparer(self, model: Model) -> Preparer:
        """Buffers for the source's frame size and tensors for every job in flight (one
        being prepared, one in the slot, one in the interpreter), made now."""
        return model.preparer((self.source.width, self.source.height), spares=3)

    def _prepare(self, frame: Frame) -> Optional[Prepared]:
        """The model's input for frame, made here while the model runs on the last one.

        None if that fails (a frame that does not decode): the inference thread then tries
        itself and logs why it cannot."""
        model = self.model  # swap_model may replace it at any time: prepare for this one
        preparer = self._preparer
        if preparer.model is not model:
            preparer = self._preparer = self._new_preparer(model)
        try:
            return prepare_frame(preparer, frame)
        except Exception:  # logged by the inference thread, which meets it again
            return None

    # -- inference thread -------------------------------------------------------------

    def _infer_loop(self) -> None:
        """Run the model on each job; a frame it cannot be run on (a driver's odd buffer
        that does not convert) is counted and the next one taken. A streak of them is
        logged once, with why, and once more when inference works again: one a frame was
        an error and a traceback at the camera's rate for as long as it lasted."""
        counters = self.counters
        failing = _FailureStreak()
        while not self._stop.is_set():
            job = self.slot.take(timeout=0.5)
            if job is None:
                continue
            try:
                inferred = self._infer_one(job)
            except Exception:
                counters.infer_failed += 1
                if failing.failed(time.monotonic()):
                    log.exception("inference failed on frame %d; going on with the next "
                                  "(counted in status as pipeline.infer_failed, logged "
                                  "again when inference works)", job.frame.index)
                    self._report("inference", job.frame.index)
                continue
            told = failing.ended()
            if told:
                log.info("inference works again after %d failed frame(s)", told)
            self.on_result(inferred)

    def _report(self, stage: str, frame: Optional[int]) -> None:
        """Tell on_error of the exception being handled, in a line: its type and text."""
        if self.on_error is not None:
            exc = sys.exc_info()[1]
            self.on_error(stage, f"{type(exc).__name__}: {exc}", frame)

    def _infer_one(self, job: Job) -> Inferred:
        counters = self.counters
        counters.busy_since = time.monotonic()
        try:
            with self._model_lock:
                prepared = job.prepared
                if prepared is None or prepared.model is not self.model:
                    # prepared for a model swapped out since, or not prepared at all
                    prepared = prepare_frame(self.model.preparer(), job.frame, keep=False)
                raw = self.model.invoke(prepared)
        finally:
            counters.busy_since = None
        done = time.monotonic()
        counters.inferred += 1
        counters.infer_ms_total += raw.invoke_ms
        counters.last_inference = done
        self._seq += 1
        return Inferred(self.counters, job, raw, self._seq, done)


class _FailureStreak:
    """Frames a stage failed on in a row, and whether this streak is told (logged, and sent
    to clients as an `error` event). A streak that begins within TELL_FAILURES_EVERY_S of
    the last one told is only counted: a stage that fails on every other frame (a flaky
    driver) began a streak at each failure, an error event and a traceback 15 times a
    second, pushing weeks of events out of the log within hours."""

    def __init__(self) -> None:
        self.length = 0
        self.told = False
        self.told_at = -math.inf

    def failed(self, now: float) -> bool:
        """One more failure; True when it begins a streak to tell of."""
        self.length += 1
        if self.length == 1 and now - self.told_at >= TELL_FAILURES_EVERY_S:
            self.told, self.told_at = True, now
            return True
        return False

    def ended(self) -> int:
        """A frame went through: the length of the streak it ends if that one was told
        (its end is told too), else 0."""
        told = self.length if self.told else 0
        self.length, self.told = 0, False
        return told


def prepare_frame(preparer: Preparer, frame: Frame, keep: bool = True) -> Prepared:
    """The model's input for frame, made from its cheapest picture (Frame.picture)."""
    size = frame.full_size
    return preparer.prepare(frame.picture(preparer.fit(size)), keep, frame_size=size)


@dataclass(frozen=True)
class Inferred:
    """A frame's model output, not decoded yet.

    Decoding and building the message (``message``) are left to the thread that publishes
    it, so the inference thread is back at the interpreter at once."""

    counters: Counters
    job: Job
    raw: RawOutput
    seq: int
    done: float  # monotonic time the model's output was ready

    @property
    def captured(self) -> float:
        return self.job.frame.mono

    def message(self) -> Optional[Message]:
        """The result message; None (logged) if the output does not decode."""
        job = self.job
        try:
            result = self.raw.prepared.model.decode(self.raw)
        except Exception:
            log.exception("decoding the model's output failed on frame %d", job.frame.index)
            return None
        self.counters.detections += len(result.detections)
        message: Message = {
            "class": "result",
            "seq": self.seq,
            "ts": round(job.frame.ts, 6),
            "frame": job.frame.index,
            "latency_ms": round((self.done - job.frame.mono) * 1000.0, 3),
            "infer_ms": round(result.invoke_ms, 3),
            "reason": job.verdict.reason,
            **detection_fields(result),
            "motion": motion_dict(job.verdict),
        }
        return message


def detection_fields(result: InferenceResult) -> Message:
    """A result's `detections` as clients get them (a camera frame's or a client image's),
    and `detections_total` when they were cut at model.max_detections."""
    fields: Message = {"detections": [
        {"label": det.label, "score": round(det.score, 4), "box": [round(v, 1) for v in det.box]}
        for det in result.detections
    ]}
    if result.found > len(result.detections):
        fields["detections_total"] = result.found
    return fields


class Pacer:
    """Plays a file or scene at its own frame rate without drift: frame n is due at t0 + n/fps.

    Falling more than a second behind (a stalled disk, a suspended process) restarts the
    schedule instead of bursting frames to catch up.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._t0: Optional[float] = None
        self._n = 0

    def delay(self, now: float) -> float:
        if self._t0 is None or now - (self._t0 + self._n * self.period) > 1.0:
            self._t0, self._n = now, 0
        due = self._t0 + self._n * self.period
        self._n += 1
        return max(0.0, due - now)


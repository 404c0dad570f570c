"""Frame-difference gate: which camera frames are worth a model inference.

Pure policy: frames and caller-supplied monotonic timestamps in, verdicts out; no clock, no
threads, no I/O. It runs on every captured frame, so it must cost less than copying the frame:
the frame is sampled down to `frame_height` rows with nearest-neighbour first (that reads only
the sampled pixels; skipped frames are never colour-converted at full size), and everything
after works on that small luma image with in-place OpenCV calls on reused buffers.

Pipeline, after Frigate's improved motion detector (REFERENCE.md, "Motion gating"): small luma,
Gaussian blur, difference with a running background (accumulateWeighted), threshold, dilate,
external contours larger than `min_area` become boxes. What it adds, aimed at the complaints
REFERENCE.md lists (IR switch, lights, sunrise, rain, foliage):

* Exposure: every frame is fitted to the background with a robust gain and offset (medians of
  the difference in the dark and the bright half of the background, so a person does not drag
  the fit) and compared after the fit. A uniform gain/offset change - auto-exposure, dimming,
  sunrise - leaves no difference at all. A change of less than FIT_SKIP is no change (the
  background's learning follows it); a cheap check finds most such frames before the fit: the
  mean difference with each pixel's clipped to FIT_CLIP, which what moves can shift by no more
  than FIT_CLIP times the share of the frame it covers. It is taken in the dark and the bright
  half apart: a contrast change about middle grey (auto-contrast, WDR, a tone curve) moves
  them opposite ways, and the mean of the whole frame not at all.
* Lighting: what the fit cannot explain but covers most of the frame (a lamp's fall-off, the
  IR-cut filter flipping to grey) is lighting, not motion: the gate recalibrates on it.
* Contrast: the threshold is relative to the background's 4th..96th percentile range, the
  same effect as Frigate's contrast stretch without touching every pixel; the range has a
  floor so a dark, noisy frame is not stretched into motion.
* Nuisance: a per-pixel, slowly forgotten peak of the residual that stayed under the
  threshold raises the threshold where the scene keeps moving a little (swaying foliage,
  flicker, faint rain). What crosses the threshold (a passer-by) does not raise it, and what
  keeps moving in place during the first CALIBRATION_S seconds is taken for scenery. What
  passes through then is not: its path is where the next one comes (a conveyor's next
  parcel, a street's next car), and the gate would be blind along it. Nor is it learnt into
  the background, which would keep its trace as a ghost.
* Rain and snow: a changed region smaller than PERSIST_AREA min_areas counts at once only if
  it is strong for where it is; a weak one must overlap the changes of the two frames before
  (streaks land somewhere else every frame, objects overlap themselves).
* Sway: each pixel is compared with the range its 3x3 neighbourhood of background spans, so
  an edge that moves by a pixel (leaves, a vibrating mast) is not a change.
* Clipping: where the background was white-clipped and the exposure drops, it is only a lower
  bound; a brighter truth showing up there is learnt, not reported.
* Stopped objects and ghosts: a region that differs from the background but has stayed still
  for STILL_S seconds is copied into the background, so a parked car stops costing inferences
  (the heartbeat still looks at it).

It calibrates for CALIBRATION_S after start or reset (reason "calibrating", nothing inferred
unless the heartbeat is due); lights switched meanwhile restart the calibration. Supplied time
that steps back shifts every stored time by the step, so no timer waits for a time already past.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import numpy.typing as npt
from cv2.typing import MatLike

from wattgate.config import GateConfig

# OpenCV takes a scalar for the second operand of max/min/compare/add; its stubs do not say
# so, hence the call-overload ignores below. Outputs (dst, and mask, dtype) are passed by
# position: a keyword argument costs ~0.2 us more per call, and there are ~30 calls a frame.

Box = tuple[int, int, int, int]
Floats = npt.NDArray[np.float32]
Bytes = npt.NDArray[np.uint8]
Ints = npt.NDArray[np.intp]
Bools = npt.NDArray[np.bool_]

REASONS = ("motion", "cooldown", "heartbeat", "idle", "lighting", "calibrating", "disabled")

# nearest neighbour reads only the sampled pixels (INTER_AREA would read them all); the EXACT
# variant samples pixel centres, so the right and bottom edges are not a blind strip
SAMPLING = cv2.INTER_NEAREST_EXACT
CACHE_LINE = 64  # bytes
CALIBRATION_S = 2.0  # after start or reset: learn the scene (and its foliage) before judging
CALIBRATION_ALPHA = 0.2  # Frigate's background alpha while calibrating (REFERENCE.md)
CALIBRATION_FRAMES = 10  # frames after a (re)calibration that learn with that alpha
IN_PLACE_S = 0.5  # while calibrating, a change that stays this long in place is scenery
CONTRAST_STRETCH = True  # threshold relative to the background's contrast, as Frigate's stretch
CONTRAST_PERCENTILES = (4.0, 96.0)  # Frigate's contrast percentiles (REFERENCE.md)
MIN_RANGE = 64.0  # luma range below which a dark frame is not stretched further
SATURATED = 240.0  # (blurred) background this bright may be clipped: the truth may be brighter
MAX_GAIN = 3.0  # an exposure fit beyond x3 or /3 is a lighting change, not a drift
LIGHTING_RESIDUAL = 0.1  # changed fraction above which a near-global raw change is lighting
NUISANCE_K = 2.5  # a pixel must change by this many times the residual it usually shows
NUISANCE_HALF_LIFE_S = 10.0  # that usual residual halves in this long unless seen again
DECAY_STEP_S = 0.25  # and is faded in steps this long (a multiply per frame is wasted work)
PERSIST_AREA = 5  # blobs smaller than this many min_areas must be strong or persist
STRONG = 4.0  # a small blob this many thresholds above the background is strong
STILL_S = 3.0  # a changed region that stays this still is absorbed into the background
STILL_STEP = 4  # frames of motion between checks for it
REFRESH_FRAMES = 32  # background statistics are refreshed this often
RANGE_FRAMES = 16  # and its per-pixel sway range this often
GUARD_FRAMES = 4  # and the per-pixel threshold this often
FIT_SKIP = 0.25  # luma difference from the background under which the exposure is the same
FIT_CLIP = 1.0  # the check before the fit clips each pixel's difference to +-this much luma
CLIP_SCALE = 127.0 / FIT_CLIP  # that clipped difference, scaled to fill a byte around 128
FIT_STEP = 4  # the exposure fit reads every FIT_STEP-th row
EPS = 1e-6  # tolerance on supplied timestamps (15 fps steps are not exact binary fractions)
# The largest this many motion boxes are kept: a fine gate (frame_height up to 1080, min_area
# down to 1) on a frame of many small changes found thousands, and the result line carrying
# them (docs/protocol.md) would outgrow its 64 KiB; 64 boxes take under 2 KiB of it.
MAX_BOXES = 64
UINT8 = np.dtype(np.uint8)
# What the gate has learnt (its background, usual residual, still regions) does not depend
# on these keys: a change of them alone is taken by the running gate (MotionGate.retune).
# The others change what it learns from (frame_height, blur_sigma: the small image) or
# whether it learns at all (enabled).
RETUNABLE = frozenset(
    {"threshold", "min_area", "alpha", "lighting_threshold", "cooldown_s", "heartbeat_s"}
)


@dataclass(frozen=True)
class GateVerdict:
    """What the gate decided about one frame."""

    infer: bool  # send this frame to the model
    reason: str  # one of REASONS: why it is (or is not) inferred
    score: float  # changed fraction of the frame, 0..1
    motion: bool  # real motion seen in this frame (drives motion_start/motion_end events)
    boxes: tuple[Box, ...]  # motion boxes x0, y0, x1, y1 (x1, y1 exclusive) in source pixels


DISABLED = GateVerdict(True, "disabled", 0.0, False, ())
# the verdicts of frames that changed nothing are always the same: made once (frozen)
UNCHANGED = {reason: GateVerdict(False, reason, 0.0, False, ()) for reason in REASONS}


def _medians(hist: MatLike, least: float) -> tuple[Optional[float], Optional[float]]:
    """Medians of the two rows of a (2, 256) histogram of values v + 128, interpolated within
    the bin; None for a row with fewer than `least` samples."""
    flat = hist.ravel()
    cum = cv2.integral(hist.reshape(1, 512))[1, 1:]  # a cumulative sum, in one cheap call
    first, total = cum.item(255), cum.item(511)
    halves = (first / 2.0, first + (total - first) / 2.0)
    found = cum.searchsorted(halves).tolist()
    out: list[Optional[float]] = []
    for row in (0, 1):
        count = first if row == 0 else total - first
        if count < least:
            out.append(None)
            continue
        i = min(found[row], 256 * row + 255)
        below = cum.item(i - 1) if i else 0.0
        out.append(i - 256 * row + (halves[row] - below) / max(flat.item(i), 1.0) - 128.5)
    return out[0], out[1]


def _end(array: npt.NDArray[np.generic]) -> int:
    """Address one past the last byte of an array with non-negative strides."""
    last = sum((n - 1) * s for n, s in zip(array.shape, array.strides))
    return int(array.__array_interface__["data"][0]) + last + array.itemsize


def _pixels(plane: MatLike) -> Optional[MatLike]:
    """A strided uint8 plane (YUYV[..., 0], BGR[..., 0]) as the first channel of an image
    whose pixels are its stride wide (so OpenCV reads it in place, not a packed copy), or
    None when the bytes after the plane's last pixel are not in the same buffer."""
    base, step = plane.base, plane.strides[1]
    if not isinstance(base, np.ndarray) or min(base.strides, default=0) < 0:
        return None
    if plane.strides[0] <= 0 or not 0 < step <= 4 or _end(plane) + step - 1 > _end(base):
        return None
    shape = (*plane.shape[:2], step)
    return np.lib.stride_tricks.as_strided(plane, shape, (plane.strides[0], step, 1),
                                           writeable=False)


def _check_bytes(image: MatLike) -> None:
    """Refuse an image that is not uint8: a 16-bit or float frame was taken silently, its
    values beyond a byte read as a lighting change on every frame (calibrating for good).
    The camera drivers convert theirs (GRAY16 to its high byte); a caller of the gate's
    own must too. The usual dtype is the uint8 singleton: one identity test a frame."""
    dtype = image.dtype
    if dtype is not UINT8 and dtype != UINT8:
        raise ValueError(f"the gate takes uint8 frames, not {dtype}")


def _learnt_elsewhere(unlearnt: Bools) -> Optional[Bytes]:
    """A mask of where the background may learn while calibrating: everywhere but
    `unlearnt` (where an object travels); None for everywhere."""
    if not unlearnt.any():
        return None
    elsewhere: Bytes = np.logical_not(unlearnt).view(np.uint8)
    return elsewhere


def inference_reason(
    now: float, motion: bool, last_motion: Optional[float], last_infer: float,
    cooldown_s: float, heartbeat_s: float,
) -> Optional[str]:
    """The rule after the detector: motion infers ("motion"), so does the cooldown_s after
    the last motion ("cooldown") and, when idle, a heartbeat every heartbeat_s after the last
    inference ("heartbeat"); None: not inferred. The benchmark's peers use it too."""
    if motion:
        return "motion"
    if last_motion is not None and now - last_motion <= cooldown_s + EPS:
        return "cooldown"
    if now - last_infer >= heartbeat_s - EPS:
        return "heartbeat"
    return None


class _Buffers:
    """Work images for one small-frame shape, allocated once and reused every frame."""

    def __init__(self, height: int, width: int) -> None:
        shape = (height, width)
        quarter = ((height + FIT_STEP - 1) // FIT_STEP, width)
        self.cur: Floats = np.zeros(shape, np.float32)
        self.prev: Floats = np.zeros(shape, np.float32)
        self.bg: Floats = np.zeros(shape, np.float32)
        self.bg_high: Floats = np.zeros(shape, np.float32)  # background dilated by a pixel
        self.bg_low: Floats = np.zeros(shape, np.float32)  # and eroded, at the last refresh
        self.bg_mid: Floats = np.zeros(shape, np.float32)  # their middle
        self.bg_half: Floats = np.zeros(shape, np.float32)  # and half their distance
        self.high: Floats = np.zeros(shape, np.float32)
        self.low: Floats = np.zeros(shape, np.float32)
        self.diff: Floats = np.zeros(shape, np.float32)  # scratch once _learn has read it
        self.work: Floats = np.zeros(shape, np.float32)
        self.dev: Floats = np.zeros(shape, np.float32)  # usual residual (nuisance peaks)
        # while calibrating (_learn_scenery): the residual's peak outside changes of an
        # object's size and inside them, when a pixel first moved in one (seconds into the
        # calibration: frames are no measure of time while the frame rate is not known
        # yet), and where such changes were found to stay in place
        self.scenery: Floats = np.zeros(shape, np.float32)
        self.object_peak: Floats = np.zeros(shape, np.float32)
        self.first_seen: Floats = np.zeros(shape, np.float32)
        self.in_place: Bytes = np.zeros(shape, np.uint8)
        self.guard: Floats = np.zeros(shape, np.float32)  # max(NUISANCE_K * dev, threshold)
        self.floor: Floats = np.zeros(shape, np.float32)  # the threshold the guard was made with
        self.still: Bytes = np.zeros(shape, np.uint8)  # frames changed but not moving
        self.mask: Bytes = np.zeros(shape, np.uint8)
        self.grown: Bytes = np.zeros(shape, np.uint8)
        self.last_grown: Bytes = np.zeros(shape, np.uint8)
        self.older_grown: Bytes = np.zeros(shape, np.uint8)
        self.spare: Bytes = np.zeros(shape, np.uint8)
        self.calm: Bytes = np.zeros(shape, np.uint8)  # not grown: where the scene is learnt
        self.clipped: Bytes = np.zeros(shape, np.uint8)  # background is a lower bound here
        self.d8: Bytes = np.zeros(quarter, np.uint8)
        self.side: Bytes = np.zeros(quarter, np.uint8)  # 0: dark half of the background, 1: bright
        self.label: Bytes = np.zeros(quarter, np.uint8)  # side, +2 where the last frame moved
        self.pixels = height * width
        # np.zeros memory is mapped only when first written, for some of these at the first
        # change or stopped object, minutes after start: write every page now.
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.fill(0)
        self.forget_scenery()

    def forget_scenery(self) -> None:
        """Drop the usual residual and what calibration learnt about it so far."""
        for learnt in (self.dev, self.scenery, self.object_peak, self.in_place):
            learnt.fill(0)
        self.first_seen.fill(np.inf)  # never


class MotionGate:
    """Decides per frame whether to infer; see the module docstring for how."""

    def __init__(self, cfg: GateConfig) -> None:
        self.cfg = cfg
        sigma = cfg.blur_sigma
        self._kernel: Optional[Floats] = None
        if sigma > 0:
            ksize = 2 * math.ceil(2 * sigma) + 1
            self._kernel = np.asarray(cv2.getGaussianKernel(ksize, sigma, cv2.CV_32F))
        self._square = np.ones((3, 3), np.uint8)
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
        self._picks: dict[tuple[int, int, int, int], tuple[Ints, Ints]] = {}
        # Set by the caller while it knows the light has just changed (a light sensor saw
        # it): a frame that would be motion is lighting instead, and becomes the background
        # as for a lighting change the gate sees itself. Unlike reset(), nothing that moves
        # meanwhile is learnt as scenery, so a person who switched the light on and walks
        # on is motion again as soon as the caller clears it.
        self.lighting_expected = False
        self.reset()

    # -- public API -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the scene (new source, reopened camera): the next frames calibrate."""
        self._buf: Optional[_Buffers] = None
        self._source: tuple[int, int] = (0, 0)
        self._age = 0  # frames since the scene was (re)learnt from scratch
        self._learnt_from = 0.0  # time of that first frame
        self._decayed_at = 0.0  # when the usual residual was last faded
        self._prev_now = 0.0  # time of the last frame
        self._interval = 1.0 / 15.0  # running mean of the frame interval
        self._thr = 0.0  # this frame's threshold
        self._guard_thr = 0.0  # the threshold buf.guard was made with
        self._fast_frames = 0  # frames left with the fast calibration alpha
        self._q = [0.0, 64.0, 128.0, 192.0, 255.0]  # background p4, p25, p50, p75, p96
        self._clipped = 0  # pixels flagged in buf.clipped
        self._bright = 0  # pixels of buf.side in the bright half
        self._still_tick = 0  # frames of motion since the last check for still regions
        self._hl_gain, self._hl_offset = 1.0, 0.0  # exposure change since _refresh_range
        self._range_max = 255.0  # the brightest background at _refresh_range
        self._bg_max = 255.0  # an upper bound of the background since
        self._absorbed = False  # still pixels were copied into the background
        self._moved = 0  # how many of the last frames in a row had changes (their grown masks)
        self._last_motion: Optional[float] = None
        self._last_infer: Optional[float] = None
        self._decided_at = 0.0  # time of the last frame decided
        self._holding = False  # an episode taken over (carry_on) is held open while calibrating

    @property
    def in_motion(self) -> bool:
        """A motion episode is under way: the last frame gated moved, or one did within
        cooldown_s before it. What motion_start and motion_end bracket: motion that comes
        and goes frame by frame (a flickering blob at the threshold) is one episode, not
        an event pair a frame."""
        last = self._last_motion
        return last is not None and self._decided_at - last <= self.cfg.cooldown_s + EPS

    @property
    def episode_end(self) -> Optional[float]:
        """When the last episode ends (or ended) on the gate's clock: cooldown_s after its
        last moving frame; None before any motion. The frame that finds it over comes up
        to a frame period later, a second at 1 fps: the caller stamps the end by this."""
        last = self._last_motion
        return None if last is None else last + self.cfg.cooldown_s

    def note_inferred(self, now: float) -> None:
        """The frame at `now` was inferred for another reason (a client's snap)."""
        self._last_infer = now

    def end_episode(self) -> None:
        """The caller ended the episode under way without this gate (it stopped seeing
        frames, or could not gate them): motion in a later frame opens a new one, and the
        cooldown after the old one is over."""
        self._last_motion = None
        self._holding = False

    def retune(self, cfg: GateConfig) -> bool:
        """Take `cfg` in place if it differs from the current settings only in RETUNABLE
        keys (a reload): the scene stays learnt and an episode under way goes on. False,
        nothing changed, if it needs a new gate."""
        changed = {key for key in GateConfig.model_fields
                   if getattr(cfg, key) != getattr(self.cfg, key)}
        if not changed <= RETUNABLE:
            return False
        self.cfg = cfg
        return True

    def carry_on(self, old: MotionGate) -> None:
        """Go on from `old`, which this new gate replaces (a reload that needs a new
        background): its episode, cooldown and heartbeat times go on, on the same clock.

        An episode under way is not ended by the swap: while this gate calibrates it
        cannot see motion, so the episode is held open through the calibration and ends
        cooldown_s after it unless motion is seen again. Meanwhile what changes is not
        taken for scenery (the moving object would be), only the residual around it."""
        if not (old.cfg.enabled and self.cfg.enabled):
            return  # a disabled gate has no episodes
        self._last_motion = old._last_motion
        self._last_infer = old._last_infer
        self._decided_at = old._decided_at
        self._holding = old.in_motion

    def update_bgr(self, frame: MatLike, now: float) -> GateVerdict:
        """Gate a full-resolution BGR uint8 frame captured at monotonic time `now`."""
        if not self.cfg.enabled:
            return DISABLED
        _check_bytes(frame)
        h, w = frame.shape[:2]
        size = self._small_size(w, h)
        small = cv2.resize(frame, size, None, 0.0, 0.0, SAMPLING)
        return self._update(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY), now, (w, h))

    def update_luma(
        self, luma: MatLike, now: float, source_size: Optional[tuple[int, int]] = None
    ) -> GateVerdict:
        """Gate a uint8 Y plane of any resolution (a YUYV or NV12 capture's, a reduced
        decode's) at monotonic time `now`; boxes are scaled to source_size=(w, h), by
        default the plane's own size. Strided planes (YUYV[..., 0]) are sampled in place."""
        if not self.cfg.enabled:
            return DISABLED
        _check_bytes(luma)
        if luma.ndim == 3:  # (h, w, 1); a colour picture's first channel is not its luma
            if luma.shape[2] != 1:
                raise ValueError(f"a luma plane has one channel, not {luma.shape[2]} channels")
            luma = luma[:, :, 0]
        h, w = luma.shape[:2]
        if not h or not w:  # a camera's size given with it says nothing of the plane's
            raise ValueError(f"a {w}x{h} luma plane has no pixels to gate")
        src = source_size or (w, h)
        size = self._small_size(*src)
        # Each plane is read twice: first a byte of every cache line of the sampled rows (a
        # tight loop that has many cache misses in flight at once), then the samples, which
        # are in cache by then. A capture's plane is not in cache: measured on 1080p Y and
        # YUYV planes, this makes the sampling ~20 % cheaper (on BGR frames it measured
        # slower, so update_bgr does not do it).
        step = luma.strides[1]
        if step != luma.itemsize:  # e.g. YUYV[..., 0]: OpenCV would copy it all
            pixels = _pixels(luma)
            if pixels is None:
                ys, xs = self._samples(w, h, size)
                # a column stride of 0 or less (np.broadcast_to, a flipped view): every column
                per_line = CACHE_LINE // step if step > 0 else 1
                luma[ys, :: max(1, per_line)]
                small = luma[ys[:, None], xs[None, :]]
            else:  # OpenCV samples the Y plane as the first channel of each pixel in place
                touch = (-(-w * step // CACHE_LINE), size[1])
                cv2.resize(pixels, touch, None, 0.0, 0.0, SAMPLING)
                small = cv2.extractChannel(cv2.resize(pixels, size, None, 0.0, 0.0, SAMPLING), 0)
        else:
            cv2.resize(luma, (-(-w // CACHE_LINE), size[1]), None, 0.0, 0.0, SAMPLING)
            small = cv2.resize(luma, size, None, 0.0, 0.0, SAMPLING)
        return self._update(small, now, src)

    # -- the pipeline -----------------------------------------------------------------------

    def _samples(self, width: int, height: int, size: tuple[int, int]) -> tuple[Ints, Ints]:
        """Rows and columns of a width x height plane that SAMPLING reads for `size`."""
        key = (width, height, *size)
        found = self._picks.get(key)
        if found is None:
            ys = np.minimum((2 * np.arange(size[1]) + 1) * height // (2 * size[1]), height - 1)
            xs = np.minimum((2 * np.arange(size[0]) + 1) * width // (2 * size[0]), width - 1)
            found = self._picks[key] = (ys, xs)
        return found

    def _small_size(self, width: int, height: int) -> tuple[int, int]:
        size = self._sizes.get((width, height))
        if size is None:
            if width <= 0 or height <= 0:  # checked once per size: sizes are cached
                raise ValueError(f"a {width}x{height} frame has no pixels to gate")
            rows = max(1, min(self.cfg.frame_height, height))
            size = (max(1, round(width * rows / height)), rows)
            self._sizes[(width, height)] = size
        return size

    def _update(self, small: MatLike, now: float, source: tuple[int, int]) -> GateVerdict:
        buf = self._buf
        self._age += 1
        if buf is not None and now < self._prev_now:
            self._shift_times(now - self._prev_now)
        if buf is None or buf.cur.shape != small.shape or source != self._source:
            buf = self._buf = _Buffers(*small.shape)
            self._source = source
            self._age, self._learnt_from = 1, now
            self._blur(small, buf.cur)
            self._calibrate(buf, now)
            self._prev_now = now
            return self._decide(now, False, "calibrating", 0.0, ())
        self._blur(small, buf.cur)
        if 0.0 < now - self._prev_now < 5.0:  # the frame interval, for counts of frames
            self._interval += 0.1 * (now - self._prev_now - self._interval)
        self._prev_now = now
        gain, offset = self._fit(buf)
        threshold = self._thr = self._threshold(gain)
        self._difference(buf, gain, offset)
        if abs(threshold - self._guard_thr) > 0.01 * threshold:
            self._guard(buf, threshold)
        cv2.compare(buf.diff, buf.guard, cv2.CMP_GT, buf.mask)
        changed = cv2.countNonZero(buf.mask)
        score = changed / buf.pixels
        calibrating = now - self._learnt_from < CALIBRATION_S - EPS
        if self._is_lighting(buf, gain, score, threshold):
            self._calibrate(buf, now)
            if not calibrating:
                return self._decide(now, False, "lighting", score, ())
            buf.forget_scenery()  # what was learnt was learnt under other light: start again
            self._learnt_from = now
            return self._decide(now, False, "calibrating", score, ())
        boxes: tuple[Box, ...] = ()
        if changed:
            cv2.dilate(buf.mask, self._square, buf.grown)
            if not calibrating:
                boxes = self._boxes(buf)
                if boxes and self.lighting_expected:
                    self._calibrate(buf, now)
                    return self._decide(now, False, "lighting", score, ())
        self._learn(buf, changed, gain, offset, threshold, now, calibrating)
        quiet = "calibrating" if calibrating else "idle"
        return self._decide(now, bool(boxes), quiet, score, boxes)

    def _shift_times(self, step: float) -> None:
        """Supplied time stepped back (a media clock restarted by a replaced file): move
        every stored time by the same step, so this frame comes right after the last one.
        Left as they were, the calibration, the cooldown and in_motion would wait for a
        time that has already passed: calibrating or in cooldown for as long as the step,
        the next event unseen and the episode never ended."""
        self._learnt_from += step
        self._decayed_at += step
        self._decided_at += step
        self._prev_now += step
        if self._last_motion is not None:
            self._last_motion += step
        if self._last_infer is not None:
            self._last_infer += step

    def _blur(self, small: MatLike, out: Floats) -> None:
        if self._kernel is None:
            np.copyto(out, small, casting="unsafe")
        else:
            cv2.sepFilter2D(small, cv2.CV_32F, self._kernel, self._kernel, out)

    def _fit(self, buf: _Buffers) -> tuple[float, float]:
        """Gain and offset with cur ~= gain * bg + offset, robust to moving objects.

        The median difference in the dark half of the background is the fit at the dark
        half's median (p25), the bright half's at p75; two points give the line. Every
        FIT_STEP-th row is enough, and pixels that moved in the last frame are left out.
        First, unless the background is clipped (a lower bound there), the clipped mean
        difference of each half (module docstring): both within FIT_SKIP, the exposure is
        the same."""
        step = FIT_STEP
        if not self._clipped:
            cv2.addWeighted(buf.cur[::step], CLIP_SCALE, buf.bg[::step], -CLIP_SCALE, 128.0,
                            buf.d8, cv2.CV_8U)  # saturates at +-FIT_CLIP
            count, n_bright = buf.d8.size, self._bright
            total = cv2.sumElems(buf.d8)[0] - 128.0 * count
            in_bright = (cv2.mean(buf.d8, buf.side)[0] - 128.0) * n_bright if n_bright else 0.0
            skip = FIT_SKIP * CLIP_SCALE  # sums of the scaled difference, per pixel
            if abs(in_bright) <= skip * n_bright and abs(total - in_bright) <= skip * (
                count - n_bright
            ):
                return 1.0, 0.0
        cv2.addWeighted(buf.cur[::step], 1.0, buf.bg[::step], -1.0, 128.0, buf.d8, cv2.CV_8U)
        label = buf.side
        if self._moved:
            np.bitwise_and(buf.last_grown[::step], 2, out=buf.label)
            cv2.add(buf.label, buf.side, buf.label)
            label = buf.label
        hist = cv2.calcHist([label, buf.d8], [0, 1], None, [2, 256], [0, 2, 0, 256])
        dark, bright = _medians(hist, 0.05 * buf.d8.size)
        if (dark is None or -FIT_SKIP < dark < FIT_SKIP) and (
            bright is None or -FIT_SKIP < bright < FIT_SKIP
        ):  # both halves as they were: the same exposure (or nothing to fit)
            return 1.0, 0.0
        q25, q75 = self._q[1], self._q[3]
        if dark is not None and bright is not None and q75 - q25 >= 8.0:
            gain = 1.0 + (bright - dark) / (q75 - q25)
            return gain, dark - (gain - 1.0) * q25
        only = dark if dark is not None else bright  # one side: an offset is all we know
        return 1.0, 0.0 if only is None else only

    def _difference(self, buf: _Buffers, gain: float, offset: float) -> None:
        """diff = how far each pixel is outside the range the background predicts for it
        within one pixel (so edges that sway a pixel are not motion); negative inside.

        The background's 3x3 max and min are refreshed every few frames and brought to the
        current exposure in between (both commute with a positive gain and an offset). The
        usual case is |cur - middle| - half width; near clipping the ends are needed."""
        g, o = gain * self._hl_gain, gain * self._hl_offset + offset
        if gain < 0.995 and self._bg_max >= SATURATED:  # darker: the truth behind a clipped
            # background may be brighter than it now predicts
            cv2.compare(buf.bg, SATURATED, cv2.CMP_GE, buf.spare)  # type: ignore[call-overload]
            cv2.bitwise_or(buf.clipped, buf.spare, buf.clipped)
            self._clipped = cv2.countNonZero(buf.clipped)
        if not self._clipped and g * self._range_max + o <= 255.0:
            if g == 1.0 and o == 0.0:  # the exposure of the last refresh: no rebasing
                cv2.absdiff(buf.cur, buf.bg_mid, buf.diff)
                cv2.subtract(buf.diff, buf.bg_half, buf.diff)
                return
            cv2.addWeighted(buf.bg_mid, g, buf.bg_mid, 0.0, o, buf.work)
            cv2.absdiff(buf.cur, buf.work, buf.diff)
            cv2.scaleAdd(buf.bg_half, -g, buf.diff, buf.diff)
            return
        cv2.addWeighted(buf.bg_high, g, buf.bg_high, 0.0, o, buf.high)
        cv2.addWeighted(buf.bg_low, g, buf.bg_low, 0.0, o, buf.low)
        cv2.min(buf.low, 255.0, buf.low)  # type: ignore[call-overload]
        if self._clipped:  # only darker than the bound is a change there
            buf.high[buf.clipped > 0] = 1e6
        cv2.subtract(buf.cur, buf.high, buf.work)
        cv2.subtract(buf.low, buf.cur, buf.diff)
        cv2.max(buf.diff, buf.work, buf.diff)

    def _threshold(self, gain: float) -> float:
        if not CONTRAST_STRETCH:
            return float(self.cfg.threshold)
        span = max((self._q[4] - self._q[0]) * gain, MIN_RANGE)
        return self.cfg.threshold * min(span, 255.0) / 255.0

    def _is_lighting(self, buf: _Buffers, gain: float, score: float, threshold: float) -> bool:
        """A whole-frame change: exposure out of range, most pixels changed after the fit,
        or nearly every pixel changed before it and a good part still after it."""
        if not 1.0 / MAX_GAIN <= gain <= MAX_GAIN or score > self.cfg.lighting_threshold:
            return True
        if score <= LIGHTING_RESIDUAL:
            return False
        cv2.absdiff(buf.cur, buf.bg, buf.work)
        cv2.compare(buf.work, threshold, cv2.CMP_GT, buf.spare)  # type: ignore[call-overload]
        return cv2.countNonZero(buf.spare) > self.cfg.lighting_threshold * buf.pixels

    def _boxes(self, buf: _Buffers) -> tuple[Box, ...]:
        """Boxes of the changed regions larger than min_area, in source pixels. A small one
        must overlap the last frame's changes too: rain and snow streaks do not, objects do."""
        contours, _ = cv2.findContours(buf.grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        h, w = buf.grown.shape
        sw, sh = self._source
        fx, fy = sw / w, sh / h
        min_area = self.cfg.min_area
        found = []
        for contour in contours:
            area = cv2.contourArea(contour)
            if area <= min_area:
                continue
            x, y, bw, bh = cv2.boundingRect(contour)
            if area < PERSIST_AREA * min_area and not self._confirmed(buf, x, y, bw, bh):
                continue
            found.append((area, (
                int(x * fx), int(y * fy),
                min(sw, math.ceil((x + bw) * fx)), min(sh, math.ceil((y + bh) * fy)),
            )))
        if len(found) > MAX_BOXES:
            found = sorted(found, key=lambda item: item[0], reverse=True)[:MAX_BOXES]
        return tuple(sorted(box for _, box in found))

    def _confirmed(self, buf: _Buffers, x: int, y: int, w: int, h: int) -> bool:
        """A small blob counts if it is strong for where it is (a small object has contrast;
        a leaf at the edge of a swaying bush is no stronger than the bush usually is) or has
        been there for the last two frames too (rain streaks rarely overlap three times)."""
        ys, xs = slice(y, y + h), slice(x, x + w)
        now = buf.grown[ys, xs]
        _, peak, _, _ = cv2.minMaxLoc(buf.diff[ys, xs], now)
        _, usual, _, _ = cv2.minMaxLoc(buf.dev[ys, xs], now)
        if peak >= STRONG * max(self._thr, NUISANCE_K * usual):
            return True
        if self._moved < 2:
            return False
        both = cv2.bitwise_and(now, buf.last_grown[ys, xs])
        cv2.bitwise_and(both, buf.older_grown[ys, xs], both)
        return 2 * cv2.countNonZero(both) >= cv2.countNonZero(now)

    # -- learning ---------------------------------------------------------------------------

    def _calibrate(self, buf: _Buffers, now: float) -> None:
        """Take the current frame as the background (start, new source, lighting change)."""
        np.copyto(buf.bg, buf.cur)
        np.copyto(buf.prev, buf.cur)
        buf.still.fill(0)
        buf.clipped.fill(0)
        self._clipped = 0
        self._guard_thr = 0.0  # rebuilt with the next frame's threshold
        self._decayed_at = now
        self._fast_frames = CALIBRATION_FRAMES
        self._moved = 0
        self._refresh(buf)

    def _refresh(self, buf: _Buffers) -> None:
        """Background percentiles (contrast range, the fit's anchors), its dark/bright split."""
        cv2.convertScaleAbs(buf.bg, buf.spare)  # a histogram of bytes is far cheaper
        hist = cv2.calcHist([buf.spare], [0], None, [256], [0, 256]).ravel()
        cum = np.cumsum(hist)
        low, high = CONTRAST_PERCENTILES
        qs = np.searchsorted(cum, np.array([low, 25.0, 50.0, 75.0, high]) / 100.0 * cum[-1])
        self._q = [float(q) for q in qs]
        np.copyto(buf.side, buf.bg[::FIT_STEP] > self._q[2], casting="unsafe")
        self._bright = cv2.countNonZero(buf.side)
        self._refresh_range(buf)

    def _refresh_range(self, buf: _Buffers) -> None:
        """The background's 3x3 max and min, the range each pixel may sway into."""
        cv2.dilate(buf.bg, self._square, buf.bg_high)
        cv2.erode(buf.bg, self._square, buf.bg_low)
        cv2.addWeighted(buf.bg_high, 0.5, buf.bg_low, 0.5, 0.0, buf.bg_mid)
        cv2.subtract(buf.bg_high, buf.bg_mid, buf.bg_half)
        self._range_max = self._bg_max = float(buf.bg_high.max())
        self._hl_gain, self._hl_offset = 1.0, 0.0
        self._absorbed = False

    def _learn(
        self, buf: _Buffers, changed: int, gain: float, offset: float, threshold: float,
        now: float, calibrating: bool,
    ) -> None:
        """Update the usual residual, the background and the still-region clocks."""
        learn_where: Optional[Bytes] = None  # a mask: not where an object passes by
        if calibrating and not self._holding:  # what keeps moving while the scene is
            # learnt is scenery (foliage); not in an episode carried over, where it moves
            learn_where = self._learn_scenery(buf, changed, threshold, now)
        else:  # peaks of what stayed under the threshold; a passer-by is above it
            elapsed = now - self._decayed_at
            if elapsed >= DECAY_STEP_S or elapsed < 0:
                fade = 0.5 ** (max(0.0, elapsed) / NUISANCE_HALF_LIFE_S)
                np.multiply(buf.dev, fade, out=buf.dev)
                self._decayed_at = now
            if changed:  # diff is not read again this frame: the new peaks go there
                cv2.max(buf.dev, buf.diff, buf.diff)
                cv2.bitwise_not(buf.grown, buf.calm)  # not even the fringe of a change
                cv2.copyTo(buf.diff, buf.calm, buf.dev)
            else:
                cv2.max(buf.dev, buf.diff, buf.dev)
            if calibrating:  # holding an episode: what moves is not learnt here either
                found = self._passing_objects(buf, changed, threshold)
                learn_where = None if found is None else _learnt_elsewhere(found[1])
        alpha = self.cfg.alpha
        if self._fast_frames > 0:
            self._fast_frames -= 1
            alpha = CALIBRATION_ALPHA
        same = gain == 1.0 and offset == 0.0
        if not same:  # the background follows the exposure at once (its anchors too)
            self._q = [q * gain + offset for q in self._q]
            self._hl_gain = gain * self._hl_gain
            self._hl_offset = gain * self._hl_offset + offset
        # an upper bound of the background, to know when a gain could push it past white
        self._bg_max = min(255.0, (1.0 - alpha) * (gain * self._bg_max + offset) + alpha * 255.0)
        plain = (not changed or calibrating) and learn_where is None and not self._clipped
        if plain and same:
            cv2.accumulateWeighted(buf.cur, buf.bg, alpha)
        elif plain and gain * self._bg_max + offset <= 255.0:  # rebase and learn in one pass
            keep = 1.0 - alpha
            cv2.addWeighted(buf.bg, keep * gain, buf.cur, alpha, keep * offset, buf.bg)
        else:
            if not same:
                cv2.addWeighted(buf.bg, gain, buf.bg, 0.0, offset, buf.bg)
                if gain * 255.0 + offset > 255.0:
                    cv2.min(buf.bg, 255.0, buf.bg)  # type: ignore[call-overload]
            if self._clipped:
                self._unclip(buf)
            if learn_where is not None:  # the background under an object passing by is
                # not learnt from it: with the fast alpha, at a low frame rate, its last
                # position stayed behind as a ghost once calibration was over
                cv2.accumulateWeighted(buf.cur, buf.bg, alpha, learn_where)
            elif not changed or calibrating:
                cv2.accumulateWeighted(buf.cur, buf.bg, alpha)
            else:
                self._learn_around(buf, gain, offset, threshold, alpha)
        if changed:
            self._moved += 1
            buf.grown, buf.last_grown, buf.older_grown = (
                buf.older_grown, buf.grown, buf.last_grown
            )
        else:
            self._moved = 0
        if self._age % REFRESH_FRAMES == 0:
            self._refresh(buf)
        elif self._age % RANGE_FRAMES == 0 or self._fast_frames or self._absorbed:
            self._refresh_range(buf)
        if calibrating or self._age % GUARD_FRAMES == 0:
            self._guard(buf, threshold)
        buf.cur, buf.prev = buf.prev, buf.cur

    def _learn_scenery(
        self, buf: _Buffers, changed: int, threshold: float, now: float
    ) -> Optional[Bytes]:
        """The usual residual while calibrating: each pixel's peak, but not where an
        object passes by (_passing_objects). A change of an object's size is scenery only
        once it is found in place: touching pixels that moved IN_PLACE_S before. A swaying
        bush stays where it is; a parcel on a conveyor moves on, and taken for scenery it
        would blind the gate to the next one on its path. Returns where the background may
        learn (_learnt_elsewhere): not where an object travels (moves, not in place).
        Calibration frames only: their cost does not count."""
        found = self._passing_objects(buf, changed, threshold)
        travelling = None
        if found is None:
            np.maximum(buf.scenery, buf.diff, out=buf.scenery)
        else:
            regions, moved = found
            passing = regions > 0
            np.maximum(buf.scenery, buf.diff, out=buf.scenery, where=~passing)
            np.maximum(buf.object_peak, buf.diff, out=buf.object_peak, where=moved)
            since = now - self._learnt_from
            np.minimum(buf.first_seen, since, out=buf.first_seen, where=moved)
            earlier = passing & (buf.first_seen <= since - IN_PLACE_S)
            settled = np.unique(regions[earlier])
            buf.in_place[np.isin(regions, settled[settled > 0])] = 1
            travelling = moved & (buf.in_place == 0)
        np.copyto(buf.dev, buf.scenery)
        np.maximum(buf.dev, buf.object_peak, out=buf.dev, where=buf.in_place > 0)
        return None if travelling is None else _learnt_elsewhere(travelling)

    def _passing_objects(
        self, buf: _Buffers, changed: int, threshold: float
    ) -> Optional[tuple[npt.NDArray[np.int32], Bools]]:
        """While calibrating: the changes of an object's size (PERSIST_AREA min_areas),
        labelled by region, and where they moved since the last frame; None if there are
        none. Where such a change did not move is taken for the ghost a passing object
        left in the background still being learnt: the background takes the frame there
        at once. (So is the inside of a slow object that overlaps itself from frame to
        frame; it can stay behind as a ghost where the object was last seen while
        calibrating. Taking only regions with no moved pixel for ghosts keeps it out, but
        a swaying bush's still parts were then learnt too slowly: foliage at 1280x720
        skipped 70 % of idle frames, not all.)"""
        if not changed:
            return None
        objects = np.zeros(buf.grown.shape, np.uint8)
        contours, _ = cv2.findContours(buf.grown, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        large = [c for c in contours if cv2.contourArea(c) >= PERSIST_AREA * self.cfg.min_area]
        if not large:
            return None
        cv2.drawContours(objects, large, -1, (255,), cv2.FILLED)
        regions = np.asarray(cv2.connectedComponents(objects)[1], np.int32)  # no copy
        passing = regions > 0
        moved: Bools = passing & (np.abs(buf.cur - buf.prev) > threshold / 2.0)
        ghost = passing & ~moved
        if ghost.any():
            np.copyto(buf.bg, buf.cur, where=ghost)
            self._absorbed = True
            self._bg_max = 255.0  # until _refresh_range measures it again
        return regions, moved

    def _guard(self, buf: _Buffers, threshold: float) -> None:
        """The per-pixel threshold; rebuilt every few frames (the usual residual moves
        slowly) and whenever the contrast-relative threshold moves."""
        if threshold != self._guard_thr:  # max with an image: half the cost of with a scalar
            buf.floor.fill(threshold)
        np.multiply(buf.dev, NUISANCE_K, out=buf.guard)
        cv2.max(buf.guard, buf.floor, buf.guard)
        self._guard_thr = threshold

    def _learn_around(
        self, buf: _Buffers, gain: float, offset: float, threshold: float, alpha: float
    ) -> None:
        """Learn the background where nothing changed; absorb what has stopped."""
        if not self._moved:  # every pixel was unchanged until now
            buf.still.fill(0)
            self._still_tick = 0
        cv2.accumulateWeighted(buf.cur, buf.bg, alpha, buf.calm)  # made by _learn
        self._absorb_still(buf, gain, offset, threshold)

    def _unclip(self, buf: _Buffers) -> None:
        """Where the background was clipped, it is only a lower bound: raise it to what is
        seen now, and drop the flag once the pixel is seen unclipped and unchanged."""
        clipped = buf.clipped > 0
        brighter = clipped & (buf.cur > buf.bg)
        if brighter.any():
            np.copyto(buf.bg, buf.cur, where=brighter)
            self._absorbed = True
            self._bg_max = 255.0  # until _refresh_range measures it again
        buf.clipped[clipped & (buf.cur < SATURATED) & (buf.mask == 0)] = 0
        self._clipped = cv2.countNonZero(buf.clipped)

    def _absorb_still(self, buf: _Buffers, gain: float, offset: float, threshold: float) -> None:
        """Copy changed pixels that have not moved for STILL_S into the background.

        Checked every STILL_STEP frames of motion (counting those frames at once): the
        last frame, brought to this one's exposure, shows what moved."""
        self._still_tick += 1
        if self._still_tick < STILL_STEP:
            return
        step, self._still_tick = self._still_tick, 0
        moved = buf.diff  # read for the last time by _learn
        if gain == 1.0 and offset == 0.0:
            cv2.absdiff(buf.cur, buf.prev, moved)
        else:
            cv2.addWeighted(buf.prev, gain, buf.prev, 0.0, offset, moved)
            cv2.absdiff(buf.cur, moved, moved)
        cv2.compare(moved, threshold / 2.0, cv2.CMP_LE, buf.spare)  # type: ignore[call-overload]
        cv2.bitwise_and(buf.spare, buf.mask, buf.spare)  # changed and not moving
        cv2.add(buf.still, step, buf.still)  # type: ignore[call-overload]
        cv2.bitwise_and(buf.still, buf.spare, buf.still)
        frames = min(250, math.ceil(STILL_S / self._interval))
        # still >= frames (a byte threshold costs a third of a compare with a scalar)
        cv2.threshold(buf.still, frames - 1, 255, cv2.THRESH_BINARY, buf.spare)
        if cv2.countNonZero(buf.spare):
            cv2.copyTo(buf.cur, buf.spare, buf.bg)
            self._absorbed = True
            self._bg_max = 255.0  # until _refresh_range measures it again

    # -- the verdict ------------------------------------------------------------------------

    def _decide(
        self, now: float, motion: bool, quiet: str, score: float, boxes: tuple[Box, ...]
    ) -> GateVerdict:
        """Motion infers; so does the cooldown after it and the heartbeat when idle."""
        cfg = self.cfg
        self._decided_at = now
        if self._last_infer is None:
            # The first heartbeat is due when calibration ends: a scene that already holds
            # something when the daemon starts (or the camera comes back) is looked at once
            # then, not a whole heartbeat_s later.
            self._last_infer = now - max(0.0, cfg.heartbeat_s - CALIBRATION_S)
        if self._holding:  # an episode carried over: held open while this gate is blind
            if quiet == "calibrating":
                self._last_motion = now
            else:
                self._holding = False
        reason = inference_reason(now, motion, self._last_motion, self._last_infer,
                                  cfg.cooldown_s, cfg.heartbeat_s)
        if motion:
            self._last_motion = now
        if reason is None:
            return UNCHANGED[quiet] if score == 0.0 else GateVerdict(False, quiet, score, False, ())
        self._last_infer = now
        return GateVerdict(True, reason, score, motion, boxes)

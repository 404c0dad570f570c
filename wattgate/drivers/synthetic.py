"""Deterministic generated scenes: the demo camera, test fixtures and the gate benchmark.

A scene is a background rendered once, objects moving on key-framed paths, lighting that
changes over time, optional rain or swaying foliage, and sensor noise. Frame i is a pure
function of (name, width, height, fps, seed, i): everything that varies per frame is computed
from i (noise comes from a field rendered once and read at an offset drawn from a generator
seeded with (seed, name, i)), so frames are the same on every run and in any order.

Timelines are written in seconds and converted with fps; geometry is relative to the frame
size. The demo renders 640x480 at 15 fps on a small board, benchmarks render 1920x1080, so a
frame costs a copy, a few saturating adds and small blends, never a per-pixel Python loop.

`Scene.events` is the ground truth a gate is judged by: the frames in which at least
VISIBLE_FRACTION of a moving object is in view. Nuisance (noise, lighting, rain, foliage) is
never an event: a gate should skip it.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt

Image = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]

FACE_PNG = Path(__file__).resolve().parent.parent / "data" / "face.png"
VISIBLE_FRACTION = 0.05  # an object is an event once this much of it is in view
NOISE_MARGIN = 16  # the noise field is this much larger on each side; frames read it shifted


class UnknownScene(KeyError):
    """A scene name that is not in SCENES; the message lists the known names."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Scene:
    """One generated scene; `frame(i)` renders frame i (wrapping at `length`)."""

    name: str
    width: int
    height: int
    fps: float
    length: int  # frames in one pass
    events: tuple[tuple[int, int], ...]  # [first, last]: VISIBLE_FRACTION of an object in view
    render: Callable[[int], Image] = field(repr=False, compare=False)
    description: str = ""
    # frames where any part of an object is in view (events plus the slivers around them):
    # neither an event to catch nor an idle frame to skip when a gate is scored
    presence: tuple[tuple[int, int], ...] = ()

    def frame(self, index: int) -> Image:
        """BGR uint8 (height, width, 3); a new array the caller may modify."""
        return self.render(index % self.length)


@dataclass(frozen=True)
class Sprite:
    """An object to composite: colour plus coverage (0..1)."""

    bgr: Image
    alpha: Floats  # (h, w)
    inverse: Floats  # 1 - alpha, kept so a paste is one blendLinear call

    @staticmethod
    def of(bgr: Image, alpha: Floats) -> Sprite:
        alpha = np.ascontiguousarray(alpha, dtype=np.float32)
        return Sprite(np.ascontiguousarray(bgr), alpha, (1.0 - alpha).astype(np.float32))


@dataclass(frozen=True)
class Track:
    """A sprite on a piecewise-linear path of (frame, x, y) keys (top-left corner)."""

    sprite: Sprite
    keys: tuple[tuple[int, float, float], ...]
    bob: float = 0.0  # vertical bounce of a walk, in pixels
    # False: drawn and counted as presence, never as an event (what moves while a gate
    # first learns the scene, which no gate can be asked to catch)
    scored: bool = True

    def position(self, index: int) -> Optional[tuple[int, int]]:
        first, last = self.keys[0][0], self.keys[-1][0]
        if index < first or index > last:
            return None
        frames = [k[0] for k in self.keys]
        x = float(np.interp(index, frames, [k[1] for k in self.keys]))
        y = float(np.interp(index, frames, [k[2] for k in self.keys]))
        y -= self.bob * abs(math.sin(index * 0.45))
        return round(x), round(y)

    def in_view(self, index: int, width: int, height: int) -> float:
        """The fraction of the object itself (its coverage, not its box) inside the frame."""
        pos = self.position(index)
        if pos is None:
            return 0.0
        alpha = self.sprite.alpha
        h, w = alpha.shape
        x0, y0 = max(0, -pos[0]), max(0, -pos[1])
        x1, y1 = min(w, width - pos[0]), min(h, height - pos[1])
        if x1 <= x0 or y1 <= y0:
            return 0.0
        return float(alpha[y0:y1, x0:x1].sum()) / float(alpha.sum())


Light = Callable[[Image, slice, slice], Image]  # lights a region of the unlit scene
Overlay = Callable[[Image, int], None]  # draws on a frame in place (rain, foliage)


def _identity(patch: Image, ys: slice, xs: slice) -> Image:
    return patch


def field_light(gain: Floats) -> Light:
    """Lighting as a per-pixel, per-channel gain (h, w, 3): lamps, dusk, a window."""

    def light(patch: Image, ys: slice, xs: slice) -> Image:
        return np.clip(patch * gain[ys, xs], 0, 255).astype(np.uint8)

    return light


def infrared_light(gain: Floats, mix: tuple[float, float, float]) -> Light:
    """Night mode: IR-cut filter out, so a grey image whose brightness is a different
    mix of the channels (red-heavy, as skin and foliage reflect near-IR) under an
    illuminator that is brightest in the centre."""
    weights = np.array(mix, dtype=np.float32)

    def light(patch: Image, ys: slice, xs: slice) -> Image:
        grey = (patch.astype(np.float32) @ weights) * gain[ys, xs]
        return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)

    return light


class Renderer:
    """Renders frame i from precomputed parts; holds no state that changes per frame."""

    def __init__(
        self,
        base: Image,
        key: Sequence[int],
        lights: Sequence[Light] = (_identity,),
        mix: Optional[npt.NDArray[np.float64]] = None,
        gain: Optional[npt.NDArray[np.float64]] = None,
        tracks: Sequence[Track] = (),
        overlays: Sequence[Overlay] = (),
        noise: float = 3.0,
    ) -> None:
        self.base = base
        self.key = list(key)
        self.lights = list(lights)
        self.lit = [light(base, slice(None), slice(None)) for light in self.lights]
        self.mix = mix
        self.gain = gain
        self.tracks = list(tracks)
        self.overlays = list(overlays)
        h, w = base.shape[:2]
        rng = np.random.default_rng([*self.key, 1])
        field_ = rng.normal(0.0, noise, (h + 2 * NOISE_MARGIN, w + 2 * NOISE_MARGIN, 3))
        field_ = np.rint(np.clip(field_, -4 * noise, 4 * noise))
        self.noise_up = np.clip(field_, 0, 255).astype(np.uint8)
        self.noise_down = np.clip(-field_, 0, 255).astype(np.uint8)

    def weights(self, index: int) -> list[float]:
        if self.mix is None:
            return [1.0]
        return [float(v) for v in self.mix[index]]

    def _light(self, patch: Image, ys: slice, xs: slice, weights: list[float]) -> Image:
        lit = [(w, self.lights[k](patch, ys, xs)) for k, w in enumerate(weights) if w > 0]
        if len(lit) == 1:
            return lit[0][1]
        acc = sum(w * p.astype(np.float32) for w, p in lit)
        return np.clip(acc, 0, 255).astype(np.uint8)

    def __call__(self, index: int) -> Image:
        weights = self.weights(index)
        used = [k for k, w in enumerate(weights) if w > 0]
        if len(used) == 1:
            frame = self.lit[used[0]].copy()
        else:
            a, b = used[0], used[1]
            frame = cast(Image, cv2.addWeighted(
                self.lit[a], weights[a], self.lit[b], weights[b], 0.0
            ))
        for track in self.tracks:
            self._paste(frame, track, index, weights)
        for overlay in self.overlays:
            overlay(frame, index)
        if self.gain is not None and self.gain[index] != 1.0:
            cv2.convertScaleAbs(frame, dst=frame, alpha=float(self.gain[index]))
        self._add_noise(frame, index)
        return frame

    def _paste(self, frame: Image, track: Track, index: int, weights: list[float]) -> None:
        pos = track.position(index)
        if pos is None:
            return
        sprite = track.sprite
        sh, sw = sprite.alpha.shape
        fh, fw = frame.shape[:2]
        x0, y0 = max(pos[0], 0), max(pos[1], 0)
        x1, y1 = min(pos[0] + sw, fw), min(pos[1] + sh, fh)
        if x1 <= x0 or y1 <= y0:
            return
        ys, xs = slice(y0, y1), slice(x0, x1)
        cy = slice(y0 - pos[1], y1 - pos[1])
        cx = slice(x0 - pos[0], x1 - pos[0])
        patch = cv2.blendLinear(
            sprite.bgr[cy, cx], self.base[ys, xs], sprite.alpha[cy, cx], sprite.inverse[cy, cx]
        )
        frame[ys, xs] = self._light(cast(Image, patch), ys, xs, weights)

    def _add_noise(self, frame: Image, index: int) -> None:
        h, w = frame.shape[:2]
        dy, dx = np.random.default_rng([*self.key, 2, index]).integers(0, 2 * NOISE_MARGIN, 2)
        cv2.add(frame, self.noise_up[dy : dy + h, dx : dx + w], dst=frame)
        cv2.subtract(frame, self.noise_down[dy : dy + h, dx : dx + w], dst=frame)


# -- judging a gate against the ground truth ------------------------------------------------

# Recall's rule: an event is caught when the model runs (`infer`) on one of its first
# CATCH_FRAMES frames (GateScore.caught, .recall), i.e. the model sees the object while it
# is still entering. A gate that sends the model a later frame only is not credited with the
# event; that looser count is kept apart as GateScore.inferred_any / .any_frame_ratio.
CATCH_FRAMES = 2


class Verdict(Protocol):
    """What score_gate needs from a gate's verdict (wattgate.policies.gating.GateVerdict)."""

    @property
    def infer(self) -> bool: ...

    @property
    def motion(self) -> bool: ...

    @property
    def reason(self) -> str: ...


@dataclass(frozen=True)
class GateScore:
    """How a gate did on one scene: events caught, idle frames skipped."""

    caught: tuple[bool, ...]  # per event: inferred on one of its first CATCH_FRAMES frames
    idle: int  # frames with nothing in view, outside the cooldown after presence, no heartbeat
    skipped: int  # of those, frames the gate did not send to the model
    inferred_any: tuple[bool, ...] = ()  # per event: any of its frames inferred, however late

    @property
    def recall(self) -> float:
        """Events inferred on one of their first CATCH_FRAMES frames: the recall target."""
        return sum(self.caught) / len(self.caught) if self.caught else 1.0

    @property
    def any_frame_ratio(self) -> float:
        """Events with any frame inferred, however late: looser than recall, for information
        (the gap between the two is events the model saw only after they had entered)."""
        return sum(self.inferred_any) / len(self.inferred_any) if self.inferred_any else 1.0

    @property
    def skip_ratio(self) -> float:
        return self.skipped / self.idle if self.idle else 1.0


def score_gate(scene: Scene, verdicts: Sequence[Verdict], cooldown_s: float) -> GateScore:
    """Score one pass of verdicts (verdicts[i] for scene.frame(i)).

    Idle frames exclude the presence intervals (an object partly in view is neither idle nor
    an event yet), the cooldown_s after each (counted from the first empty frame, which may
    still show the blur of the last sliver), heartbeats, which the gate owes by design, and
    calibration, which would flatter it."""
    if len(verdicts) < scene.length:
        raise ValueError(f"need {scene.length} verdicts for scene {scene.name!r}")
    busy = np.zeros(scene.length, bool)
    cooldown = math.ceil(cooldown_s * scene.fps)
    for first, last in scene.presence or scene.events:
        busy[first : last + 2 + cooldown] = True
    caught = tuple(
        any(v.infer for v in verdicts[first : min(last + 1, first + CATCH_FRAMES)])
        for first, last in scene.events
    )
    inferred_any = tuple(
        any(v.infer for v in verdicts[first : last + 1]) for first, last in scene.events
    )
    idle = [
        i for i in range(scene.length)
        if not busy[i] and verdicts[i].reason not in ("heartbeat", "calibrating")
    ]
    skipped = sum(not verdicts[i].infer for i in idle)
    return GateScore(caught, len(idle), skipped, inferred_any)


# -- drawing helpers ------------------------------------------------------------------------


class Canvas:
    """Relative-coordinate drawing on a float32 BGR image, so scenes scale to any size."""

    def __init__(self, width: int, height: int, rng: np.random.Generator) -> None:
        self.w, self.h, self.rng = width, height, rng
        self.img: Floats = np.zeros((height, width, 3), np.float32)

    def px(self, x: float, y: float) -> tuple[int, int]:
        return round(x * self.w), round(y * self.h)

    def rect(self, x0: float, y0: float, x1: float, y1: float, bgr: Sequence[float]) -> None:
        cv2.rectangle(self.img, self.px(x0, y0), self.px(x1, y1), tuple(bgr), -1)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, bgr: Sequence[float]) -> None:
        cv2.ellipse(
            self.img, self.px(cx, cy), (max(1, round(rx * self.w)), max(1, round(ry * self.h))),
            0, 0, 360, tuple(bgr), -1,
        )

    def smooth_noise(self, cells: int, amount: float) -> Floats:
        """A low-frequency multiplicative texture (plaster, grass, clouds)."""
        grid = self.rng.normal(0.0, 1.0, (cells, max(2, cells * self.w // self.h)))
        up = cv2.resize(grid.astype(np.float32), (self.w, self.h), interpolation=cv2.INTER_CUBIC)
        return (1.0 + amount * up).astype(np.float32)

    def finish(self, grain: float = 4.0) -> Image:
        """Add static fine texture (the scene's own, not sensor noise) and quantise."""
        texture = self.rng.normal(0.0, grain, (self.h, self.w, 1)).astype(np.float32)
        return np.clip(self.img + texture, 0, 255).astype(np.uint8)


ONE = (1.0,)  # colour for drawing into single-channel coverage masks


def colour_of(rng: np.random.Generator, low: int, high: int) -> tuple[float, float, float]:
    b, g, r = rng.integers(low, high, 3).tolist()
    return float(b), float(g), float(r)


def _bump(w: int, h: int, cx: float, cy: float, radius: float) -> Floats:
    """A smooth Gaussian spot of light, 1 at (cx, cy), radius relative to the width."""
    ys = (np.arange(h, dtype=np.float32)[:, None] - cy * h) / (radius * w)
    xs = (np.arange(w, dtype=np.float32)[None, :] - cx * w) / (radius * w)
    spot: Floats = np.exp(-0.5 * (xs * xs + ys * ys)).astype(np.float32)
    return spot


def room(width: int, height: int, rng: np.random.Generator) -> Image:
    """An office: plaster wall, window, shelf of books, picture, desk, plant, wooden floor."""
    c = Canvas(width, height, rng)
    shade = np.linspace(1.08, 0.88, height, dtype=np.float32)[:, None, None]
    c.img[:] = np.array([150, 172, 190], np.float32) * shade
    c.img *= c.smooth_noise(6, 0.05)[..., None]
    c.rect(0, 0.74, 1, 1, (70, 100, 140))
    for k in range(9):
        y = 0.74 + k * 0.03
        c.rect(0, y, 1, y + 0.004, (50, 75, 105))
    c.rect(0.05, 0.10, 0.31, 0.52, (60, 60, 65))
    c.rect(0.06, 0.12, 0.30, 0.50, (235, 222, 205))
    c.rect(0.06, 0.12, 0.30, 0.20, (240, 200, 150))
    c.rect(0.175, 0.12, 0.185, 0.50, (70, 70, 75))
    c.rect(0.06, 0.305, 0.30, 0.315, (70, 70, 75))
    c.rect(0.38, 0.28, 0.56, 0.64, (40, 55, 75))
    for shelf in (0.40, 0.52, 0.64):
        x = 0.39
        while x < 0.54:
            bw = float(rng.uniform(0.008, 0.02))
            colour = colour_of(rng, 30, 220)
            c.rect(x, shelf - float(rng.uniform(0.07, 0.10)), x + bw, shelf - 0.005, colour)
            x += bw + 0.002
        c.rect(0.38, shelf - 0.005, 0.56, shelf + 0.005, (30, 40, 55))
    c.rect(0.63, 0.16, 0.83, 0.38, (30, 45, 60))
    for _ in range(7):
        x, y = float(rng.uniform(0.645, 0.78)), float(rng.uniform(0.175, 0.33))
        c.rect(x, y, x + 0.04, y + 0.04, colour_of(rng, 40, 230))
    c.rect(0.58, 0.56, 0.97, 0.60, (55, 85, 120))
    c.rect(0.60, 0.60, 0.615, 0.80, (45, 70, 100))
    c.rect(0.94, 0.60, 0.955, 0.80, (45, 70, 100))
    c.rect(0.70, 0.46, 0.80, 0.56, (35, 35, 35))
    c.rect(0.71, 0.47, 0.79, 0.54, (140, 110, 70))
    c.rect(0.88, 0.62, 0.94, 0.74, (50, 80, 150))
    for _ in range(14):
        x, y = float(rng.uniform(0.86, 0.96)), float(rng.uniform(0.48, 0.62))
        c.ellipse(x, y, 0.018, 0.03, (40, float(rng.uniform(100, 160)), 50))
    return c.finish()


def outdoor(width: int, height: int, rng: np.random.Generator) -> Image:
    """A street: sky, hills, houses, a far road (small objects), a pavement and grass."""
    c = Canvas(width, height, rng)
    sky = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    c.img[:] = np.array([225, 185, 150], np.float32) * (1 - sky) + np.array(
        [200, 200, 195], np.float32
    ) * sky
    c.img *= c.smooth_noise(4, 0.03)[..., None]
    hills = np.array(
        [c.px(x, 0.40 - 0.05 * math.sin(6.0 * x + 1.0)) for x in np.linspace(0, 1, 24)]
        + [c.px(1, 0.5), c.px(0, 0.5)],
        np.int32,
    )
    cv2.fillPoly(c.img, [hills], (95, 120, 110))
    for k in range(6):
        x = 0.04 + k * 0.16 + float(rng.uniform(-0.02, 0.02))
        top = float(rng.uniform(0.30, 0.38))
        c.rect(x, top, x + 0.11, 0.47, colour_of(rng, 90, 200))
        for wy in (top + 0.03, top + 0.09):
            c.rect(x + 0.02, wy, x + 0.045, wy + 0.03, (60, 55, 50))
            c.rect(x + 0.065, wy, x + 0.09, wy + 0.03, (60, 55, 50))
    c.rect(0, 0.47, 1, 0.53, (95, 95, 100))
    for k in range(10):
        c.rect(k * 0.1 + 0.02, 0.497, k * 0.1 + 0.06, 0.503, (210, 215, 220))
    grass = c.smooth_noise(10, 0.12)[0.53 * height < np.arange(height)]
    c.img[np.arange(height) > 0.53 * height] = np.array([55, 135, 90], np.float32) * grass[
        ..., None
    ]
    c.rect(0, 0.78, 1, 0.95, (150, 160, 165))
    for k in range(12):
        c.rect(k * 0.085, 0.78, k * 0.085 + 0.004, 0.95, (110, 118, 122))
    return c.finish(5.0)


def factory(width: int, height: int, rng: np.random.Generator) -> Image:
    """An inspection station: concrete floor, a dark belt across the middle between rails."""
    c = Canvas(width, height, rng)
    c.img[:] = (120, 125, 128)
    c.img *= c.smooth_noise(8, 0.06)[..., None]
    c.rect(0, 0.36, 1, 0.66, (48, 50, 52))
    for y in (0.34, 0.66):
        c.rect(0, y, 1, y + 0.02, (150, 160, 170))
    for k in range(8):  # the belt's splices
        x = k * 0.125 + 0.06
        c.rect(x, 0.36, x + 0.004, 0.66, (60, 62, 64))
    return c.finish(4.0)


@functools.lru_cache(maxsize=1)
def face_sprite() -> Image:
    """The bundled face (BGR, square), see wattgate/data/README.md."""
    img = cv2.imread(str(FACE_PNG), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{FACE_PNG}: missing or unreadable (package data)")
    return cast(Image, img)


def _soften(alpha: Floats) -> Floats:
    return cast(Floats, cv2.GaussianBlur(alpha, (3, 3), 0.8))


def person(height: int, rng: np.random.Generator, upper_body: bool = False) -> Sprite:
    """A walking person: the bundled face on a head, striped shirt, arms and (full body) legs.

    upper_body draws someone close to the camera (head and torso fill the sprite), so the
    face is large enough for a face detector looking at the whole frame."""
    head = round(height * (0.30 if upper_body else 0.14))
    width = round(head * (1.9 if upper_body else 2.3))
    img = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    shirt = rng.integers(60, 200, 3).astype(np.float32)
    cx = width // 2
    torso_top = round(head * 1.05)
    torso_bottom = height if upper_body else round(height * 0.58)
    half = round(width * (0.46 if upper_body else 0.30))
    cv2.rectangle(img, (cx - half, torso_top), (cx + half, torso_bottom), tuple(shirt.tolist()), -1)
    cv2.rectangle(alpha, (cx - half, torso_top), (cx + half, torso_bottom), ONE, -1)
    stripe = max(2, height // 24)
    for y in range(torso_top, torso_bottom, 2 * stripe):
        img[y : y + stripe, cx - half : cx + half + 1] *= 0.55
    if not upper_body:
        arm = max(2, width // 9)
        for x in (cx - half - arm, cx + half):
            cv2.rectangle(img, (x, torso_top + arm), (x + arm, round(height * 0.55)),
                          tuple((shirt * 0.8).tolist()), -1)
            cv2.rectangle(alpha, (x, torso_top + arm), (x + arm, round(height * 0.55)), ONE, -1)
        leg = max(2, round(half * 0.8))
        for x in (cx - half, cx + half - leg):
            cv2.rectangle(img, (x, torso_bottom), (x + leg, height), (70, 50, 40), -1)
            cv2.rectangle(alpha, (x, torso_bottom), (x + leg, height), ONE, -1)
    neck = round(head * 0.22)
    cv2.rectangle(img, (cx - neck, round(head * 0.8)), (cx + neck, torso_top), (120, 150, 200), -1)
    cv2.rectangle(alpha, (cx - neck, round(head * 0.8)), (cx + neck, torso_top), ONE, -1)
    face = cv2.resize(face_sprite(), (head, head), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:head, 0:head].astype(np.float32)
    r = ((xx - head / 2 + 0.5) / (head * 0.47)) ** 2 + ((yy - head / 2 + 0.5) / (head * 0.5)) ** 2
    face_alpha = np.clip((1.0 - r) * 6.0, 0.0, 1.0)[..., None]
    x0 = cx - head // 2
    region = img[0:head, x0 : x0 + head]
    region[:] = region * (1 - face_alpha) + face.astype(np.float32) * face_alpha
    alpha[0:head, x0 : x0 + head] = np.maximum(alpha[0:head, x0 : x0 + head], face_alpha[..., 0])
    return Sprite.of(np.clip(img, 0, 255).astype(np.uint8), _soften(alpha))


def car(width: int, rng: np.random.Generator) -> Sprite:
    """A small distant car: light body, windows reflecting the sky, small wheels.

    At the gate's 100 rows it is a few pixels: strong dark/light detail inside it would
    average out to the road's grey under the blur, as a real distant car's does."""
    height = max(4, round(width * 0.5))
    img = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    body = colour_of(rng, 200, 240)  # light paint: a red car has about the road's luma
    roof = (round(width * 0.2), 0, round(width * 0.75), round(height * 0.45))
    cv2.rectangle(img, roof[:2], roof[2:], body, -1)
    cv2.rectangle(alpha, roof[:2], roof[2:], ONE, -1)
    cv2.rectangle(img, (roof[0] + 2, 2), (roof[2] - 2, roof[3]), (170, 160, 150), -1)
    cv2.rectangle(img, (0, round(height * 0.4)), (width - 1, round(height * 0.85)), body, -1)
    cv2.rectangle(alpha, (0, round(height * 0.4)), (width - 1, round(height * 0.85)), ONE, -1)
    for x in (round(width * 0.22), round(width * 0.78)):
        cv2.circle(img, (x, round(height * 0.85)), max(1, height // 7), (30, 30, 30), -1)
        cv2.circle(alpha, (x, round(height * 0.85)), max(1, height // 7), ONE, -1)
    return Sprite.of(np.clip(img, 0, 255).astype(np.uint8), _soften(alpha))


def parcel(width: int, height: int, rng: np.random.Generator) -> Sprite:
    """A cardboard box seen from above, a strip of tape along it and a label."""
    img = np.zeros((height, width, 3), np.float32)
    img[:] = (90.0 + float(rng.uniform(-10, 10)), 150.0, 190.0)
    img[height // 2 - max(1, height // 12) : height // 2 + max(1, height // 12)] = (150, 190, 215)
    cv2.rectangle(img, (width // 8, height // 6), (width // 3, height // 3), (235, 235, 235), -1)
    alpha = np.ones((height, width), np.float32)
    return Sprite.of(np.clip(img, 0, 255).astype(np.uint8), alpha)


def bush(width: int, height: int, rng: np.random.Generator) -> Sprite:
    """Foliage: leaf clusters of mixed greens around a trunk."""
    img = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    cv2.rectangle(img, (width // 2 - width // 20, height // 2), (width // 2 + width // 20, height),
                  (40, 60, 80), -1)
    cv2.rectangle(alpha, (width // 2 - width // 20, height // 2),
                  (width // 2 + width // 20, height), ONE, -1)
    for _ in range(160):
        x = width * float(rng.uniform(0.12, 0.88))
        y = height * float(rng.uniform(0.05, 0.72))
        axes = (max(2, round(width * float(rng.uniform(0.04, 0.10)))),
                max(2, round(height * float(rng.uniform(0.03, 0.07)))))
        colour = (float(rng.uniform(20, 70)), float(rng.uniform(80, 170)),
                  float(rng.uniform(30, 90)))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(img, (round(x), round(y)), axes, angle, 0, 360, colour, -1)
        cv2.ellipse(alpha, (round(x), round(y)), axes, angle, 0, 360, ONE, -1)
    return Sprite.of(np.clip(img, 0, 255).astype(np.uint8), _soften(alpha))


def swaying(sprite: Sprite, x: int, y: int, amplitude: float, period: float) -> Overlay:
    """Foliage in wind: the sprite sheared about its base by two incommensurate sines."""
    h, w = sprite.alpha.shape

    def draw(frame: Image, index: int) -> None:
        t = index / period
        shift = amplitude * (math.sin(2 * math.pi * t) + 0.35 * math.sin(2 * math.pi * 2.7 * t))
        m = np.array([[1.0, shift / h, -shift], [0.0, 1.0, 0.0]], np.float32)
        fh, fw = frame.shape[:2]
        x1, y1 = min(x + w, fw), min(y + h, fh)
        bgr = cv2.warpAffine(sprite.bgr, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(sprite.alpha, m, (w, h))
        ys, xs = slice(y, y1), slice(x, x1)
        a = alpha[: y1 - y, : x1 - x]
        frame[ys, xs] = cv2.blendLinear(bgr[: y1 - y, : x1 - x], frame[ys, xs], a, 1.0 - a)

    return draw


def raining(key: Sequence[int], density: float = 0.0006) -> Overlay:
    """Rain: thin, faint, slanted streaks at new random places every frame."""

    def draw(frame: Image, index: int) -> None:
        h, w = frame.shape[:2]
        rng = np.random.default_rng([*key, 3, index])
        n = round(density * 640 * 480)  # the same rain at any resolution
        layer = np.zeros_like(frame)
        length = rng.uniform(0.04, 0.08, n) * h
        x0 = rng.uniform(0, w, n)
        y0 = rng.uniform(-0.05 * h, h, n)
        pts = np.stack([x0, y0, x0 + 0.15 * length, y0 + length], axis=1).round().astype(np.int32)
        level = rng.integers(0, 3, n)
        thickness = max(1, round(w / 640))
        for k, value in enumerate((15.0, 25.0, 35.0)):
            lines = pts[level == k].reshape(-1, 2, 2)
            cv2.polylines(layer, list(lines), False, (value, value, value), thickness)
        cv2.add(frame, layer, dst=frame)

    return draw


# -- scenes ---------------------------------------------------------------------------------


class Story:
    """Builds one scene: frames from seconds, crossings, lighting schedules, then the Scene."""

    def __init__(self, name: str, width: int, height: int, fps: float, seed: int,
                 seconds: float) -> None:
        self.name, self.width, self.height, self.fps = name, width, height, fps
        self.key = [seed, zlib.crc32(name.encode())]
        self.rng = np.random.default_rng([*self.key, 0])
        self.length = max(1, round(seconds * fps))
        self.tracks: list[Track] = []

    def f(self, seconds: float) -> int:
        return round(seconds * self.fps)

    def cross(self, sprite: Sprite, start: float, end: float, y: float, rightwards: bool = True,
              bob: float = 0.0, scored: bool = True) -> None:
        """Walk a sprite across the whole view between start and end seconds (y relative)."""
        sw = sprite.alpha.shape[1]
        left, right = -sw - 1.0, self.width + 1.0
        a, b = (left, right) if rightwards else (right, left)
        top = y * self.height
        keys = ((self.f(start), a, top), (self.f(end), b, top))
        self.tracks.append(Track(sprite, keys, bob, scored))

    def visit(self, sprite: Sprite, keys: Sequence[tuple[float, float, float]], bob: float = 0.0
              ) -> None:
        """A sprite on (seconds, x, y) keys, x and y relative to the frame."""
        self.tracks.append(Track(sprite, tuple(
            (self.f(t), x * self.width, y * self.height) for t, x, y in keys
        ), bob))

    def steps(self, changes: Sequence[tuple[float, int]], lights: int) -> npt.NDArray[np.float64]:
        """A mix that switches to light `k` at each (seconds, k); starts with light 0."""
        mix = np.zeros((self.length, lights))
        current = np.zeros(self.length, np.int64)
        for t, k in sorted(changes):
            current[self.f(t):] = k
        mix[np.arange(self.length), current] = 1.0
        return mix

    def intervals(self, least: float, scored_only: bool) -> tuple[tuple[int, int], ...]:
        """[first, last] runs of frames where some object (scored_only: some scored one)
        has more than `least` in view."""
        tracks = [track for track in self.tracks if track.scored or not scored_only]
        frames = sorted({
            i for track in tracks for i in range(track.keys[0][0], track.keys[-1][0] + 1)
            if i < self.length and track.in_view(i, self.width, self.height) > least
        })
        out: list[tuple[int, int]] = []
        for i in frames:
            if out and i == out[-1][1] + 1:
                out[-1] = (out[-1][0], i)
            else:
                out.append((i, i))
        return tuple(out)

    def scene(self, renderer: Renderer, description: str) -> Scene:
        return Scene(self.name, self.width, self.height, self.fps, self.length,
                     self.intervals(VISIBLE_FRACTION - 1e-9, True), renderer, description,
                     self.intervals(0.0, False))

    def renderer(
        self,
        base: Image,
        lights: Sequence[Light] = (_identity,),
        mix: Optional[npt.NDArray[np.float64]] = None,
        gain: Optional[npt.NDArray[np.float64]] = None,
        overlays: Sequence[Overlay] = (),
        noise: float = 3.0,
    ) -> Renderer:
        return Renderer(base, self.key, lights, mix, gain, self.tracks, overlays, noise)


def _walker(story: Story, scale: float = 0.62) -> Sprite:
    return person(round(story.height * scale), story.rng)


def _empty(s: Story) -> Scene:
    base = room(s.width, s.height, s.rng)
    return s.scene(s.renderer(base, noise=3.5), "a still room; sensor noise only")


def _person(s: Story) -> Scene:
    base = room(s.width, s.height, s.rng)
    s.cross(_walker(s), 3.0, 7.0, 0.30, True, bob=0.01 * s.height)
    s.cross(_walker(s), 12.0, 16.0, 0.28, False, bob=0.01 * s.height)
    return s.scene(s.renderer(base), "a person crosses the room, twice")


def _small_object(s: Story) -> Scene:
    base = outdoor(s.width, s.height, s.rng)
    vehicle = car(round(s.width * 0.06), s.rng)
    s.cross(vehicle, 3.0, 7.0, 0.455, True)
    s.cross(vehicle, 12.0, 15.0, 0.465, False)
    return s.scene(s.renderer(base), "a small distant car drives along the far road, twice")


def _sunrise(s: Story) -> Scene:
    base = room(s.width, s.height, s.rng)
    dawn = np.empty((s.height, s.width, 3), np.float32)
    dawn[:] = (0.20, 0.15, 0.11)
    dawn *= (0.8 + 0.5 * _bump(s.width, s.height, 0.18, 0.3, 0.5))[..., None]
    ramp = np.clip(np.arange(s.length) / max(1, s.length - 1), 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)
    mix = np.stack([1 - ramp, ramp], axis=1)
    s.cross(_walker(s), 9.0, 13.0, 0.30, True, bob=0.01 * s.height)
    s.cross(_walker(s), 20.0, 24.0, 0.30, False, bob=0.01 * s.height)
    return s.scene(
        s.renderer(base, lights=[field_light(dawn), _identity], mix=mix),
        "dawn to daylight over the whole scene; a person crosses twice",
    )


def _room_lights(s: Story) -> tuple[Light, Light]:
    """Ceiling lamp on (bright centre) and off (dim light from the window side)."""
    lamp = 0.45 + 0.75 * _bump(s.width, s.height, 0.5, -0.1, 0.55)
    window = 0.10 + 0.30 * _bump(s.width, s.height, 0.18, 0.3, 0.45)
    on = np.repeat(lamp[..., None], 3, axis=2)
    off = np.repeat(window[..., None], 3, axis=2) * np.array([1.15, 1.0, 0.85], np.float32)
    return field_light(np.minimum(on, 1.2).astype(np.float32)), field_light(off.astype(np.float32))


def _lights(s: Story) -> Scene:
    base = room(s.width, s.height, s.rng)
    on, off = _room_lights(s)
    flicker = 1.0 / s.fps
    mix = s.steps([(6.0, 1), (12.0, 0), (12.0 + flicker, 1), (12.0 + 2 * flicker, 0),
                   (18.0, 1), (21.0, 0)], 2)
    s.cross(_walker(s), 3.0, 5.5, 0.30, True, bob=0.01 * s.height)
    s.cross(_walker(s), 7.5, 10.5, 0.30, False, bob=0.01 * s.height)
    s.cross(_walker(s), 14.0, 17.0, 0.30, True, bob=0.01 * s.height)
    return s.scene(
        s.renderer(base, lights=[on, off], mix=mix),
        "ceiling lights go off and on (with a tube's flicker); people cross lit and dark",
    )


def _ir_switch(s: Story) -> Scene:
    base = room(s.width, s.height, s.rng)
    night = (0.55 + 0.6 * _bump(s.width, s.height, 0.5, 0.5, 0.45)).astype(np.float32)
    ir = infrared_light(night, (0.20, 0.30, 0.55))
    mix = s.steps([(8.0, 1), (18.0, 0)], 2)
    gain = np.ones(s.length)
    for t, start in ((8.0, 0.55), (18.0, 1.6)):
        k = np.arange(s.length - s.f(t))
        gain[s.f(t):] *= 1.0 + (start - 1.0) * np.exp(-k / 4.0)
    s.cross(_walker(s), 3.0, 6.0, 0.30, True, bob=0.01 * s.height)
    s.cross(_walker(s), 11.0, 14.0, 0.30, False, bob=0.01 * s.height)
    s.cross(_walker(s), 20.0, 23.0, 0.30, True, bob=0.01 * s.height)
    return s.scene(
        s.renderer(base, lights=[_identity, ir], mix=mix, gain=gain, noise=4.0),
        "day/night switch: colour to near-IR grey and back, exposure settling after each",
    )


def _auto_exposure(s: Story) -> Scene:
    base = room(s.width, s.height, s.rng)
    gain = np.ones(s.length)
    level, target, next_change = 1.0, 1.0, 0
    for i in range(s.length):
        if i >= next_change:
            target = float(s.rng.uniform(0.7, 1.3))
            next_change = i + s.f(float(s.rng.uniform(0.5, 1.5)))
        level += (target - level) * 0.35
        gain[i] = level
    s.cross(_walker(s), 4.0, 8.0, 0.30, True, bob=0.01 * s.height)
    s.cross(_walker(s), 13.0, 17.0, 0.30, False, bob=0.01 * s.height)
    return s.scene(s.renderer(base, gain=gain),
                   "exposure hunting between -30 % and +30 %; a person crosses twice")


def _rain(s: Story) -> Scene:
    base = outdoor(s.width, s.height, s.rng)
    base = (base * np.float32(0.7)).astype(np.uint8)
    s.cross(_walker(s), 6.0, 10.0, 0.32, True, bob=0.01 * s.height)
    s.cross(_walker(s), 14.0, 18.0, 0.32, False, bob=0.01 * s.height)
    return s.scene(s.renderer(base, overlays=[raining(s.key)], noise=4.0),
                   "steady rain on a street; a person crosses twice")


def _foliage(s: Story) -> Scene:
    base = outdoor(s.width, s.height, s.rng)
    shrub = bush(round(s.width * 0.30), round(s.height * 0.50), s.rng)
    sway = swaying(shrub, round(s.width * 0.68), round(s.height * 0.02),
                   amplitude=0.012 * s.width, period=1.3 * s.fps)
    s.cross(_walker(s, 0.5), 8.0, 12.0, 0.42, True, bob=0.01 * s.height)
    return s.scene(
        s.renderer(base, overlays=[sway]),
        "a bush sways in the top-right corner all the time (nuisance, not an event); "
        "a person crosses once",
    )


def _conveyor(s: Story) -> Scene:
    base = factory(s.width, s.height, s.rng)
    box = parcel(round(s.width * 0.12), round(s.height * 0.2), s.rng)
    s.cross(box, 0.0, 1.8, 0.41, scored=False)  # while a gate first learns the scene
    for start in (5.0, 11.0, 17.0, 23.0):
        s.cross(box, start, start + 2.0, 0.41)
    return s.scene(
        s.renderer(base),
        "parcels ride a belt across the view along the same strip, one every 6 s; one "
        "crosses while the gate learns the scene",
    )


def _office(s: Story) -> Scene:
    base = room(s.width, s.height, s.rng)
    on, off = _room_lights(s)
    mix = s.steps([(70.0, 1), (88.0, 0)], 2)
    visitor = person(round(s.height * 1.05), s.rng, upper_body=True)
    bob = 0.006 * s.height
    s.cross(visitor, 15.0, 19.5, 0.12, True, bob=bob)
    s.visit(visitor, [(48.0, 1.02, 0.10), (50.0, 0.55, 0.10), (51.0, 0.53, 0.11),
                      (52.5, 0.56, 0.10), (54.5, 1.02, 0.12)], bob=bob)
    s.cross(visitor, 100.0, 104.5, 0.12, False, bob=bob)
    return s.scene(
        s.renderer(base, lights=[on, off], mix=mix),
        "the demo: an office, mostly empty; someone walks past three times, the lights go "
        "off for a while",
    )


SCENES: dict[str, tuple[Callable[[Story], Scene], float]] = {
    "office": (_office, 120.0),
    "empty": (_empty, 20.0),
    "sunrise": (_sunrise, 30.0),
    "lights": (_lights, 24.0),
    "ir-switch": (_ir_switch, 24.0),
    "person": (_person, 20.0),
    "small-object": (_small_object, 20.0),
    "rain": (_rain, 20.0),
    "foliage": (_foliage, 20.0),
    "auto-exposure": (_auto_exposure, 20.0),
    "conveyor": (_conveyor, 30.0),
}
"""name -> (builder, seconds in one pass)."""


def make_scene(name: str, width: int = 640, height: int = 480, fps: float = 15.0,
               seed: int = 0) -> Scene:
    """Build scene `name`; UnknownScene (a KeyError) lists the known names."""
    try:
        builder, seconds = SCENES[name]
    except KeyError:
        known = ", ".join(sorted(SCENES))
        raise UnknownScene(f"unknown scene {name!r}; known scenes: {known}") from None
    if width < 16 or height < 16 or fps <= 0:
        raise ValueError(f"scene {name!r}: need width, height >= 16 and fps > 0")
    return builder(Story(name, width, height, fps, seed, seconds))

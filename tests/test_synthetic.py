"""Generated scenes: determinism, ground truth, the face sprite, and scoring a gate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from wattgate.drivers.synthetic import (
    FACE_PNG,
    SCENES,
    Scene,
    UnknownScene,
    face_sprite,
    make_scene,
    score_gate,
)

NUISANCE_ONLY = {"empty"}


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


@pytest.mark.parametrize("name", sorted(SCENES))
def test_frames_are_a_pure_function_of_the_index(name: str) -> None:
    one, two = make_scene(name), make_scene(name)
    picks = [0, 7, one.length // 2, one.length - 1]
    early = {i: one.frame(i) for i in picks}
    for i in reversed(picks):  # another instance, another order
        assert np.array_equal(two.frame(i), early[i]), i
    assert np.array_equal(one.frame(one.length + 7), early[7]), "index wraps at length"
    frame = one.frame(3)
    assert frame.shape == (480, 640, 3) and frame.dtype == np.uint8
    frame[:] = 0  # the caller owns what it gets
    assert one.frame(3).any()


def test_seed_and_name_change_the_scene() -> None:
    base = make_scene("person").frame(5)
    assert not np.array_equal(make_scene("person", seed=1).frame(5), base)
    assert not np.array_equal(make_scene("empty").frame(5), base)


def test_consecutive_frames_differ_by_sensor_noise_only() -> None:
    scene = make_scene("empty")
    a, b = scene.frame(10).astype(int), scene.frame(11).astype(int)
    diff = a - b
    assert 2.0 < diff.std() < 8.0  # two frames of sigma 3.5 noise
    assert abs(diff.mean()) < 0.5


@pytest.mark.parametrize(("width", "height"), [(320, 240), (1280, 720), (1920, 1080)])
def test_scenes_render_at_any_size(width: int, height: int) -> None:
    scene = make_scene("office", width, height)
    assert scene.frame(scene.events[0][0] + 20).shape == (height, width, 3)
    assert (scene.width, scene.height) == (width, height)


def test_timelines_are_in_seconds() -> None:
    slow, fast = make_scene("person", fps=15.0), make_scene("person", fps=30.0)
    assert fast.length == 2 * slow.length
    for (a, b), (c, d) in zip(slow.events, fast.events):
        assert abs(c / 30.0 - a / 15.0) < 0.2 and abs(d / 30.0 - b / 15.0) < 0.2


@pytest.mark.parametrize("name", sorted(SCENES))
def test_event_intervals_are_sane(name: str) -> None:
    scene = make_scene(name)
    assert 150 <= scene.length <= 2000 and scene.description
    if name in NUISANCE_ONLY:
        assert scene.events == () and scene.presence == ()
        return
    assert scene.events, "labelled scenes have something to catch"
    for events in (scene.events, scene.presence):
        flat = [i for interval in events for i in interval]
        assert flat == sorted(flat), "sorted and disjoint"
        assert all(0 <= a <= b < scene.length for a, b in events)
    for event in scene.events:
        assert any(p[0] <= event[0] and event[1] <= p[1] for p in scene.presence)
        assert event[1] - event[0] >= 10
        assert event[0] >= 2.5 * scene.fps, "events start after the gate has calibrated"
    busy = sum(b - a + 1 for a, b in scene.presence)
    assert busy <= 0.6 * scene.length, "idle stretches around the events"


def test_the_office_is_idle_most_of_the_time() -> None:
    scene = make_scene("office")
    busy = sum(b - a + 1 for a, b in scene.presence)
    assert len(scene.events) >= 3
    assert 0.05 <= busy / scene.length <= 0.15


def test_events_mean_something_is_in_view() -> None:
    scene = make_scene("person")
    empty = scene.frame(5).astype(int)
    first, last = scene.events[0]
    middle = scene.frame((first + last) // 2).astype(int)
    assert (np.abs(middle - empty).max(axis=2) > 40).mean() > 0.03
    before = scene.frame(scene.presence[0][0] - 1).astype(int)
    assert (np.abs(before - empty).max(axis=2) > 40).mean() < 0.001


def test_unknown_scene_is_a_key_error_listing_the_known_names() -> None:
    with pytest.raises(KeyError) as info:
        make_scene("ofice")
    assert isinstance(info.value, UnknownScene)
    message = str(info.value)
    assert "'ofice'" in message and all(name in message for name in SCENES)
    assert info.value.args[0] == message


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="width"):
        make_scene("empty", width=8)


def test_face_sprite_is_bundled_and_small() -> None:
    face = face_sprite()
    assert face.shape == (64, 64, 3) and face.dtype == np.uint8
    assert FACE_PNG.stat().st_size < 10_000
    assert 60 < face.mean() < 200


def test_the_bundled_face_detector_finds_the_face_in_the_office() -> None:
    from wattgate.drivers.inference import Model

    model = Model.load(None)
    scene = make_scene("office")
    assert not model.infer(scene.frame(10)).detections, "nobody in the empty office"
    for first, last in scene.events:
        frame = scene.frame((first + last) // 2)
        found = model.infer(frame).detections
        assert found and max(d.score for d in found) > 0.6, (first, last)


@dataclass(frozen=True)
class Fake:
    infer: bool
    motion: bool
    reason: str


def test_score_gate_counts_recall_and_idle_skips() -> None:
    scene = make_scene("person")
    always = [Fake(True, True, "motion")] * scene.length
    never = [Fake(False, False, "idle")] * scene.length
    assert score_gate(scene, always, 2.0).recall == 1.0
    assert score_gate(scene, always, 2.0).skip_ratio == 0.0
    assert score_gate(scene, never, 2.0).recall == 0.0
    assert score_gate(scene, never, 2.0).skip_ratio == 1.0
    late = list(never)
    for first, last in scene.events:
        late[first + 2 : last + 1] = [Fake(True, True, "motion")] * (last - first - 1)
    assert score_gate(scene, late, 2.0).recall == 0.0, "the third frame is too late"
    beats = [Fake(True, False, "heartbeat")] * scene.length
    assert score_gate(scene, beats, 2.0).idle == 0, "heartbeats are not held against a gate"
    with pytest.raises(ValueError):
        score_gate(scene, never[:10], 2.0)


def test_scene_is_a_frozen_value() -> None:
    scene = make_scene("empty")
    assert isinstance(scene, Scene)
    with pytest.raises(AttributeError):
        scene.length = 3  # type: ignore[misc]

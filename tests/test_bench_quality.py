"""gate-quality's recall follows the benchmark's rule: an event is caught only when the model
runs on one of its first 2 frames, whichever gate (ours or a peer) decided it."""

from __future__ import annotations

from bench.peers import PeerVerdict
from bench.quality import _score
from wattgate.drivers.synthetic import CATCH_FRAMES, make_scene

IDLE = PeerVerdict(False, "idle", False)


def test_an_event_inferred_only_late_is_not_recalled() -> None:
    """Inferring an event on its 10th frame only is too late for `recall` (the target); the
    looser any-frame figure, reported beside it, still counts it."""
    scene = make_scene("person", 320, 240, 15.0)
    verdicts = [IDLE] * scene.length
    for first, _ in scene.events:
        verdicts[first + 9] = PeerVerdict(True, "motion", True)
    score = _score(scene, verdicts, 1.0)
    assert score["recall"] == 0.0 and score["caught"] == 0
    assert score["recall_any_frame"] == 1.0 and score["inferred_any_frame"] == len(scene.events)


def test_recall_counts_inference_not_motion_on_the_first_frames() -> None:
    """What counts is that the model ran on an early frame (a cooldown or heartbeat
    inference sees the object as well as a motion one); motion reported on the first frame
    but not sent to the model sees nothing."""
    scene = make_scene("person", 320, 240, 15.0)
    inferred = [IDLE] * scene.length
    seen_not_sent = [IDLE] * scene.length
    for first, _ in scene.events:
        inferred[first + CATCH_FRAMES - 1] = PeerVerdict(True, "cooldown", False)
        seen_not_sent[first] = PeerVerdict(False, "idle", True)
    assert _score(scene, inferred, 1.0)["recall"] == 1.0
    assert _score(scene, seen_not_sent, 1.0)["recall"] == 0.0

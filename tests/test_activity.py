"""The activity state machine: every transition, with caller-supplied times (no sleeps)."""

from __future__ import annotations

from wattgate.policies.activity import ActivityMachine, Transition


def machine(cooldown: float = 2.0, wake_on: frozenset[str] = frozenset({"motion", "snap"})
            ) -> ActivityMachine:
    return ActivityMachine(cooldown, wake_on)


def test_starts_idle() -> None:
    m = machine()
    assert (m.state, m.settings_state, m.remaining(0.0)) == ("idle", "idle", None)
    assert m.quiet(5.0) is None and m.tick(100.0) is None


def test_motion_wakes_idle_and_changes_settings() -> None:
    m = machine()
    change = m.trigger("motion", 1.0)
    assert change == Transition("idle", "active", "motion", 1.0)
    assert change.settings_changed
    assert (m.state, m.settings_state, m.since) == ("active", "active", 1.0)
    assert m.trigger("motion", 1.1) is None  # already active: only the timer moves


def test_snap_wakes_idle() -> None:
    m = machine()
    change = m.trigger("snap", 3.0)
    assert change is not None and (change.after, change.reason) == ("active", "snap")


def test_wake_on_filters_triggers() -> None:
    m = machine(wake_on=frozenset({"snap"}))
    assert m.trigger("motion", 1.0) is None and m.state == "idle"
    assert m.trigger("snap", 2.0) is not None and m.state == "active"


def test_quiet_frame_turns_active_into_cooldown_without_a_settings_change() -> None:
    m = machine()
    m.trigger("motion", 1.0)
    change = m.quiet(1.07)
    assert change == Transition("active", "cooldown", "no motion", 1.07)
    assert not change.settings_changed
    assert m.settings_state == "active"
    assert m.remaining(1.5) == 1.5


def test_motion_during_cooldown_revives_active() -> None:
    m = machine()
    m.trigger("motion", 1.0)
    m.quiet(1.5)
    change = m.trigger("motion", 2.5)
    assert change == Transition("cooldown", "active", "motion again", 2.5)
    assert not change.settings_changed
    assert m.remaining(3.0) == 1.5  # the cooldown counts from the last trigger


def test_cooldown_ends_after_cooldown_s_without_motion() -> None:
    m = machine(cooldown=2.0)
    m.trigger("motion", 10.0)
    m.quiet(10.1)
    assert m.quiet(11.9) is None and m.tick(11.99) is None
    change = m.quiet(12.0)  # exactly cooldown_s after the last motion
    assert change is not None and (change.before, change.after) == ("cooldown", "idle")
    assert change.settings_changed and change.reason == "no motion for 2 s"
    assert m.state == "idle" and m.remaining(13.0) is None


def test_tick_ends_active_when_frames_stop() -> None:
    m = machine(cooldown=2.0)
    m.trigger("motion", 0.0)  # then the camera stops: no quiet frame ever comes
    assert m.tick(1.0) is None
    change = m.tick(2.5)
    assert change is not None and (change.before, change.after) == ("active", "idle")


def test_zero_cooldown_goes_idle_on_the_next_quiet_frame() -> None:
    m = machine(cooldown=0.0)
    m.trigger("snap", 5.0)
    assert m.quiet(5.0) is not None and m.state == "cooldown"
    assert m.tick(5.0) is not None and m.state == "idle"


def test_configure_changes_cooldown_and_sources_but_not_the_state() -> None:
    m = machine(cooldown=10.0)
    m.trigger("motion", 0.0)
    m.configure(1.0, frozenset({"snap"}))
    assert m.state == "active"
    assert m.tick(1.0) is not None and m.state == "idle"
    assert m.trigger("motion", 2.0) is None


def test_a_trigger_stamped_earlier_than_the_last_one_does_not_shorten_the_hold() -> None:
    # A snap stamped by the event loop at 10.0, then a motion frame the capture thread
    # grabbed at 9.95 and gated just after: the hold still counts from 10.0.
    m = machine(cooldown=2.0)
    m.trigger("snap", 10.0)
    m.trigger("motion", 9.95)
    assert m.remaining(11.0) == 1.0
    assert m.tick(11.97) is None and m.state == "active"
    assert m.tick(12.0) is not None and m.state == "idle"

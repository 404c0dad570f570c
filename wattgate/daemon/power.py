"""The power controller: observations in, the policy's target out, only the diff written.

Owns the sysfs access for ``power.sysfs_root``: a Sysfs, the SysfsJournal in
``power.journal_dir`` and the JournaledWriter every write goes through. At start it
restores what a crashed run left changed, discovers the board (cpufreq policies, the NPU
and GPU, runtime-PM devices), reads the original value of every knob any profile may
drive, and applies the idle settings of the profile the rules pick. On stop it writes
every original back.

Who calls what (the daemon does the wiring):

* capture thread, every frame: ``on_frame(now)`` (capture fps of the profile) and
  ``on_gate(verdict, now)`` right after the gate, before the frame is queued for the
  model. A trigger that wakes the activity state asks for the active settings there and
  waits, at most WAKE_WAIT_S, until they are written, so the NPU is powered and clocked up
  before the first inference. Otherwise it is a few comparisons under an uncontended lock.
* a thread of the event loop's executor, once a second: ``tick(now, load, queued=True)``
  reads temperatures, supplies, light and meters (waiting up to power_inputs.WAIT_S), runs
  the rules, the activity timeout and the load feedback, asks for the diff, integrates
  energy, and queues its events, which the daemon takes on the loop (``drain_events``) to
  number and publish.
* protocol: ``pin``, ``status`` (after ``read_knobs``), ``profile_status``,
  ``power_message``.

No sysfs write runs on the event loop or the capture thread, nor under ``_lock``: a
store can block for long on a real board (writing "on" to power/control resumes the
device synchronously, pm_runtime_forbid in Documentation/power/runtime_pm.rst, hundreds
of ms for a USB camera or a PCIe NPU; a devfreq governor change waits for the devfreq
mutex a busy driver holds). The callers only compute ``wanted`` and bump a generation;
one writer thread (``_writer_thread``, a ``_write_round`` per request) takes the latest
wanted state under the lock, writes the diff in ``write_order`` outside it, and records
the results under it. States wanted while a write was in progress are not written one by
one: the latest wins. ``settle`` waits until everything wanted so far has been tried
(start, reload, simulate, tests). The status does not read a knob with a write pending.

Nor does a sysfs read run on the event loop, or under ``_lock`` while clients are served:
a read can block as a store can (the show() of a runtime-suspended device, a hung driver).
The status reads the knobs on the KnobReader's threads (knobs.py), each waited for at most
READ_TIMEOUT_S and awaited off the loop by the `status` command (``read_knobs``); a knob
whose read does not return in time shows as such, and is not read again until it does. A
reload reads the originals of the knobs it comes to drive before it takes the lock, and a
start (a reload's that starts afresh too) restores and discovers outside it: not started
yet, the tick does nothing meanwhile, and nothing else writes. A stop() while one of them
waits for such a read (the daemon's exit does not wait for it for good) wins: when the
read returns, the start or reload gives up, neither writing nor taking the config.

A knob whose write fails (a typed SysfsError) is logged with KNOB/VALUE fields, shown in
the status, and written again after 1, 2, 4 ... ticks (RETRY_MAX_TICKS) or when its wanted
value changes; the other knobs carry on.
Without a usable journal directory nothing is written at all: no write without a way
back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Optional, Protocol

from wattgate.boards import BOARDS, energy_model
from wattgate.config import Config, RuleConfig
from wattgate.daemon import journal_dirs
from wattgate.daemon.knobs import (
    READER_STOP_WAIT_S,
    KnobReader,
    read_knob,
    write_knob,
    write_order,
)
from wattgate.daemon.logs import MessageId, event, fields, in_profile
from wattgate.daemon.pidlock import DirectoryLock, LockHeld
from wattgate.daemon.power_inputs import InputReader, Inputs
from wattgate.daemon.rollback import (
    JOURNAL_NAME,
    JournaledWriter,
    JournalError,
    JournalLock,
    RestoreBusy,
    SysfsJournal,
    take_over,
)
from wattgate.drivers import cpufreq, devfreq, thermal, vendor
from wattgate.drivers.accel import find_accelerators, unresolved
from wattgate.drivers.sysfs import AttributeIO, Sysfs, SysfsError
from wattgate.policies.activity import ActivityMachine, Transition
from wattgate.policies.energy import (
    BoardPower,
    CpuLoad,
    DeviceLoad,
    EnergyMeter,
    PowerState,
    Watts,
    board_power,
    estimate,
)
from wattgate.policies.load import LoadController, LoadSample
from wattgate.policies.profiles import (
    STATES,
    ResolvedProfile,
    State,
    chosen_variant,
    resolve_all,
)
from wattgate.policies.rules import Decision, Latch, Readings, RuleEngine, unknown_zones
from wattgate.policies.target import (
    BoardCaps,
    CpuCaps,
    DevfreqCaps,
    PipelineSettings,
    Target,
    build,
    complete,
    diff,
)

log = logging.getLogger("wattgate.power")

Event = dict[str, Any]
EPS = 1e-6
# A refused knob is tried again after 1, 2, 4 ... ticks, at most this many apart: a refusal
# can pass (udev's chown of the attributes landing after the start, a driver busy), and the
# state may keep wanting the value for hours without another change to write it then.
RETRY_MAX_TICKS = 64
# How long on_gate (the capture thread) waits, on an activity edge, for the writer to have
# written the new settings: long enough for the first inference after a wake to run at the
# raised clocks when the writes go through, short enough that a stuck write (a device that
# does not resume) holds up the pipeline no longer than this.
WAKE_WAIT_S = 0.2
# How long start() and reload() wait for their settings to be written: the idle settings
# are in place before READY, as a reload's are before its reply, unless a write is stuck.
SETTLE_S = 10.0
# How long stop() waits for the write in progress before restoring anyway (stop()).
STOP_JOIN_S = 5.0
# While CPUs are offline, how often the tick looks for a cpufreq policy that came online
# (a cluster offline at start has nothing to read or drive until then: _revisit_policies).
POLICY_RECHECK_S = 5.0
# [power] keys that name another board, root or journal: a reload restores and starts afresh
STRUCTURAL = ("enabled", "sysfs_root", "journal_dir", "npu", "gpu", "runtime_pm_devices",
              "board")
# Device-tree compatible strings -> energy-model boards (firmware/devicetree/base/compatible).
COMPATIBLE = {
    "rockchip,rk3588": "rk3588",
    "rockchip,rk3588s": "rk3588",
    "nvidia,tegra234": "jetson-orin-nano",
    "brcm,bcm2712": "rpi5",
    "fsl,imx8mp": "imx8mp",
}


def _on_event_loop() -> bool:
    """Whether this thread is running an asyncio event loop (it must not block)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class Verdict(Protocol):
    """What the controller reads of the gate's verdict (policies.gating.GateVerdict)."""

    @property
    def infer(self) -> bool: ...

    @property
    def reason(self) -> str: ...

    @property
    def motion(self) -> bool: ...


class OriginalsWriter:
    """The journaled writer, given the originals a read of the attribute would get wrong
    (a throttled policy's scaling_max_freq, a min clamped to this daemon's own max) to
    journal at the first write instead."""

    def __init__(self, writer: JournaledWriter, originals: Mapping[str, str]) -> None:
        self._writer = writer
        self._originals = originals

    @property
    def fs(self) -> Sysfs:
        return self._writer.fs

    def write(
        self, attribute: str, value: str, *, restore: Optional[str] = None, always: bool = False
    ) -> bool:
        if restore is None:
            restore = self._originals.get(attribute)
        return self._writer.write(attribute, value, restore=restore, always=always)


class _Progress:
    """What the writer has been asked to write and what it has tried, by generation, and
    the condition both wait on (built on the controller's lock)."""

    def __init__(self, lock: threading.RLock) -> None:
        self.wake = threading.Condition(lock)
        self.asked = 0  # bumped whenever there is something new to write (_request)
        self.done = 0  # the last generation the writer has tried in full


@dataclass
class _Worker:
    """The writer thread and the flag that stops it (each thread its own: one that a stop
    gave up on, still in a stuck write, must not pick up the next start's work)."""

    thread: threading.Thread
    stopping: threading.Event
    finalizer: Optional[weakref.finalize[[_Progress], PowerController]] = None

    def stop(self, progress: _Progress) -> None:
        """Let the write in progress finish; start no other (also when the controller is
        dropped without stop(): weakref.finalize)."""
        with progress.wake:
            self.stopping.set()
            progress.wake.notify_all()


def _writer_thread(ref: weakref.ref[PowerController], stopping: threading.Event,
                   progress: _Progress) -> None:
    """The writer thread: one round of writes (``_write_round``) per new request until
    stopped. It holds the controller only during a round: one dropped without stop() (as
    the tests emulate a crash) goes, and its locks with it, as the process's would."""
    while True:
        with progress.wake:
            progress.wake.wait_for(
                lambda: stopping.is_set() or progress.done != progress.asked)
            if stopping.is_set():
                return
        controller = ref()
        if controller is None:
            return
        generation, finished = controller._write_round(stopping)
        del controller
        with progress.wake:
            if finished and not stopping.is_set():
                progress.done = max(progress.done, generation)
                progress.wake.notify_all()


class PowerController:
    def __init__(self, cfg: Config, *, io: Optional[AttributeIO] = None) -> None:
        self._lock = threading.RLock()
        # the writer waits on it for work, settle() and on_gate for the writer's progress
        self._progress = _Progress(self._lock)
        self._wake = self._progress.wake
        self._worker: Optional[_Worker] = None
        # stop() counts here (not in _setup: a reload that starts afresh keeps it). A start
        # or reload notes it first and gives up when a stop came meanwhile (_stopped_since):
        # one that returns from a read stuck in a driver after the daemon's stop gave the
        # originals back must not write again, nor start the writer, nor take the config.
        self._stops = 0
        # Knobs whose store never returned (_stop_writer), with the writer thread still in
        # it: a restore leaves them, originals and all, in the journal while that thread
        # lives (the store may still land). Kept across a reload that starts afresh.
        self._stranded: dict[str, threading.Thread] = {}
        # _setup counts here: a revisit of the policies (_revisit_policies) reads outside
        # the lock, and a structural reload on its own thread may set the controller up
        # afresh on another root meanwhile; what it read of the old root must not go in.
        self._setups = 0
        self._setup(cfg, io)

    def _setup(self, cfg: Config, io: Optional[AttributeIO]) -> None:
        """Everything a config determines; a structural reload runs it again."""
        self._setups += 1
        self.cfg = cfg
        self.fs = Sysfs(cfg.power.sysfs_root, io)
        self.profiles: dict[str, ResolvedProfile] = resolve_all(cfg)
        self.rules = RuleEngine(cfg.rules, cfg.power.profile, self.profiles)
        self.decision = Decision(cfg.power.profile, "start", "default")
        self.profile = self.profiles[cfg.power.profile]
        self.activity = ActivityMachine(self.profile.cooldown_s, self.profile.wake_on)
        self.load = LoadController()
        self.journal: Optional[SysfsJournal] = None
        self.journal_lock: Optional[JournalLock] = None
        # an flock on the sysfs root: one daemon drives a board, whatever its journal_dir
        self.board_lock: Optional[DirectoryLock] = None
        # originals a structural reload's restore left in the previous journal_dir
        self._inherited: dict[str, str] = {}
        self.writer: Optional[JournaledWriter] = None
        self.writes = False
        self.caps = BoardCaps()
        self._policies: dict[str, cpufreq.CpuPolicy] = {}
        # when the tick next looks for policies come online; None: no CPU is offline (the
        # tick still looks at once should one go offline: _revisit_policies, _record)
        self._policies_recheck: Optional[float] = None
        self._devfreq: dict[str, devfreq.DevfreqDevice] = {}
        # originals of the driven knobs, and of the limits beside them (_limits)
        self.baseline: dict[str, str] = {}
        # originals that are not what the attribute reads (a thermal cap was read instead,
        # or, for a min first driven by a reload, this daemon's own max)
        self._unread: dict[str, str] = {}
        self.driven: list[str] = []
        self.applied: dict[str, str] = {}
        self.wanted: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        # failed knob: (ticks to its retry, wait); 0 ticks: handed to the writer (_due)
        self._retry: dict[str, tuple[int, int]] = {}
        self._due: set[str] = set()  # refused knobs to write again with the next batch
        self._writing: Optional[str] = None  # the knob whose write is in progress
        # writes tried of each knob: a read that began before one is not the knob's value
        self._written: dict[str, int] = {}
        # the status's reads (knob_status), bounded; not holding the controller, which a
        # read stuck for good would keep alive, locks and all
        self._reader = KnobReader(partial(read_knob, self.fs))
        self.notes: tuple[str, ...] = ()
        # the board's thermal zone types (known after start), and the notes of the rules
        # that name none of them (_check_zones), kept beside the target's own notes
        self.zone_types: tuple[str, ...] = ()
        self._zone_notes: tuple[str, ...] = ()
        self.pipeline = PipelineSettings()
        self.model_variant: Optional[str] = None
        self.energy_model: Optional[BoardPower] = None
        self.estimated = EnergyMeter()
        self.measured = EnergyMeter()
        self.last_estimate: Optional[Watts] = None
        self.last_measured: Optional[float] = None
        self.meter_source: Optional[str] = None
        self.battery: Optional[dict[str, Any]] = None
        self.batteries: list[dict[str, Any]] = []  # every battery, as read last
        # what the rules last judged (_take_inputs): a pin's release and variant_under judge
        # the same, the combined charge of all batteries with the rest, not the status's
        # first battery; the status's temperatures and lux are these too. Before the first
        # read, nothing is known.
        self._readings = Readings()
        self.npu_device: Optional[str] = None
        # the board's parts are known after start
        self.inputs = InputReader(self.fs, {}, light=cfg.sensors.light)
        self._pending: list[Event] = []
        self._last_tick: Optional[float] = None
        self._last_admit = -math.inf
        self._last_frame = -math.inf
        self._started = False

    # -- life cycle ----------------------------------------------------------------------

    @property
    def has_knobs(self) -> bool:
        """Whether this board has anything a profile can set (known after ``start``)."""
        return bool(self.driven)

    def start(self, now: float) -> list[Event]:
        """Restore a crashed run's changes, discover the board, apply the idle settings.

        The restore and the discovery read and write sysfs outside the lock: in a reload
        that starts afresh, the event loop's status and tick and the capture thread go on
        meanwhile (not started, the tick does nothing, and nothing is written but here).
        A stop() meanwhile wins: the start then ends with nothing started (_abandoned)."""
        with self._lock:
            stops = self._stops
        return self._start(now, stops)

    def _start(self, now: float, stops: int) -> list[Event]:
        """start(), given back up if stop() has been called since it counted ``stops``."""
        if self.cfg.power.enabled or self._inherited or os.path.exists(
            os.path.join(self.cfg.power.journal_dir, JOURNAL_NAME)
        ):
            self._open_journal()  # a crashed run's changes go back even if writes are off
        self._discover()
        energy = self._energy_model()
        recheck = self._next_policy_check(list(self._policies.values()), now)
        with self._lock:
            if self._stopped_since(stops):
                self._release_locks()  # the ones this start took: the stop has run
                return self._abandoned("start")
            self.energy_model = energy
            self._policies_recheck = recheck
            self._check_zones()
            self._started = True
            if self.writes and self.writer is not None:
                self._start_writer()
        inputs = self.inputs.read(now)
        with self._lock:
            if self._stopped_since(stops):
                return self._abandoned("start")
            decision, latches = self.rules.evaluate(inputs.readings)
            self._take_inputs(inputs)
            events = self._latch_events(latches)
            events.append(self._switch(decision, now, initial=True))
            self._apply_state()
            self._last_tick = now
        return events + self._settled("start")

    def reload(self, cfg: Config, now: float) -> list[Event]:
        """A new config (SIGHUP): new profiles and rules at once, the pin kept if it still
        names a profile; a different board, root or journal restores and starts afresh.

        A stop() before it is done (the daemon's exit, not waiting for a read stuck in a
        driver) wins: the reload then changes nothing and writes nothing (_abandoned)."""
        with self._lock:
            stops = self._stops
        if self._structural(cfg):
            self._restore()
            left, old_rules, variant = self._left_unrestored(cfg), self.rules, self.model_variant
            with self._lock:
                if self._stopped_since(stops):
                    return self._abandoned("reload")
                self._setup(cfg, self.fs.io)
                released = self._carry_over(old_rules, latches=False)  # another board's zones
                self._inherited = left
                self.model_variant = variant  # the policy's last ask: a change is an event
            return released + self._start(now, stops)
        # The originals of the knobs the new profiles come to drive are read first, outside
        # the lock: a read can block in a driver (knobs.py), and the event loop's tick and
        # status, and the capture thread, wait for the lock.
        profiles = resolve_all(cfg)
        driven = self._driven_by(profiles)
        with self._lock:
            known = set(self.baseline)
        fresh = self._originals([key for key in driven + self._limits(driven)
                                 if key not in known], driven)
        with self._lock:
            if self._stopped_since(stops):
                return self._abandoned("reload")
            old_rules = self.rules
            self.cfg = cfg
            self.profiles = profiles
            self.rules = RuleEngine(cfg.rules, cfg.power.profile, self.profiles)
            released = self._carry_over(old_rules)
            self._check_zones()
            self.profile = self.profiles.get(self.decision.profile, self.profiles[
                cfg.power.profile])
            self._keep_baseline(driven, fresh)
            self.inputs.light = cfg.sensors.light  # the light rules read the new sensor
        inputs = self.inputs.read(now)
        with self._lock:
            if self._stopped_since(stops):
                return self._abandoned("reload")
            decision, latches = self.rules.evaluate(inputs.readings)
            events = released + self._latch_events(latches)
            previous = self.decision.profile
            switched = self._switch(decision, now)  # the profile's new settings, same name or not
            if decision.profile != previous:  # an event only for a change clients can see
                events.append(switched)
            self._apply_state()
        return events + self._settled("reload")

    def _stopped_since(self, stops: int) -> bool:
        """Whether stop() has been called since ``stops`` was counted (under the lock)."""
        return self._stops != stops

    @staticmethod
    def _abandoned(what: str) -> list[Event]:
        """A start or reload given up because the controller was stopped meanwhile."""
        log.warning("%s given up: power control was stopped meanwhile and the original "
                    "values are back; nothing more is written", what)
        return []

    def _settled(self, what: str) -> list[Event]:
        """After start or reload: wait (SETTLE_S) for the writer to write what they asked,
        so the settings are in place when the daemon says READY or answers the reload, and
        the events of any knob refused are in this answer; then the pending events."""
        if not self.settle(SETTLE_S):
            with self._lock:
                busy = self._writing
            log.error("%s: the power settings are not all written after %.0f s (%s is still "
                      "being written); going on, the writer carries on with them", what,
                      SETTLE_S, busy or "a knob",
                      extra=event(MessageId.KNOB_FAILED, knob=busy))
        with self._lock:
            return self._drain()

    def _structural(self, cfg: Config) -> bool:
        """Whether ``cfg`` names another board, root or journal: its reload starts afresh."""
        return any(getattr(cfg.power, k) != getattr(self.cfg.power, k) for k in STRUCTURAL)

    def variant_under(self, cfg: Config) -> Optional[str]:
        """The model variant ``reload(cfg)`` would ask for now, with nothing applied.

        The daemon loads a reload's model before the power side takes the new config (a
        model that does not load rejects the reload, and the power side must not have
        moved); asking this, it loads the variant the new policy wants, once, not the one
        the old policy wanted and then this one. The readings are the last tick's: should
        the reload's own read make the policy choose otherwise, the daemon compares what it
        runs with model_variant after the reload and switches.
        """
        profiles = resolve_all(cfg)
        rules = RuleEngine(cfg.rules, cfg.power.profile, profiles)
        with self._lock:
            fresh = self._structural(cfg)
            rules.carry_over(self.rules, latches=not fresh)  # as reload() does
            decision, _ = rules.evaluate(self._readings)
            # a structural reload starts a new activity machine, and that starts idle
            state: State = "idle" if fresh else self.activity.settings_state
        return chosen_variant(decision.model_variant,
                              profiles[decision.profile].settings(state).model_variant)

    def _left_unrestored(self, cfg: Config) -> dict[str, str]:
        """Originals the journal kept after the restore of a structural reload (an
        attribute busy just then), for the journal of ``cfg`` to take over.

        The same journal_dir reads them itself. A new one would otherwise record such an
        attribute afresh, with the value a profile set as its "original", and the exit
        would leave that value. Originals under another sysfs_root cannot move: they
        stay in the old journal, and the log says where.
        """
        journal = self.journal
        if journal is None or not journal.attributes or (
            cfg.power.journal_dir == self.cfg.power.journal_dir
        ):
            return {}
        if cfg.power.sysfs_root != self.cfg.power.sysfs_root:
            log.error(
                "%s keeps the originals of %d attribute(s) under %s that could not be "
                "restored; a start with that journal_dir and sysfs_root restores them",
                journal.path, len(journal.attributes), self.cfg.power.sysfs_root,
                extra=event(MessageId.KNOB_FAILED, knob="power.journal_dir"),
            )
            return {}
        return {a: text for a in journal.attributes
                if (text := journal.original(a)) is not None}

    def _check_zones(self) -> None:
        """Warn of the temperature rules no zone of this board can trip (under the lock).

        Such a rule never holds and, unchecked, nothing said so: the thermal protection
        the sysadmin wrote was off. Not a config error, since zones are found on the board:
        checked at start and at each reload, and kept in the status's notes."""
        notes = []
        types = ", ".join(self.zone_types) or "none"
        for i in unknown_zones(self.cfg.rules, self.zone_types):
            rule = self.cfg.rules[i]
            label = f"rule {i}" + (f" ({rule.name})" if rule.name else "")
            asked = f"zone {rule.zone!r}" if rule.zone is not None else "any zone"
            note = (f"{label} never holds: it reads {asked}, and this board's thermal zone "
                    f"types are {types}")
            log.warning("%s", note)
            notes.append(note)
        self._zone_notes = tuple(notes)

    def _carry_over(self, old: RuleEngine, *, latches: bool = True) -> list[Event]:
        """The old rules' pin and latches into the new ones; a pin whose profile is gone
        is released, and the journal says whose and why (the client is not told). Returns
        the release events of the held latches the new rules do not carry on."""
        dropped = self.rules.carry_over(old, latches=latches)
        if old.pinned is not None and self.rules.pinned is None:
            log.warning("pin of profile %r by %s released: the new config has no such "
                        "profile", old.pinned, old.pinned_by)
        return self._latch_events(dropped, old.rules)

    def _keep_baseline(self, driven: list[str],
                       fresh: tuple[dict[str, str], dict[str, str]]) -> None:
        """After a reload (under the lock), with the knobs the new profiles drive and the
        originals read for those not known yet (``_originals``): originals already known
        stay (the knobs may hold our values now), and a knob only the old profiles set stays
        driven: unset now, its wanted value is its original, so it is given back at once
        rather than held at an old profile's value until exit."""
        known, before, unread = self.baseline, self.driven, self._unread
        read, read_unread = fresh
        self.driven = driven + [key for key in before if key not in driven]
        self.baseline = {**read, **known}
        # A limit first driven now was read at start (_limits), before this daemon's writes:
        # its first write journals that, not the file, which may show our own max (a min).
        first = {key: known[key] for key in self.driven if key not in before and key in known}
        self._unread = {**{k: v for k, v in read_unread.items() if k not in known}, **unread,
                        **first}

    def stop(self) -> None:
        """Stop the writer, then write every original value back (normal exit, SIGTERM,
        SIGINT). The restore runs outside the lock: status() does not wait for it. A start
        or reload still under way (a read stuck in a driver) gives up when it returns."""
        with self._lock:
            self._stops += 1
        self._restore()
        in_profile(None)  # the originals are back: no profile is in force

    def _restore(self) -> None:
        """stop() without the count: a reload that starts afresh restores this way.

        Another restore of the journal still under way (a reload's, stuck in a store) is
        given STOP_JOIN_S, then left to itself: what it has not written back stays in the
        journal for the next start, and a stop must not wait for a driver for good."""
        self._stop_writer()
        with self._lock:
            journal = self.journal
            self.writes = False
            self._started = False
        if journal is not None:
            try:
                report = journal.restore(self._stranded_knobs(), wait=STOP_JOIN_S)
            except RestoreBusy as busy:
                log.error("another restore of the power settings has not ended after %.0f "
                          "s (writing %s); going on without it: what it has not given back "
                          "stays in the journal for the next start", STOP_JOIN_S,
                          busy.attribute or "an attribute",
                          extra=event(MessageId.KNOB_FAILED, knob=busy.attribute))
            else:
                if report.restored or report.failed:
                    log.info(
                        "restored %d sysfs attribute(s), %d failed",
                        len(report.restored), len(report.failed),
                        extra=event(MessageId.SYSFS_RESTORED, restored=len(report.restored),
                                    failed=len(report.failed) or None),
                    )
        with self._lock:
            self._release_locks()
            self.applied.clear()
            self._retry.clear()
            self._due.clear()
            self._writing = None
            reader = self._reader
        # The status's idle reader threads end: those left at exit are reads that hang.
        reader.close(READER_STOP_WAIT_S)

    # -- the writer --------------------------------------------------------------------------

    def _start_writer(self) -> None:
        """Start the writer thread (under the lock, at start): nothing pending yet."""
        progress = self._progress
        progress.done = progress.asked
        stopping = threading.Event()
        worker = _Worker(threading.Thread(target=_writer_thread, name="wattgate-power-writer",
                                          args=(weakref.ref(self), stopping, progress),
                                          daemon=True), stopping)
        worker.finalizer = weakref.finalize(self, worker.stop, progress)
        self._worker = worker
        worker.thread.start()

    def _stop_writer(self) -> None:
        """Stop the writer: the write in progress may finish, no other one starts. The knob
        it is still writing after STOP_JOIN_S, if any, is noted in _stranded.

        A store that never returns (a device that never resumes) must not keep the daemon
        from restoring the others and exiting: stop() goes on without the thread. What
        backs this up is systemd's TimeoutStopSec, should the restore hang as well, and the
        journal, which keeps the stuck knob's original for the next start to restore.
        """
        with self._wake:
            worker, self._worker = self._worker, None
        if worker is None:
            return
        if worker.finalizer is not None:
            worker.finalizer.detach()
        worker.stop(self._progress)
        worker.thread.join(STOP_JOIN_S)
        if not worker.thread.is_alive():
            return
        with self._lock:
            stuck = self._writing
            if stuck is not None:
                self._stranded[stuck] = worker.thread
        log.error("the write of %s has not returned after %.0f s; restoring without waiting "
                  "for it, its original stays in the journal for the next start",
                  stuck, STOP_JOIN_S, extra=event(MessageId.KNOB_FAILED, knob=stuck))

    def _stranded_knobs(self) -> list[str]:
        """The knobs whose store has still not returned (forgetting those that have)."""
        with self._lock:
            for key, thread in list(self._stranded.items()):
                if not thread.is_alive():
                    del self._stranded[key]
            return list(self._stranded)

    def settle(self, timeout: float) -> bool:
        """Wait until everything wanted so far has been tried (written or refused); False
        when ``timeout`` seconds pass first (a write is stuck). True at once when nothing
        is written (writes off, or not started). Never call it on the event loop."""
        with self._wake:
            return self._wake.wait_for(lambda: self._tried(self._progress.asked), timeout)

    def _tried(self, generation: int) -> bool:
        return self._worker is None or self._progress.done >= generation

    def _request(self) -> None:
        """Tell the writer there is something new to write (under the lock)."""
        self._progress.asked += 1
        self._wake.notify_all()

    def _write_round(self, stopping: threading.Event) -> tuple[int, bool]:
        """One round of the writer thread: the latest wanted state (and the retries due),
        taken under the lock and written outside it. Its generation, and whether it was
        written in full (not cut short by a stop or a newer request: the latest wins)."""
        with self._wake:
            generation = self._progress.asked
            batch = self._batch()
            assert self.writer is not None
            writer = OriginalsWriter(self.writer, dict(self._unread))
            policies, devices = self._policies, self._devfreq
        try:
            return generation, self._write_batch(stopping, generation, batch, writer,
                                                 policies, devices)
        except Exception:  # a bug must not end the writes for good, nor hang settle()
            log.exception("writing the power settings failed")
            return generation, True

    def _batch(self) -> list[tuple[str, str]]:
        """What the writer writes next, in write_order (under the lock): the knobs whose
        wanted value is not the one last written, and the refused ones due again."""
        changes = diff(self.applied, self.wanted)
        self._due &= self.applied.keys()  # no longer driven (a reload): no retry
        for key in self._due:  # left in _due until tried (_record): a cut batch keeps them
            changes.setdefault(key, self.applied[key])
        current = {**self.baseline, **self.applied}
        return sorted(changes.items(), key=lambda kv: write_order(kv[0], kv[1], current))

    def _write_batch(
        self,
        stopping: threading.Event,
        generation: int,
        batch: Sequence[tuple[str, str]],
        writer: OriginalsWriter,
        policies: Mapping[str, cpufreq.CpuPolicy],
        devices: Mapping[str, devfreq.DevfreqDevice],
    ) -> bool:
        """Write ``batch`` outside the lock, recording each result under it; False when a
        stop or a newer request cut it short (after at least one write, so it progresses)."""
        for index, (key, value) in enumerate(batch):
            with self._wake:
                if stopping.is_set() or (index and self._progress.asked != generation):
                    return False
                self._writing = key
            error: Optional[Exception] = None
            try:
                write_knob(writer, key, value, policies, devices)
            except (SysfsError, OSError, ValueError) as exc:
                error = exc
            with self._wake:
                if stopping.is_set():
                    return False  # stopped: stop() clears what was applied
                self._writing = None
                self._record(key, value, error)
        return True

    def _open_journal(self) -> None:
        """Lock the journal directory, undo what a previous run left changed, and allow
        writes only when the journal can be saved. A directory this user cannot write (a
        read-only remount, a tmpfiles.d mistake) still gives a crashed run's originals back."""
        directory = self.cfg.power.journal_dir
        report = None
        try:
            self.board_lock = self._lock_board()
        except OSError as exc:
            log.error("%s: power settings will not be written", exc,
                      extra=event(MessageId.KNOB_FAILED, knob="power.sysfs_root"))
            return
        try:
            if os.path.lexists(directory) and not os.path.isdir(directory):
                # makedirs would say "File exists", naming no directory expected
                raise JournalError("not a directory", errno.ENOTDIR)
            os.makedirs(directory, mode=0o700, exist_ok=True)
            writable = os.access(directory, os.W_OK | os.X_OK)
            state_dir = self.cfg.daemon.state_dir
            was = journal_dirs.noted(state_dir)
            earlier, _ = journal_dirs.restore_earlier(
                journal_dirs.pending(was, directory), self.fs)
            self.journal_lock, self.journal, report = take_over(
                directory, self.fs, create=writable, inherited=self._inherited,
                keep=self._stranded_knobs())
            if not writable:
                raise PermissionError(f"{directory} is not writable")
            journal_dirs.note(state_dir, [*earlier, directory], was)
        except OSError as exc:
            log.error(
                "power.journal_dir %s unusable (%s): power settings will not be written",
                directory, exc, extra=event(MessageId.KNOB_FAILED, knob="power.journal_dir"),
            )
            self.journal = None
            self._release_locks()
        if report is not None and (report.restored or report.failed):
            log.warning(
                "restored %d sysfs attribute(s) left changed by a previous run",
                len(report.restored),
                extra=event(MessageId.SYSFS_RESTORED, restored=len(report.restored),
                            failed=len(report.failed) or None),
            )
        if self.journal is not None:
            self.writer = JournaledWriter(self.journal)
            self.writes = self.cfg.power.enabled

    def _lock_board(self) -> DirectoryLock:
        """Lock the sysfs root, or OSError naming the daemon that drives it already.

        The journal lock keeps two daemons out of one journal_dir only. Two with their own
        (the service, and `wattgate run` with a test config) each journaled the other's
        settings as the board's originals, and the last to stop left the other's values
        behind for good."""
        root = str(self.fs.root)
        lock = DirectoryLock(root)
        try:
            lock.acquire()
            return lock
        except FileNotFoundError as exc:
            raise OSError(exc.errno, f"power.sysfs_root {root}: no such directory") from None
        except LockHeld as held:
            raise OSError(errno.EBUSY, f"power.sysfs_root {root} is driven by another "
                          f"wattgate{f' (pid {held.pid})' if held.pid else ''}: one daemon "
                          "per board") from None

    def _release_locks(self) -> None:
        if self.journal_lock is not None:
            self.journal_lock.release()
            self.journal_lock = None
        if self.board_lock is not None:
            self.board_lock.release()
            self.board_lock = None

    # -- discovery -------------------------------------------------------------------------

    def _discover(self) -> None:
        fs, power = self.fs, self.cfg.power
        policies = cpufreq.discover_policies(fs)
        self._policies = {p.path: p for p in policies}
        self._note_offline(policies, {})
        cpus = self._cpu_caps(policies)
        accels = find_accelerators(fs, npu=power.npu, gpu=power.gpu)
        for key, message in unresolved(fs, npu=power.npu, gpu=power.gpu):
            log.warning("%s", message, extra=event(MessageId.KNOB_FAILED, knob=key))
        npu = next((a for a in accels if a.kind == "npu"), None)
        gpu = next((a for a in accels if a.kind == "gpu"), None)
        pm_devices = [npu.device] if npu is not None else []
        for entry in power.runtime_pm_devices:
            # "/sys/..." as power.npu takes it: read as "sys/..." under the root, the device
            # was dropped without a word and its runtime PM never followed the profile.
            device = fs.configured(entry)
            if not fs.exists(f"{device}/power/control"):
                log.warning("power.runtime_pm_devices: %s has no power/control under %s",
                            entry, fs.root,
                            extra=event(MessageId.KNOB_FAILED, knob=f"{device}/power/control"))
            pm_devices.append(device)
        pm = tuple(d for d in dict.fromkeys(pm_devices) if fs.exists(f"{d}/power/control"))
        # A driver that does not use autosuspend keeps the attribute, but its show and store
        # give EIO: only one that reads has a delay to drive.
        autosuspend = tuple(d for d in pm
                            if fs.read_int_opt(f"{d}/power/autosuspend_delay_ms") is not None)
        railgate = gpu.device if gpu and fs.exists(f"{gpu.device}/railgate_enable") else None
        self.caps = BoardCaps(
            cpus=cpus,
            npu=self._devfreq_caps(npu.devfreq if npu else None),
            npu_pm=pm,
            npu_autosuspend=autosuspend,
            gpu=self._devfreq_caps(gpu.devfreq if gpu else None),
            gpu_railgate=railgate,
            galcore_govern=vendor.GALCORE_GOVERN if vendor.read_gpu_govern(fs) else None,
        )
        self.npu_device = npu.device if npu is not None else None
        self.zone_types = thermal.zone_types(fs)
        self.inputs = InputReader(fs, self._policies, self.cfg.sensors.light, {
            "npu": (self.caps.npu.path if self.caps.npu else None, self.npu_device),
            "gpu": (self.caps.gpu.path if self.caps.gpu else None,
                    gpu.device if gpu is not None else None),
        })
        self._collect_driven()

    @staticmethod
    def _note_offline(policies: Sequence[cpufreq.CpuPolicy], known: Mapping[str, bool]
                      ) -> None:
        """Say once that a policy went inactive (all its CPUs offline), and once that it
        came back; ``known``: each policy's activity as last seen."""
        for p in policies:
            was = known.get(p.path)
            if not p.active and was is not False:
                log.warning("%s: its CPUs are offline (the kernel answers EBUSY for its "
                            "attributes); it is driven once they come online", p.name,
                            extra=fields(knob=p.attr("scaling_governor")))
            elif p.active and was is not True and known:
                log.info("%s: CPUs %s came online; driven from now on", p.name,
                         ",".join(map(str, p.cpus)) or "?",
                         extra=fields(knob=p.attr("scaling_governor")))

    @staticmethod
    def _cpu_caps(policies: Sequence[cpufreq.CpuPolicy]) -> tuple[CpuCaps, ...]:
        """What a profile can set on each policy: nothing on an inactive one (its CPUs
        offline; the tick looks at it again, _revisit_policies)."""
        return tuple(
            CpuCaps(
                name=p.name,
                path=p.path,
                governors=p.governors,
                loadable=p.loadable,
                has_governor=p.governor is not None,
                min_khz=p.cpuinfo_min_khz,
                max_khz=p.cpuinfo_max_khz,
                frequencies=p.frequencies_khz,
                has_min=p.min_khz is not None,
                has_max=p.max_khz is not None,
                has_epp=p.epp is not None,
                epp_choices=p.epp_choices,
            )
            for p in policies
        )

    def _next_policy_check(self, policies: Sequence[cpufreq.CpuPolicy],
                           now: float) -> Optional[float]:
        """When to look for policies come online: while one is inactive or a CPU is
        offline (a CPU offline since boot has no policy directory yet), else never."""
        if any(not p.active for p in policies) or cpufreq.offline_cpus(self.fs):
            return now + POLICY_RECHECK_S
        return None

    def _revisit_policies(self, now: float) -> None:
        """On a tick, every POLICY_RECHECK_S while CPUs are offline: a policy whose CPUs
        came online (inactive before, or not there at all) is taken in, its originals read,
        and the profile's settings for it go out with this tick's (journaled at the first
        write, as any knob's); one whose CPUs went offline is no longer driven until then.
        With every CPU online at the last look, the tick looks again at once when the
        kernel lists a CPU offline, or a write to a policy was refused with EBUSY (_record):
        a cluster hot-unplugged after the start. Reads outside the lock, as a reload's."""
        with self._lock:
            scheduled, fs = self._policies_recheck, self.fs
        if scheduled is None:
            if not cpufreq.offline_cpus(fs):
                return
        elif now < scheduled:
            return
        with self._lock:
            self._policies_recheck = None  # one look at a time
            known = {path: p.active for path, p in self._policies.items()}
            fs, stops, setups = self.fs, self._stops, self._setups
        policies = cpufreq.discover_policies(fs)
        recheck = self._next_policy_check(policies, now)
        if {p.path: p.active for p in policies} == known:
            with self._lock:
                if not self._changed_since(stops, setups):
                    self._policies_recheck = recheck
            return
        self._note_offline(policies, known)
        cpus = self._cpu_caps(policies)
        with self._lock:
            if self._changed_since(stops, setups):
                return
            self._policies = {p.path: p for p in policies}
            self.inputs.policies = self._policies
            self.caps = replace(self.caps, cpus=cpus)
            # written afresh once active again, not retried while inactive (_record)
            self._forget_applied({p.path for p in policies if known.get(p.path) is not None
                                  and known[p.path] != p.active})
            self._policies_recheck = recheck
            profiles = self.profiles
            baseline_known = set(self.baseline)
        driven = self._driven_by(profiles)
        fresh = self._originals([key for key in driven + self._limits(driven)
                                 if key not in baseline_known], driven)
        with self._lock:
            if not self._changed_since(stops, setups):
                self._keep_baseline(driven, fresh)

    def _forget_applied(self, paths: set[str]) -> None:
        """Forget what was written to the knobs under ``paths`` (under the lock): the
        writer writes them afresh when they are wanted, and retries none of them now."""
        for key in [k for k in self.applied if k.rpartition("/")[0] in paths]:
            del self.applied[key]
            self._retry.pop(key, None)
            self._due.discard(key)

    def _inactive_policy(self, key: str) -> Optional[cpufreq.CpuPolicy]:
        """The policy ``key`` belongs to, if its CPUs were offline at the last look."""
        policy = self._policies.get(key.rpartition("/")[0])
        return policy if policy is not None and not policy.active else None

    def _changed_since(self, stops: int, setups: int) -> bool:
        """Whether stop() has been called, or the controller set up afresh (a structural
        reload), since ``stops`` and ``setups`` were counted (under the lock): what was
        read meanwhile may be of another root, or of one given back."""
        return self._stopped_since(stops) or self._setups != setups

    def _devfreq_caps(self, name: Optional[str]) -> Optional[DevfreqCaps]:
        if name is None:
            return None
        try:
            dev = devfreq.read_devfreq(self.fs, name)
        except SysfsError:
            return None
        self._devfreq[dev.path] = dev
        lowest, highest = self._devfreq_span(dev)
        return DevfreqCaps(
            name=dev.name,
            path=dev.path,
            governors=dev.governors,
            loadable=dev.loadable,
            has_governor=dev.governor is not None,
            frequencies=dev.frequencies_hz,
            min_hz=lowest,
            max_hz=highest,
        )

    def _devfreq_span(self, dev: devfreq.DevfreqDevice) -> tuple[Optional[int], Optional[int]]:
        """The lowest and highest frequency of ``dev``: its table's ends, else its min/max_freq
        as the board had them (_unwritten_hz)."""
        table = dev.frequencies_hz
        if table:
            return table[0], table[-1]
        return (self._unwritten_hz(dev.attr("min_freq"), dev.min_hz),
                self._unwritten_hz(dev.attr("max_freq"), dev.max_hz))

    def _unwritten_hz(self, attribute: str, read: Optional[int]) -> Optional[int]:
        """A device without a frequency table ranges over its min/max_freq as the board had
        them. Every start discovers (a structural reload's and a crash's too), after a
        restore the kernel may have refused: the file then holds this daemon's own narrower
        value and the journal the board's, so the journal's wins, as for the baseline."""
        saved = self._journaled(attribute)
        return int(saved) if saved is not None and saved.isdigit() else read

    def _journaled(self, attribute: str) -> Optional[str]:
        """The original the journal still holds for ``attribute`` (its restore was refused,
        busy or offline: the attribute has a previous run's value now), else None."""
        saved = self.journal.original(attribute) if self.journal is not None else None
        return saved.strip() if saved is not None else None

    def _collect_driven(self) -> None:
        """Every knob any profile may set, with its original value, read before any write,
        and the originals of the other limits beside them (_limits)."""
        self.driven = self._driven_by(self.profiles)
        self.baseline, self._unread = self._originals(
            self.driven + self._limits(self.driven), self.driven)

    def _driven_by(self, profiles: Mapping[str, ResolvedProfile]) -> list[str]:
        """Every knob a profile of ``profiles`` may set on this board (no sysfs access)."""
        driven: dict[str, None] = {}
        for profile in profiles.values():
            for state in STATES:
                for level in (0.0, 1.0):
                    driven.update(dict.fromkeys(build(profile.settings(state), self.caps, level)
                                                .knobs))
        return list(driven)

    def _originals(self, keys: Sequence[str], driven: Sequence[str]
                   ) -> tuple[dict[str, str], dict[str, str]]:
        """The original of each of ``keys`` (the journal's, else read, not a thermal cap's
        doing), and those of them the attribute does not read (_unthrottled). Reads sysfs,
        and may block on it: not under the lock once others use the controller (reload)."""
        baseline: dict[str, str] = {}
        unread: dict[str, str] = {}
        if not keys:
            return baseline, unread
        cooling = thermal.discover_cooling_devices(self.fs)
        for key in keys:
            if (saved := self._journaled(key)) is not None:
                baseline[key] = saved
            elif (value := self._read_knob(key)) is not None:
                baseline[key] = self._unthrottled(key, value, cooling, key in driven, unread)
        return baseline, unread

    def _limits(self, keys: Sequence[str]) -> list[str]:
        """The min and max attributes of each cpufreq policy and devfreq device that a key
        of ``keys`` belongs to, less ``keys``.

        Their originals are read with the driven knobs', before any write: a reload may
        come to drive one after this daemon lowered the max beside it, and the kernel
        clamps the min to the max (cpufreq_verify_within_limits for policy->min, which
        scaling_min_freq shows; devfreq.c devfreq_get_freq_range for min_freq). Read then,
        the user's floor shows as this daemon's own max, and the exit would leave that.
        """
        named = set(keys)
        out: dict[str, None] = {}
        for key in keys:
            path = key.rpartition("/")[0]
            names = (("scaling_min_freq", "scaling_max_freq") if path in self._policies
                     else ("min_freq", "max_freq") if path in self._devfreq else ())
            out.update(dict.fromkeys(f"{path}/{name}" for name in names))
        return [key for key in out if key not in named]

    def _unthrottled(self, key: str, value: str, cooling: Sequence[thermal.CoolingDevice],
                     driven: bool, unread: dict[str, str]) -> str:
        """The original of ``key``, read as ``value``: not a thermal cap's doing; noted in
        ``unread`` when that is not the value read. ``driven``: a profile sets the knob.

        Since Linux 5.3 a cpufreq limit is a frequency QoS request, and scaling_max_freq
        reads policy->max, the lowest max request: a cooling device's among them (a cpufreq
        or an ACPI Processor one), and scaling_min_freq reads policy->min, clamped to it.
        A devfreq device's max_freq and min_freq read the same way under its devfreq
        cooling device (devfreq.py says where). Read while a cap binds, writing them back
        at exit would leave the device throttled, or held up at the cap's frequency, after
        it cooled. The user's own request cannot be read then; cpufreq.unthrottled_khz and
        devfreq.unthrottled_hz say what to take instead, and the log says so. Writing while
        throttled is fine: the write is the user's request, the cap still holds.
        """
        path, _, name = key.rpartition("/")
        if not value.isdigit():
            return value
        policy, dev = self._policies.get(path), self._devfreq.get(path)
        if policy is not None:
            cap = cpufreq.thermal_cap(policy, list(self._policies).index(path), cooling)
            owner, unit = policy.name, "kHz"
            source = "cpuinfo_" + name.removeprefix("scaling_")
            original = None if cap is None else cpufreq.unthrottled_khz(
                policy, name, int(value), cap)
        elif dev is not None:
            cap = devfreq.thermal_cap(dev, cooling)
            owner, unit = dev.name, "Hz"
            source = f"the {'lowest' if name == 'min_freq' else 'highest'} frequency"
            original = None if cap is None else devfreq.unthrottled_hz(
                dev, name, int(value), cap, self._devfreq_span(dev))
        else:
            return value
        if cap is None or original is None:
            return value
        device = cap.device
        log.warning(
            "%s: %s reads %s %s while %s (%s) throttles it at cooling state %s of %s (%s "
            "%s): that is the thermal cap's doing, not the board's setting; taking %s %d %s "
            "as its original, %s",
            owner, name, value, unit, device.name, device.type, device.cur_state,
            device.max_state, cap.freq if cap.freq is not None else "unknown", unit,
            source, original, unit, "what the exit writes back" if driven
            else "for a reload whose profiles set it",
            extra=fields(knob=key, value=original),
        )
        unread[key] = str(original)
        return str(original)

    def _read_knob(self, key: str) -> Optional[str]:
        return read_knob(self.fs, key)

    def _energy_model(self) -> Optional[BoardPower]:
        name = self.cfg.power.board or self._detect_board()
        if name is None or name not in BOARDS:
            return None
        model = board_power(name, energy_model(name))
        return model if (model.clusters or model.npu) else None

    def _detect_board(self) -> Optional[str]:
        text = self.fs.read_opt("firmware/devicetree/base/compatible") or ""
        for entry in text.replace("\x00", " ").split():
            if entry in COMPATIBLE:
                return COMPATIBLE[entry]
        return None

    # -- capture thread ----------------------------------------------------------------------

    def on_frame(self, now: float) -> bool:
        """Whether the capture thread should look at this frame (the profile's capture_fps).

        Lock-free: two floats, read and written by the capture thread only.

        Frames are taken on a schedule of one a period, not a period after the last one
        taken: frame times jitter (each is read at its read), and a frame a hair before
        the mark was dropped and the next taken a whole camera frame later, about 4 a
        second for capture_fps 5 on a 15 fps camera. After a gap (a profile that did not
        drop frames, a camera that paused: more than a period late) it starts again at the
        frame taken.
        """
        fps = self.pipeline.capture_fps
        if fps is None:
            self._last_frame = now
            return True
        period = 1.0 / fps
        due = self._last_frame + period
        if now >= due - EPS:
            self._last_frame = due if now - due < period else now
            return True
        return False

    def on_gate(self, verdict: Verdict, now: float) -> bool:
        """The gate's verdict on one frame; True when the frame may go to the model.

        Called before the frame is queued: on an edge that changes the settings (a trigger
        that wakes the NPU) it waits, with the lock released, until the writer has written
        them, so the first inference already runs at the raised clocks. At most
        WAKE_WAIT_S: a write that hangs (a device that does not resume) must not stall the
        pipeline, whose frames then go on at the settings the writer has reached.
        """
        snap = verdict.reason == "snap"
        with self._lock:
            if verdict.motion:
                change = self.activity.trigger("motion", now)
            elif snap:
                change = self.activity.trigger("snap", now)
            else:
                change = self.activity.quiet(now)
            generation = self._on_transition(change) if change is not None else None
            admit = self._admit(verdict, snap, change, now)
        # A wake's settings are waited for; lowering (the quiet frame that ends the
        # cooldown) is the writer's business, as on the tick: a slow store must not stall
        # the frames of a scene that went quiet.
        if generation is not None and change is not None and change.before == "idle":
            with self._wake:
                self._wake.wait_for(lambda: self._tried(generation), WAKE_WAIT_S)
        return admit

    def _admit(self, verdict: Verdict, snap: bool, change: Optional[Transition],
               now: float) -> bool:
        """Whether a frame the gate passed may go to the model (the profile's infer fps cap;
        a snap and a wake's first frame always may). Under the lock."""
        if not verdict.infer:
            return False
        if snap:
            self._last_admit = now
            return True
        cap = self.pipeline.max_infer_fps
        onset = change is not None and change.before == "idle"
        if (cap is not None and not onset
                and (cap <= 0 or now - self._last_admit < 1.0 / cap - EPS)):
            return False
        self._last_admit = now
        return True

    def on_snap(self, now: float) -> None:
        """A client asked for a snap, or a PIR sees someone: wake now, ahead of the frame
        that will answer it (for the PIR, again each tick while it holds)."""
        with self._lock:
            change = self.activity.trigger("snap", now)
            if change is not None:
                self._on_transition(change)

    def _on_transition(self, change: Transition) -> Optional[int]:
        """Apply an idle edge's settings; only idle edges are events. Active and cooldown
        alternate with every frame when motion comes and goes frame by frame, and an event
        each time would flood the event log (status and power messages show cooldown).
        The generation the writer must reach to have written the new settings, None when
        the edge changes no settings."""
        if not change.settings_changed:
            return None
        self._pending.append(
            {"kind": "activity", "state": change.after, "previous": change.before,
             "reason": change.reason}
        )
        if change.after != "idle":
            self.load.reset(1.0)
        self._apply_state()
        return self._progress.asked

    # -- event loop --------------------------------------------------------------------------

    def tick(self, now: float, load: Optional[LoadSample] = None,
             queued: bool = False) -> list[Event]:
        """Once a second: readings, rules, cooldown, load feedback, diff, energy; events.

        ``queued``: the events join the queue a pin's go to, in the order they were decided,
        for the caller to take with drain_events; returned, those of a tick on another
        thread were numbered after a pin answered meanwhile that came later."""
        if not self._started:
            return []
        self._revisit_policies(now)
        reader = self.inputs
        inputs = reader.read(now)
        with self._lock:
            if not self._started or reader is not self.inputs:
                return []  # stopped, or started afresh on another board, while reading
            self._retry_failed()
            decision, latches = self.rules.evaluate(inputs.readings)
            self._take_inputs(inputs)
            events = self._drain() + self._latch_events(latches)
            if (decision.profile, decision.model_variant) != (
                self.decision.profile, self.decision.model_variant
            ):
                events.append(self._switch(decision, now))
            else:
                self.decision = decision  # same profile, maybe a new reason (pin by another)
            change = self.activity.tick(now)
            if change is not None:
                self._on_transition(change)
            if load is not None:
                if load.cpu_percent is None and inputs.cpu_peak is not None:
                    load = replace(load, cpu_percent=inputs.cpu_peak)  # psutil, measured here
                self.load.update(load)
            self._apply_state()
            self._integrate(now, inputs, load)
            events += self._drain()
            if queued:
                self._pending.extend(events)
                return []
            return events

    def drain_events(self) -> list[Event]:
        """The events waiting, in the order decided: a pin's, taken by the daemon as the pin
        is answered (a stop before the tick lost it), and a queued tick's."""
        with self._lock:
            return self._drain()

    def pin(self, name: Optional[str], who: str) -> None:
        """Pin a profile for a client (None releases); KeyError for an unknown name.

        Applied at once; its profile_change waits with the other events of the next tick
        (`drain_events`).
        """
        with self._lock:
            self.rules.pin(name, who)
            if name is not None:
                decision = Decision(name, f"pinned by {who}", "pin", pinned_by=who)
            else:
                decision, _ = self.rules.evaluate(self._readings)
            if decision.profile != self.decision.profile:
                self._pending.append(self._switch(decision, self._last_tick or 0.0))
            else:
                self.decision = decision
                self._pending.append(self._profile_event(decision, decision.profile))
            self._apply_state()

    def _switch(self, decision: Decision, now: float, initial: bool = False) -> Event:
        previous = None if initial else self.decision.profile
        self.decision = decision
        self.profile = self.profiles[decision.profile]
        self.activity.configure(self.profile.cooldown_s, self.profile.wake_on)
        in_profile(decision.profile)
        log.info(
            "profile %s: %s", decision.profile, decision.reason,
            extra=event(MessageId.PROFILE_CHANGED, profile=decision.profile,
                        reason=decision.reason),
        )
        return self._profile_event(decision, previous)

    @staticmethod
    def _profile_event(decision: Decision, previous: Optional[str]) -> Event:
        out: Event = {
            "kind": "profile_change",
            "profile": decision.profile,
            "reason": decision.reason,
            "source": decision.source,
        }
        if previous is not None:
            out["previous"] = previous
        if decision.model_variant is not None:
            out["model_variant"] = decision.model_variant
        return out

    def _latch_events(self, latches: list[Latch],
                      rules: Optional[Sequence[RuleConfig]] = None) -> list[Event]:
        """Events for latches of ``rules`` (the config's by default; a reload's releases
        name the old config's)."""
        events = []
        for latch in latches:
            rule = (self.cfg.rules if rules is None else rules)[latch.rule]
            events.append({
                "kind": latch.kind,
                "state": {"thermal": ("hot", "cool"), "light": ("held", "released"),
                          "battery": ("low", "ok")}[latch.kind][0 if latch.held else 1],
                "detail": latch.detail,
                "rule": rule.name or latch.rule,
            })
            log.log(
                logging.WARNING if latch.held and latch.kind == "thermal" else logging.INFO,
                "%s rule %s %s: %s", latch.kind, rule.name or latch.rule,
                "holds" if latch.held else "released", latch.detail,
            )
        return events

    def _drain(self) -> list[Event]:
        events, self._pending = self._pending, []
        return events

    # -- applying ----------------------------------------------------------------------------

    def target(self) -> Target:
        """The policy's target for the current profile, activity state and load level."""
        state = self.activity.settings_state
        level = self.load.level if state == "active" else None
        return build(self.profile.settings(state), self.caps, level, idle=self.profile.idle)

    def _apply_state(self) -> None:
        """Compute what is wanted now and hand the diff to the writer (under the lock)."""
        target = self.target()
        self.notes = target.notes + self._zone_notes
        variant = chosen_variant(self.decision.model_variant, target.pipeline.model_variant)
        if variant != self.model_variant:
            self._pending.append({"kind": "model_variant", "variant": variant or "",
                                  # a rule's "" (the main model) is its ask too
                                  "reason": self.decision.reason
                                  if self.decision.model_variant is not None
                                  else f"profile {self.profile.name}"})
            self.model_variant = variant
        self.pipeline = target.pipeline
        completed = complete(target.knobs, self.baseline, self.driven)
        # A floor left as found and lowered under a ceiling (complete) is driven from now
        # on: its original is wanted again once the ceiling is back above it.
        known = set(self.driven)
        self.driven.extend(key for key in completed if key not in known)
        # nothing for a policy whose CPUs are offline: the kernel refuses it all (EBUSY)
        wanted, self.wanted = self.wanted, {
            key: value for key, value in completed.items()
            if self._inactive_policy(key) is None}
        # A changed want is a request even with nothing to write against what is applied:
        # the writer may be writing an older want right now, which this one undoes.
        if self._worker is not None and (wanted != self.wanted
                                         or diff(self.applied, self.wanted)):
            self._request()

    def _record(self, key: str, value: str, exc: Optional[Exception]) -> None:
        """The result of one write (under the lock): a refusal is logged and sent as an
        event once per distinct error, and tried again after 1, 2, 4 ... ticks."""
        self._due.discard(key)
        self._written[key] = self._written.get(key, 0) + 1
        if self._inactive_policy(key) is not None:
            # written as its CPUs went offline: written afresh once they are back
            self._forget_applied({key.rpartition("/")[0]})
            return
        if (exc is not None and getattr(exc, "errno", None) == errno.EBUSY
                and key.rpartition("/")[0] in self._policies):
            # maybe its CPUs went offline (cpufreq.c answers EBUSY for an inactive
            # policy): the next tick looks (_revisit_policies)
            self._policies_recheck = -math.inf
        if exc is not None:
            errno_ = getattr(exc, "errno", None)
            if self.failed.get(key) != str(exc):
                log.warning(
                    "cannot set %s to %s: %s", key, value, exc,
                    extra=event(MessageId.KNOB_FAILED, knob=key, value=value, errno=errno_),
                )
                self._pending.append(
                    {"kind": "knob_failed", "knob": key, "value": value, "error": str(exc)}
                )
            self.failed[key] = str(exc)
            wait = min(2 * self._retry.get(key, (0, 0))[1] or 1, RETRY_MAX_TICKS)
            self._retry[key] = (wait, wait)
        else:
            if self.failed.pop(key, None) is not None:
                log.info("%s set to %s after being refused", key, value)
            self._retry.pop(key, None)
        self.applied[key] = value  # the value wanted: a refused one is retried (tick)

    def _retry_failed(self) -> None:
        """Hand the writer the refused knobs whose wait is over (RETRY_MAX_TICKS)."""
        due = False
        for key, (left, wait) in list(self._retry.items()):
            if key not in self.applied:  # no longer driven (a reload)
                del self._retry[key]
            elif left == 0:  # with the writer already, not tried yet
                continue
            elif left > 1:
                self._retry[key] = (left - 1, wait)
            else:
                self._retry[key] = (0, wait)
                self._due.add(key)
                due = True
        if due and self._worker is not None:
            self._request()

    # -- readings and energy -----------------------------------------------------------------

    @property
    def lux(self) -> Optional[float]:
        """The light level the rules last judged (the sensor sensors.light names); None
        before a reading."""
        return self._readings.lux

    def _take_inputs(self, inputs: Inputs) -> None:
        self._readings = inputs.readings
        self.battery = inputs.battery
        self.batteries = inputs.batteries
        self.last_measured = inputs.meter_w
        self.meter_source = inputs.meter_source

    def _integrate(self, now: float, inputs: Inputs, load: Optional[LoadSample]) -> None:
        last, self._last_tick = self._last_tick, now
        dt = 0.0 if last is None else now - last
        if inputs.meter_w is not None:
            self.measured.add(Watts(static=inputs.meter_w), dt)
        model = self.energy_model
        if model is None:
            return
        duty = 0.0
        pressure = self.load.last
        if pressure is not None and self.cfg.model.delegate:
            duty = pressure.duty  # the model runs on the accelerator only with a delegate

        def device(kind: str, busy: float) -> DeviceLoad:
            """Only "suspended" is off (powered while busy): "unsupported" (runtime PM
            disabled), "error" and an unknown status leave the device powered."""
            off = inputs.runtime_status.get(kind) == "suspended"
            return DeviceLoad(inputs.device_hz.get(kind), busy, busy if off else 1.0)

        inactive = {p.name for p in self._policies.values() if not p.active}
        state = PowerState(
            # a cluster whose CPUs are offline draws (nearly) nothing: not idle at its top
            # OPP, as its frequency, unreadable then (EBUSY), would otherwise count it
            cpus={n: CpuLoad(inputs.cpu_khz.get(n), inputs.cpu_busy.get(n, 0.0),
                             online=n not in inactive)
                  for n in model.clusters},
            # only an NPU that was found: a board is recognised without its accelerator
            # (a Pi 5 without the AI Kit, a kernel without the NPU driver)
            npu=None if self.npu_device is None else device("npu", duty),
            # the GPU, if found: its busy time is not measured
            gpu=None if self.caps.gpu is None else device("gpu", 0.0),
        )
        self.last_estimate = estimate(model, state)
        self.estimated.add(self.last_estimate, dt)

    # -- what clients see --------------------------------------------------------------------

    def profile_status(self) -> dict[str, Any]:
        with self._lock:
            d = self.decision
            out: dict[str, Any] = {
                "name": d.profile,
                "reason": d.reason,
                "source": d.source,
                "description": self.profile.description,
                "activity": self.activity.state,
                "available": sorted(self.profiles),
            }
            if d.pinned_by:
                out["pinned_by"] = d.pinned_by
            return out

    def knob_status(self) -> dict[str, dict[str, Any]]:
        """Each driven knob: its value now, the target, the original, any error.

        A knob with a write pending or in progress is not read (no value): its read may
        wait for the same driver as its store (the device's lock, a resume), and the
        status must not wait for a write.

        The others are read on threads of the KnobReader, each waited for READ_TIMEOUT_S
        at most: a read that does not return (a device whose show() waits for a resume
        that does not come, a hung driver) shows as ``"value": null`` with an ``error``,
        and is not read again while it is out; a write refusal and a read timeout are both
        in ``error``, joined by "; ". On the event loop nothing is read or waited for: the
        status shows the reads ``read_knobs`` awaited just before (or newer ones)."""
        keys, stamps, reader = self._readable()
        if _on_event_loop():
            reads = reader.latest(stamps)
        else:
            reads = reader.start(stamps)
            reader.wait(reads)
        current = {key: reader.outcome(read, stamps[key]) for key, read in reads.items()}
        out: dict[str, dict[str, Any]] = {}
        with self._lock:
            for key in keys:
                out[key] = self._knob_entry(key, current.get(key))
        return out

    async def read_knobs(self) -> None:
        """Read the knobs the status shows off the event loop, and wait there, without
        holding it up, until each read has returned or is READ_TIMEOUT_S old: the status
        that follows on the loop shows them (knob_status). A read still out from an earlier
        status is waited for no longer than its own time, and not started again."""
        _, stamps, reader = self._readable()
        futures, left = reader.pending(reader.start(stamps))
        if futures:
            await asyncio.wait([asyncio.wrap_future(f) for f in futures], timeout=left)

    def _readable(self) -> tuple[list[str], dict[str, int], KnobReader]:
        """The driven knobs, the ones to read now (no write pending) with their write
        counts, and the reader."""
        with self._lock:
            keys = list(self.driven)
            busy = self._unsettled()
            stamps = {key: self._written.get(key, 0) for key in keys if key not in busy}
            return keys, stamps, self._reader

    def _unsettled(self) -> set[str]:
        """The knobs the writer has yet to write or is writing (under the lock)."""
        if self._worker is None:
            return set()
        busy = set(diff(self.applied, self.wanted)) | self._due
        if self._writing is not None:
            busy.add(self._writing)
        return busy

    def _knob_entry(self, key: str,
                    read: Optional[tuple[Optional[str], Optional[str]]]) -> dict[str, Any]:
        """A knob's status from its read (KnobReader.outcome) and what the writer knows."""
        entry: dict[str, Any] = {}
        value, read_error = read if read is not None else (None, None)
        if read is not None:
            entry["value"] = value  # null: the read has not returned (read_error says so)
        if key in self.wanted:
            entry["target"] = self.wanted[key]
        if key in self.baseline:
            entry["original"] = self.baseline[key]
        errors = [e for e in (self.failed.get(key), read_error) if e is not None]
        if errors:
            entry["error"] = "; ".join(errors)
        return entry

    def watts(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.last_measured is not None:
            out.update(value=round(self.last_measured, 3), source="meter",
                       meter=self.meter_source)
        elif self.last_estimate is not None:
            out.update(value=round(self.last_estimate.total, 3), source="estimate")
        if self.last_estimate is not None:
            out["estimate"] = self.last_estimate.to_dict()
        if self.energy_model is not None:
            out["model"] = self.energy_model.name
        return out

    def joules(self) -> dict[str, float]:
        out = {}
        if self.measured.seconds:
            out["measured"] = round(self.measured.joules.total, 3)
        if self.estimated.seconds:
            out["estimated"] = round(self.estimated.joules.total, 3)
        return out

    def status(self) -> dict[str, Any]:
        """The `power` part of the status reply; missing values are left out."""
        knobs = self.knob_status()
        with self._lock:
            now = self._last_tick
            activity: dict[str, Any] = {"state": self.activity.state,
                                        "reason": self.activity.reason}
            remaining = self.activity.remaining(now) if now is not None else None
            if remaining is not None:
                activity["idle_in_s"] = round(remaining, 3)
            out: dict[str, Any] = {
                "enabled": self.cfg.power.enabled,
                "writes": self.writes,
                "profile": self.profile_status(),
                "activity": activity,
                "knobs": knobs,
                "temperatures": {k: round(v, 1) for k, v in self._readings.temps_c.items()},
                "watts": self.watts(),
                "joules": self.joules(),
                "pipeline": {k: v for k, v in (
                    ("capture_fps", self.pipeline.capture_fps),
                    ("max_infer_fps", self.pipeline.max_infer_fps),
                    ("model_variant", self.model_variant),
                ) if v is not None},
            }
            if self.activity.state != "idle":
                out["load_level"] = round(self.load.level, 3)
            if self.load.last is not None:
                p = self.load.last
                out["load"] = {"duty": round(p.duty, 3), "cpu": round(p.cpu, 3),
                               "backlog": p.backlog}
            if self.battery is not None:
                out["battery"] = {k: v for k, v in self.battery.items() if v is not None}
            # What the battery rules judge: `battery` is the first battery alone, and on a
            # laptop with two it showed 97 % while the rules acted on 8 %.
            if self.batteries:
                out["batteries"] = [{k: v for k, v in b.items() if v is not None}
                                    for b in self.batteries]
            out.update(self._battery_judged())
            if self.lux is not None:
                out["lux"] = self.lux
            if self.notes:
                out["notes"] = list(self.notes)
            return out

    def power_message(self) -> dict[str, Any]:
        """One message for the `power` topic: what changes second to second."""
        with self._lock:
            message: dict[str, Any] = {
                "class": "power",
                "ts": round(time.time(), 3),
                "profile": self.decision.profile,
                "reason": self.decision.reason,
                "activity": self.activity.state,
                "temperatures": {k: round(v, 1) for k, v in self._readings.temps_c.items()},
            }
            watts = self.watts()
            if "value" in watts:
                message["watts"] = watts["value"]
                message["watts_source"] = watts["source"]
            joules = self.joules()
            if joules:
                message["joules"] = joules
            if self.lux is not None:  # the light sensor sensors.light names, when it reads
                message["lux"] = round(self.lux, 2)
            # as in the status: a client following the power topic sees the switch to
            # battery that a profile_change event names the reason of
            message.update(self._battery_judged())
            return message

    def _battery_judged(self) -> dict[str, Any]:
        """What the battery rules judge (under the lock): `battery_percent` and
        `on_battery`, each left out while it cannot be told."""
        readings = self._readings
        out: dict[str, Any] = {}
        if readings.battery_percent is not None:
            out["battery_percent"] = round(readings.battery_percent, 1)
        if readings.on_battery is not None:
            out["on_battery"] = readings.on_battery
        return out


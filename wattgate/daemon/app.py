"""The daemon: wires source, gate, model, event log and server together on one event loop.

Start order: socket first (so early clients wait for their hello instead of being
refused), then the model and a warm-up (wattgate/daemon/warmup.py), the camera, the
pipeline threads, the camera's first frame through the gate, then hello/READY: what the
first frames allocate and page in belongs to start-up, not to the memory growth after it.
SIGTERM/SIGINT stop it; SIGHUP reloads config.toml and keeps the old config if the
new one is bad.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sqlite3
import time
from collections import deque
from collections.abc import Coroutine, Iterator, Sequence
from functools import partial
from pathlib import Path
from textwrap import shorten
from typing import Any, Callable, Optional, TypeVar

from wattgate import __version__
from wattgate.config import Config, ConfigError, load_config
from wattgate.daemon.camera_watch import SupervisedSource
from wattgate.daemon.commands import NO_CONFIG_FILE, STOPPING, TOPICS, Commands
from wattgate.daemon.eventlog import EventLog
from wattgate.daemon.handoff import (
    ExitingExecutor,
    Handoff,
    OneThread,
    in_own_thread,
    join_within,
)
from wattgate.daemon.hub import ClientSession, Hub, Message
from wattgate.daemon.logs import MessageId, event, set_level
from wattgate.daemon.notify import (
    Notifier,
    ProgressWatch,
    inherited_listener,
    stall_limit,
    watchdog_interval,
)
from wattgate.daemon.pathcheck import expect_journal_dir
from wattgate.daemon.pipeline import Inferred, Pipeline
from wattgate.daemon.power import PowerController
from wattgate.daemon.power_inputs import stop_reading
from wattgate.daemon.sensors import SensorSettings, SensorWatch
from wattgate.daemon.server import Server, quiet_departures
from wattgate.daemon.warmup import model_frame, warm_gate
from wattgate.drivers.camera import SourceError
from wattgate.drivers.inference import Model, ModelError
from wattgate.drivers.runtime import RuntimeMissing
from wattgate.drivers.sysfs import Sysfs
from wattgate.policies.gating import MotionGate
from wattgate.policies.lighting import LightVerdict
from wattgate.policies.load import LoadSample
from wattgate.policies.profiles import variant_model

log = logging.getLogger("wattgate.daemon")

EXIT_OK = 0
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: no camera or model to work with
PROTO = 1
STATUS_EVERY_S = 5.0  # how often systemd's STATUS= line is refreshed
STATUS_REASON_CHARS = 160  # of a rejected reload's reason in STATUS= (the journal has it all)
IDLE_THREAD_JOIN_S = 0.5  # at a stop, the longest wait for the load and `infer` threads
TICK_END_WAIT_S = 2.0  # at a stop, the longest wait for a power tick under way to end
REJECTED = "reload rejected"
FIRST_FRAME_POLL_S = 0.005  # how often start-up looks whether the first frame is through
RESULT_POLL_S = 0.002  # while results keep coming, the loop takes them this often (handoff.py)
# daemon.* settings a running daemon cannot take: the socket is bound, the log opened
RESTART_KEYS = ("socket", "socket_mode", "socket_group", "state_dir")
BATCH_SUBSCRIBERS = 32  # from this many result subscribers on (~160 us of fan-out a result)
# While the model loads (a delegate compiling for an NPU on first boot can take minutes),
# systemd is asked for EXTEND_STEP_S more start time every EXTEND_EVERY_S, for at most
# EXTEND_MAX_S: a load that hangs still ends in the unit's start timeout.
EXTEND_EVERY_S = 20.0
EXTEND_STEP_S = 60.0
EXTEND_MAX_S = 600.0
# How long the stop waits for a reload or model switch under way before giving it up: one
# can wait for good on a sysfs read a hung driver never answers, and systemd's SIGKILL
# (TimeoutStopSec=20 s) would then leave the board's settings until the next start. Well
# under that, with room for the pipeline's stop and the restore after it.
RECONFIGURE_STOP_WAIT_S = 5.0


T = TypeVar("T")


class StartupError(Exception):
    """The daemon cannot start: no model or no camera. Exit code 69."""


def load_model(cfg: Config) -> Model:
    try:
        model = Model.from_config(cfg.model)
    except (ModelError, RuntimeMissing) as exc:
        raise StartupError(f"model: {exc}") from None
    # One inference before READY: the runtime packs weights and sizes its buffers on the
    # first invoke, and decoding detections (there is a face in the frame) runs its code for
    # the first time; costs that belong to start-up, not to the first client's result.
    try:
        model.infer(model_frame(cfg.camera.width, cfg.camera.height))
    except Exception as exc:  # a model that loads but cannot run is no model
        raise StartupError(f"model: first inference failed: {exc}") from None
    return model


def open_camera(
    cfg: Config,
    on_lost: Optional[Callable[[str], None]] = None,
    on_back: Optional[Callable[[], None]] = None,
    on_ended: Optional[Callable[[str], None]] = None,
) -> SupervisedSource:
    """The camera under supervision: a camera or file that is not there yet is waited for
    (reported in status and by camera_lost); only a malformed camera.source is fatal."""
    try:
        return SupervisedSource(
            cfg.camera, on_lost=on_lost, on_back=on_back, on_ended=on_ended,
            luma_rows=cfg.gate.frame_height,
        )
    except SourceError as exc:
        raise StartupError(str(exc)) from None


def open_parts(
    cfg: Config,
    on_lost: Optional[Callable[[str], None]] = None,
    on_back: Optional[Callable[[], None]] = None,
    on_ended: Optional[Callable[[str], None]] = None,
) -> tuple[Model, SupervisedSource]:
    model = load_model(cfg)
    warm_gate(cfg.gate)  # the gate's code paged in now, not at the first motion
    return model, open_camera(cfg, on_lost, on_back, on_ended)


class RateMeter:
    """Frames per second over the last few one-second samples."""

    def __init__(self, window: int = 5) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def sample(self, now: float, count: int) -> None:
        """`count` frames so far; a count that went back (a reload built a new pipeline,
        whose counters start at 0) starts the window again instead of a negative rate."""
        if self._samples and count < self._samples[-1][1]:
            self._samples.clear()
        self._samples.append((now, count))

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


def filter_result(session: ClientSession, message: Message) -> Optional[Message]:
    """The result as this subscriber asked for it (min_score, labels), or None to skip it."""
    filters = session.filters
    if not filters:
        return message
    min_score = filters.get("min_score", 0.0)
    labels = filters.get("labels")
    kept = [
        d for d in message["detections"]
        if d["score"] >= min_score and (labels is None or d["label"] in labels)
    ]
    return {**message, "detections": kept} if kept else None


class Daemon:
    def __init__(self, cfg: Config, config_path: Optional[Path] = None,
                 early_hangups: Sequence[int] = ()) -> None:
        """`early_hangups` collects the SIGHUPs that came before run() took the signal
        over (wattgate.cli holds them from its start): run() reloads once for them."""
        self.cfg = cfg
        self._early_hangups = early_hangups
        self._spawned: set[asyncio.Task[Any]] = set()  # reloads, model switches under way
        # the daemon settings the socket and the event log were opened with (RESTART_KEYS):
        # a reload compares against these, not the last file read, to say what still waits
        self.bound = cfg.daemon
        self.config_path = config_path
        self.hub = Hub()
        self.pipeline: Optional[Pipeline] = None
        self.model: Optional[Model] = None
        self.power: Optional[PowerController] = None
        self._power_starting: Optional[PowerController] = None  # _start_power under way
        self._variant: Optional[str] = None  # the model variant the pipeline runs
        self.camera: Optional[SupervisedSource] = None
        self.sensors: Optional[SensorWatch] = None
        self.started = time.monotonic()
        self.fps = RateMeter()
        self.notifier = Notifier()
        self.progress = ProgressWatch(time.monotonic(), stall_limit())
        try:
            self.eventlog = EventLog(
                os.path.join(cfg.daemon.state_dir, "events.db"),
                max_events=cfg.daemon.events_max,
                max_age_s=cfg.daemon.events_max_age_days * 86400.0,
                max_bytes=cfg.daemon.events_max_bytes,
            )
        except (OSError, sqlite3.Error) as exc:  # a file there, a read-only file system
            raise StartupError(
                f"daemon.state_dir {cfg.daemon.state_dir}: cannot open the event log: {exc}"
            ) from None
        self._stop = asyncio.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._snaps: list[tuple[float, asyncio.Future[Optional[Message]]]] = []
        # The model and labels files as they were when the model in use was loaded
        self._model_files: ModelFiles = ()
        # reloads and model variant switches, one at a time: each reads the running parts,
        # opens new ones off the loop and swaps them in; two at once would both swap
        self._reconfiguring = asyncio.Lock()
        # what holds it for a reload or model switch: the task doing the work, what it is
        # ("reload") and what it waits on now, for the stop to give it up and say why
        self._reconfig: Optional[tuple[asyncio.Task[Any], str]] = None
        self._reconfig_step = ""
        self._given_up: Optional[asyncio.Task[Any]] = None  # the work the stop cancelled
        # Model loads (at start, reloads, variant switches) are one at a time anyway (the
        # reconfiguration lock); in one thread, their transient buffers stay in one malloc
        # arena (handoff.OneThread): with a new thread each, 20 reloads of a new model left
        # ~70 MB more resident memory on 2 cores, growing until every arena (up to 8 a
        # core) had its share.
        self._loads = OneThread("wattgate-load")
        self.client_images = OneThread("wattgate-client-image")  # `infer`'s decode and run
        # set once start-up has opened its parts (or failed to): a reload before that (a
        # SIGHUP while the socket is bound) would open a second camera and pipeline
        self._opened = asyncio.Event()
        # whether systemd has had the first READY=1: until then it is still starting us, and
        # a reload (a SIGHUP during start-up) must not tell it RELOADING=1 or READY=1
        self._ready_sent = False
        # why the last reload was refused, until one works: STATUS= keeps saying so, since an
        # admin looks at `systemctl status`, and the daemon runs on the config before it
        self._reload_rejected: Optional[str] = None
        self._labels_seen: dict[str, float] = {}  # label -> ts of the last result with it
        self._labels_last: frozenset[str] = frozenset()  # the labels of the last result
        self._results: Optional[Handoff[Inferred]] = None  # from the inference thread
        self._failing: set[str] = set()  # parts of the tick whose last run raised
        self.server = Server(cfg.daemon, self.hub, Commands(self).table(), self._hello)

    # -- life cycle ------------------------------------------------------------------

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        loop.set_default_executor(ExitingExecutor(thread_name_prefix="wattgate-call"))
        loop.set_exception_handler(quiet_departures)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        if self._early_hangups:
            log.info("a SIGHUP came during start-up: reloading once started")
            self._spawn(self.reload())
        await self.server.start(inherited_listener())
        log.info("listening on %s", self.server.path)
        try:
            started = await self._start(loop)
        except BaseException:  # a part that does not open, or a bug: the board back first
            self._stop.set()  # a reload waiting for start-up to finish does not start then
            await self._shut_down_after_reconfiguration(loop)
            raise
        if started is not None:  # None: asked to stop while the model loaded
            await self._serve(loop, *started)
        self.notifier.stopping()
        log.info("stopping", extra=event(MessageId.STOPPING))
        await self._shut_down_after_reconfiguration(loop)
        return EXIT_OK

    async def _shut_down_after_reconfiguration(self, loop: asyncio.AbstractEventLoop) -> None:
        """_shut_down once a reload or model switch under way has finished or been given
        up (_end_reconfiguration); none starts after this."""
        held = await self._end_reconfiguration()
        try:
            await self._shut_down(loop)
        finally:
            if held:
                self._reconfiguring.release()

    async def _end_reconfiguration(self) -> bool:
        """Let a reload or model switch under way finish first (it may be starting a
        pipeline or writing sysfs), for RECONFIGURE_STOP_WAIT_S at most; then give it up
        (cancel it) and stop anyway: one waiting for a read stuck in a driver would hold
        the stop until systemd's SIGKILL. Its thread, should the read return, finds the
        power controller stopped and writes nothing (PowerController.stop). Whether the
        lock is now held; none starts after this either way (the stop is set)."""
        if await self._acquire_within(RECONFIGURE_STOP_WAIT_S):
            return True
        if self._reconfig is not None:
            work, what = self._reconfig
            log.error("%s given up after %.0f s, still %s; stopping without it", what,
                      RECONFIGURE_STOP_WAIT_S, self._reconfig_step or "under way")
            self._given_up = work
            work.cancel()
        if await self._acquire_within(RECONFIGURE_STOP_WAIT_S):
            return True
        log.error("a reconfiguration still holds on after being given up; stopping anyway")
        return False

    async def _acquire_within(self, timeout: float) -> bool:
        """Take the reconfiguration lock; False if ``timeout`` seconds pass first."""
        acquiring = asyncio.ensure_future(self._reconfiguring.acquire())
        await asyncio.wait({acquiring}, timeout=timeout)
        if not acquiring.done():
            acquiring.cancel()
            await asyncio.wait({acquiring})  # taken meanwhile after all: not cancelled
        return not acquiring.cancelled()

    def _step(self, what: str) -> None:
        """Say what the reconfiguration under way waits on now (the stop's log names it)."""
        self._reconfig_step = what

    async def _serve(self, loop: asyncio.AbstractEventLoop, model: Model,
                     source: SupervisedSource) -> None:
        """Ready: serve clients and tick until asked to stop."""
        self.server.set_ready()
        # After a reload that came during start-up, never in the middle of one: RELOADING=1
        # and its READY=1 belong only to a reload that started after this READY=1.
        async with self._reconfiguring:
            # logged first: whoever sees READY=1 (systemctl start returning) finds it in the log
            log.info(
                "ready: model %s, source %s", model.info.get("name"), source.description,
                extra=event(MessageId.STARTED),
            )
            self.notifier.ready(self.status_line())
            self._ready_sent = True
        ticker = loop.create_task(self._tick())
        try:
            await self._stop.wait()
        finally:
            ticker.cancel()  # a power tick under way ends first: its events are kept
            await asyncio.wait({ticker}, timeout=TICK_END_WAIT_S)

    async def _asking_for_time(self, work: asyncio.Future[T], extend: bool = True,
                               doing: str = "loading the model") -> Optional[T]:
        """work's result, or None if the daemon is asked to stop first: systemd's stop
        must not wait for a load that can take minutes (TimeoutStopSec= is 20 s). With
        `extend`, more time is asked of systemd while it runs (EXTEND_*): TimeoutStartSec=
        covers the whole start-up, and a reload too (systemd times RELOADING=1 with it).
        `doing` is what the log says it is still doing then."""
        stopping = asyncio.ensure_future(self._stop.wait())
        either: set[asyncio.Future[Any]] = {work, stopping}
        waited = 0.0
        try:
            while True:
                done, _ = await asyncio.wait(either, timeout=EXTEND_EVERY_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if work in done:
                    return work.result()
                if done:
                    return None
                waited += EXTEND_EVERY_S
                if (extend and waited <= EXTEND_MAX_S
                        and self.notifier.extend_timeout(EXTEND_STEP_S)):
                    log.info("still %s after %.0f s; asked systemd for %.0f s more",
                             doing, waited, EXTEND_STEP_S)
        finally:
            stopping.cancel()

    async def _start(
        self, loop: asyncio.AbstractEventLoop
    ) -> Optional[tuple[Model, SupervisedSource]]:
        """Power control, the model and the source, the pipeline on them, the sensors;
        None if asked to stop while power control started or the model loaded (either is
        left to its thread) or while the camera's first open was under way (the shut-down
        stops the source)."""
        async with self._reconfiguring:  # a SIGHUP meanwhile reloads once this is done
            try:
                if not await self._start_power(loop):
                    return None
                variant = self._wanted_variant()
                files = model_files(_with_variant(self.cfg, variant))
                opened = await self._load_unless_stopped(self._open_parts, self.cfg, variant)
                if opened is None:
                    log.info("asked to stop while loading the model; not waiting for it")
                    return None
                model, source = opened
                self._variant, self._model_files = variant, files
                self._start_pipeline(model, source)
            finally:
                self._opened.set()
        attempted = await self._asking_for_time(asyncio.ensure_future(loop.run_in_executor(
            None, source.wait_first_attempt, source.settings.open_timeout_s + 1.0)),
            doing="opening the camera")
        if attempted is None:
            log.info("asked to stop while opening the camera; not waiting for it")
            return None
        await self._first_frame(source)
        self.sensors = self._watch_sensors(self.cfg)
        return model, source

    async def _load_unless_stopped(self, func: Callable[..., T], *args: Any,
                                   extend: bool = True) -> Optional[T]:
        """func(*args) (a model load) in the loads' thread, or None if the daemon is
        asked to stop first; the load is then left to its thread. Not in the loop's
        executor: the interpreter waits for the executor's threads at exit."""
        loading = asyncio.ensure_future(self._loads.run(func, *args))
        done = await self._asking_for_time(loading, extend)
        if done is None:
            loading.cancel()
        return done

    def _watch_sensors(self, cfg: Config) -> SensorWatch:
        """The light sensor and the PIR of ``cfg``, polled from now on."""
        sensors = SensorWatch(
            Sysfs(cfg.power.sysfs_root), SensorSettings.from_config(cfg),
            on_lighting=self._on_lighting_thread, on_pir=self._from_thread(self._on_pir),
            on_lighting_extended=self._relearn_lighting,
        )
        sensors.start()
        return sensors

    async def _start_power(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Power control, if there are knobs: first thing with sysfs, it undoes what a
        crashed run left changed, then writes the idle settings. False if the daemon is
        asked to stop first (a read stuck in a driver): the start is left to its thread."""
        # Kept where the stop finds it until the start is over: a start that the stop does
        # not wait for is stopped too, and its late return then writes nothing
        # (PowerController.stop).
        power = self._power_starting = PowerController(self.cfg)
        starting = asyncio.ensure_future(
            in_own_thread("wattgate-power-start", power.start, time.monotonic()))
        events = await self._asking_for_time(starting, extend=False)
        if events is None:
            starting.cancel()
            log.info("asked to stop while starting power control under %s; not waiting "
                     "for it", self.cfg.power.sysfs_root)
            return False
        self._power_starting = None
        if power.has_knobs:
            self.power = power
            self._power_events(events)
        else:
            await loop.run_in_executor(None, power.stop)
            log.info("no power knobs under %s: power control is off", self.cfg.power.sysfs_root)
        return True

    async def _shut_down(self, loop: asyncio.AbstractEventLoop) -> None:
        """Everything started, stopped: sensors, the pipeline, then power and the server.
        Snaps still waiting are answered first (unavailable), while the pipeline stops."""
        self._give_up_snaps()
        if self.sensors is not None:
            self.sensors.stop()
        await self._stop_pipeline()
        await self._release(loop)

    async def _first_frame(self, source: SupervisedSource) -> None:
        """Wait until the pipeline has taken its first frame through the gate.

        The gate sizes its work images by that frame, and the capture thread's allocator
        arena grows to hold them: memory that belongs to start-up, not to the first minute
        after READY. Not waited for when the camera is not open (READY then says it is
        missing), nor longer than camera.stall_s (after which the supervisor reopens it),
        nor once the daemon is asked to stop.
        """
        pipeline = self.pipeline
        assert pipeline is not None
        counters = pipeline.counters
        deadline = time.monotonic() + self.cfg.camera.stall_s
        while (counters.frames == 0 and source.opened and not counters.source_ended
               and not self._stop.is_set() and time.monotonic() < deadline):
            await asyncio.sleep(FIRST_FRAME_POLL_S)

    async def _release(self, loop: asyncio.AbstractEventLoop) -> None:
        """What start-up acquired before the pipeline, given back on any way out."""
        for power in (self.power, self._power_starting):
            if power is not None:  # every original sysfs value back
                await loop.run_in_executor(None, power.stop)
        self._power_starting = None
        # Unconditionally: a start without knobs read the inputs too (their threads are
        # shared); idle readers end, and those left at exit are reads that hang.
        await loop.run_in_executor(None, stop_reading)
        await self.server.close()
        threads = [t for t in (self._loads.close(), self.client_images.close()) if t]
        await loop.run_in_executor(None, join_within, threads, IDLE_THREAD_JOIN_S)
        self.eventlog.close(time.time())

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _open_parts(self, cfg: Config, variant: Optional[str]) -> tuple[Model, SupervisedSource]:
        return open_parts(
            _with_variant(cfg, variant), self._camera_hook(self._on_camera_lost),
            self._from_thread(self._on_camera_back), self._camera_hook(self._on_camera_ended),
        )

    def _camera_hook(self, announce: Callable[[str], None]) -> Callable[[str], None]:
        """A new source's on_lost or on_ended, which `announce` on the event loop. The
        source calls it from read(), on the capture thread of the pipeline reading it,
        which is `self.pipeline` (a source is read by its own pipeline only, and a stopped
        one, all a reload leaves of the old, announces nothing). That pipeline ends its
        motion episode there, so motion_end is sent before camera_lost: an episode does not
        stay open while nothing is seen."""
        on_loop = self._from_thread(announce)

        def hook(reason: str) -> None:
            pipeline = self.pipeline
            if pipeline is not None:
                pipeline.camera_lost(time.time())
            on_loop(reason)

        return hook

    def _wanted_variant(self, cfg: Optional[Config] = None) -> Optional[str]:
        """The model variant the power policy wants now, or for ``cfg`` (a reload's new
        config) the one it will want once it has that config: the policy is asked, not
        given it, so a reload whose model does not load leaves the power side as it was,
        and one that loads loads the variant the new policy will keep, not the old one's
        and then another. `_variant` names the one loaded, set only once a load has worked.
        None (the main model) if the config has no such variant."""
        if self.power is None:
            return None
        variant = self.power.model_variant if cfg is None else self.power.variant_under(cfg)
        return variant if variant in (cfg or self.cfg).model.variants else None

    def _start_pipeline(self, model: Model, source: SupervisedSource) -> None:
        self.model = model
        self.camera = source
        assert self._loop is not None
        self._results = Handoff(self._loop, self._on_results, self._result_poll_s)
        last_seq = self.pipeline.last_seq if self.pipeline is not None else 0  # on reload
        self.progress.work_dropped()  # what the old pipeline's model had, went with it
        self.pipeline = Pipeline(
            source, MotionGate(self.cfg.gate), model,
            self._results.put, self._from_thread(self._on_motion), power=self.power,
            last_seq=last_seq, on_error=self._from_thread(self._on_pipeline_error),
        )
        pending = [requested for requested, future in self._snaps if not future.done()]
        if pending:  # snaps asked of the pipeline this one replaces (a reload)
            self.pipeline.request_snap(max(pending))
        self.pipeline.start()

    def _result_poll_s(self) -> float:
        """How long results may wait to be sent together (handoff.py): each result costs
        the event loop ~5 us a subscriber, so batching pays only for a wide fan-out."""
        return RESULT_POLL_S if self.hub.subscribers("results") >= BATCH_SUBSCRIBERS else 0.0

    async def _stop_pipeline(self) -> None:
        """Stop the pipeline's threads, then deliver the results they made last."""
        if self.pipeline is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.pipeline.stop)
        if self._results is not None:
            self._results.close()

    def _from_thread(self, func: Callable[..., None]) -> Callable[..., None]:
        """Wrap a loop-side callback so the pipeline threads can call it safely."""
        loop = self._loop
        assert loop is not None

        def call(*args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(func, *args)

        return call

    async def reload(self) -> tuple[bool, str]:
        """SIGHUP or the `reload` command: apply the config file again, or keep the old one."""
        if self.config_path is None:
            message = NO_CONFIG_FILE
            log.info("reload: %s", message)
            return False, message
        await self._opened.wait()
        async with self._reconfiguring:
            if self._stop.is_set():
                log.info("reload: %s", STOPPING)
                return False, STOPPING
            announce = self._ready_sent
            if announce:
                self.notifier.reloading()
            try:
                work = asyncio.ensure_future(self._apply_reload(self.config_path))
                self._reconfig = (work, "reload")
                try:
                    applied, message = await work
                except asyncio.CancelledError:
                    if self._given_up is not work:
                        raise
                    return False, STOPPING  # the client is told so, as while loading
                finally:
                    self._reconfig, self._reconfig_step = None, ""
                if message.startswith(REJECTED):
                    self._reload_rejected = message
                elif applied:
                    self._reload_rejected = None
                return applied, message
            finally:
                if announce and not self._stop.is_set():  # after STOPPING=1, nothing
                    self.notifier.ready(self.status_line())

    async def _apply_reload(self, path: Path) -> tuple[bool, str]:
        try:
            # Off the loop, as a model load is: a drop-in of thousands of keys takes seconds
            # to read and validate, and clients and the watchdog must be answered meanwhile.
            self._step(f"reading {path} and its drop-ins")
            new = await in_own_thread("wattgate-config-read", load_config, path)
        except ConfigError as exc:
            log.error(
                "reload rejected, keeping the running config: %s", exc,
                extra=event(MessageId.CONFIG_ERROR),
            )
            return False, f"{REJECTED}: {exc}"
        for note in new.notes:  # a drop-in's array that left entries out (Config.notes)
            log.warning("reload: %s", note)
        unusable = self._unusable_power_paths(new)
        if unusable:
            log.error("reload rejected, keeping the running config: %s", unusable,
                      extra=event(MessageId.CONFIG_ERROR))
            return False, f"{REJECTED}: {unusable}"
        later = [f"daemon.{key}" for key in RESTART_KEYS
                 if getattr(new.daemon, key) != getattr(self.bound, key)]
        if later:
            log.warning("%s changed; taking effect after a restart", ", ".join(later))
        old = self.cfg  # before the pipeline's reload, which takes `new` for a new camera
        try:
            if not await self._reload_pipeline(new):
                log.info("reload: %s", STOPPING)
                return False, STOPPING
        except StartupError as exc:
            log.error("reload rejected, keeping the running pipeline: %s", exc)
            return False, f"{REJECTED}: {exc}"
        self.cfg = new
        loop = asyncio.get_running_loop()
        if self.power is not None:
            power = self.power
            # On a thread of its own, not the executor's: its sysfs reads can hang for good,
            # and the exit would wait for an executor thread (in_own_thread).
            self._step(f"reading sysfs under {new.power.sysfs_root} for the power settings")
            self._power_events(await in_own_thread(
                "wattgate-power-reload", power.reload, new, time.monotonic()))
            self._follow_variant()
        elif new.power != old.power:  # started without knobs: a new root or board may have
            started = await self._start_power(loop)  # False: the daemon is stopping
            if started and self.pipeline is not None:
                self.pipeline.power = self.power
        sensed = (new.sensors, new.power.sysfs_root)
        if self.sensors is not None and sensed != (old.sensors, old.power.sysfs_root):
            # (none yet: start-up is waiting for the first frame, then starts them from new)
            await loop.run_in_executor(None, self.sensors.stop)
            self.sensors = self._watch_sensors(new)
        self.server.cfg = new.daemon  # max_clients, admin_group, limits; new clients' queues
        self.eventlog.max_events = new.daemon.events_max
        self.eventlog.max_age_s = new.daemon.events_max_age_days * 86400.0
        self.eventlog.max_bytes = new.daemon.events_max_bytes
        set_level(new.daemon.log_level)
        log.info("reloaded %s", path, extra=event(MessageId.RELOADED))
        return True, "reloaded" + (f"; after a restart: {', '.join(later)}" if later else "")

    def _unusable_power_paths(self, new: Config) -> Optional[str]:
        """Why a reload must not move power control to ``new``'s sysfs_root or journal_dir:
        the root is not a directory (a typo), or the journal_dir is not one this user may
        write or make (a typo under a file, a read-only place). Taken, that reload gave the
        board back and wrote nothing more, while pins still answered "pinned" and hellos
        offered power control. A daemon without power control is not held to it: at start
        a missing root means no knobs."""
        if self.power is None:
            return None
        root, journal = new.power.sysfs_root, new.power.journal_dir
        if root != self.cfg.power.sysfs_root and not os.path.isdir(root):
            return (f"power.sysfs_root {root}: no such directory; power control stays on "
                    f"{self.cfg.power.sysfs_root}")
        if not new.power.enabled or journal == self.cfg.power.journal_dir:
            return None
        try:
            expect_journal_dir(journal)  # as check-config warns of it
        except OSError as exc:
            return (f"power.journal_dir {journal}: {exc}; power control stays with "
                    f"{self.cfg.power.journal_dir}")
        return None

    # -- periodic work -----------------------------------------------------------------

    async def _reload_pipeline(self, new: Config) -> bool:
        """Apply new camera, gate and model settings; StartupError (nothing changed) if
        the new parts do not open, False (nothing changed) if asked to stop while they
        open: the stop must not wait for a model load.

        Only a new camera needs a new pipeline. A new model is loaded off the loop and
        taken between two frames, a new gate too: the source stays open, so a file goes
        on from where it was and the pipeline's counters go on."""
        pipeline = self.pipeline
        variant = self._wanted_variant(new)
        files = model_files(_with_variant(new, variant))
        if new.camera != self.cfg.camera or pipeline is None:
            self._step("opening the new camera and model")
            opened = await self._load_unless_stopped(self._open_parts, new, variant)
            if opened is None:
                return False
            model, source = opened
            previous = self.camera
            await self._stop_pipeline()
            if previous is not None:
                source.take_over_loss(previous)
            self.cfg = new
            self._variant, self._model_files = variant, files
            self._start_pipeline(model, source)
            return True
        swapped: Optional[Model] = None
        # A new file under the same name (a model updated in place, renamed over the old
        # one) is a new model too: a reload that kept running the old one said "reloaded".
        if new.model != self.cfg.model or files != self._model_files:
            self._step("loading the new model")
            swapped = await self._load_unless_stopped(load_model, _with_variant(new, variant))
            if swapped is None:
                return False
        if new.gate != self.cfg.gate:
            pipeline.replace_gate(new.gate)
            if self.camera is not None:  # an MJPEG camera's reduced decode is for its rows
                self.camera.follow_luma_rows(new.gate.frame_height)
        if swapped is not None:
            self._step("handing the new model to the pipeline")
            await _swap_off_loop(pipeline.swap_model, swapped)
            self.model = swapped
            self._variant, self._model_files = variant, files
        return True

    async def _tick(self) -> None:
        """Once a second: fps, event-log flush, the watchdog's progress rule, STATUS=."""
        ping_every = watchdog_interval()
        last_ping = last_status = 0.0
        stalled_logged = False
        while True:
            now = time.monotonic()
            if self.pipeline is not None:
                self.fps.sample(now, self.pipeline.counters.frames)
                self._observe_progress(self.pipeline, now)
            if self.power is not None:
                with self._guarded("power"):
                    await self._power_tick(self.power, now)
            with self._guarded("event log"):
                # off the loop: a flush waits for a sync of the -wal (eventlog.py)
                await asyncio.get_running_loop().run_in_executor(
                    None, self.eventlog.flush, time.time())
            healthy = self.progress.healthy(now)
            if ping_every is not None and healthy and now - last_ping >= ping_every:
                self.notifier.watchdog()
                last_ping = now
            if not healthy and not stalled_logged:
                log.error(
                    "pipeline stalled (%s); withholding watchdog pings",
                    ", ".join(self.progress.stalled(now)), extra=event(MessageId.STALLED),
                )
            health_changed = stalled_logged == healthy
            stalled_logged = not healthy
            if health_changed or now - last_status >= STATUS_EVERY_S:
                self.notifier.status(self.status_line())
                last_status = now
            await asyncio.sleep(min(1.0, ping_every or 1.0))

    async def _power_tick(self, power: PowerController, now: float) -> None:
        """The power controller's tick, on an executor thread: it reads sysfs, waiting up
        to power_inputs.WAIT_S for a slow source (an ACPI battery behind the embedded
        controller), and on the loop that wait held every client's requests and results."""
        if self.sensors is not None and self.sensors.someone_around(now):
            # sensors.pir_hold_s: someone in front of the PIR counts as a snap's wake-up
            # for as long, not only at the edge that brought them, so the clocks stay up.
            power.on_snap(now)
        pipeline = self.pipeline
        load = None if pipeline is None else LoadSample.from_pipeline(
            now, pipeline.status(), busy_since=pipeline.counters.busy_since)
        # Its events wait in the controller's queue with a pin's, in the order decided.
        tick = asyncio.get_running_loop().run_in_executor(
            None, partial(power.tick, now, load, queued=True))
        try:
            await asyncio.shield(tick)
        except asyncio.CancelledError:
            # The daemon is stopping (_serve waits for this): the tick still ends on its
            # thread, within power_inputs.WAIT_S, and a profile it switched to is still
            # told, numbered and logged, not dropped with the cancelled wait.
            log.info("stopping: waiting for the power tick under way")
            try:
                await tick
            except Exception:
                log.exception("the power tick under way at the stop failed")
            self._power_events(power.drain_events())
            raise
        self._power_events(power.drain_events())
        self.hub.publish("power", power.power_message())

    @contextlib.contextmanager
    def _guarded(self, part: str) -> Iterator[None]:
        """Run one part of the tick; a failure is logged once per streak and the tick goes
        on: one bad second (a locked file, a driver error) must not end the power
        readings, the event log's flushes and the watchdog pings for good."""
        try:
            yield
        except Exception:
            if part not in self._failing:
                log.exception("%s failed; trying again every second", part)
                self._failing.add(part)
            return
        if part in self._failing:
            self._failing.discard(part)
            log.info("%s works again", part)

    def _power_events(self, events: list[dict[str, Any]]) -> None:
        """Number, log and publish the power controller's events; switch model variants."""
        for fields in events:
            kind = fields.pop("kind")
            self.emit_event(kind, time.time(), **fields)
            if kind == "model_variant":
                self._follow_variant()

    def _follow_variant(self) -> None:
        """Switch to the variant the power policy wants if it is not the one running.

        Also after a reload: its model was loaded for what the new policy wanted on the
        last tick's readings, and the reload's own reading may have sent the policy back to
        the variant it last asked for, which is no change to it and so no event."""
        wanted = self._wanted_variant()
        if wanted != self._variant and self.pipeline is not None and self._loop is not None:
            self._spawn(self._switch_model(wanted))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run work on the loop, holding its task until it is done: the loop keeps only a
        weak reference to a task, and one nothing else holds may be collected mid-way."""
        task = asyncio.get_running_loop().create_task(work)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def _switch_model(self, variant: Optional[str]) -> None:
        """Load a variant off the loop and hand it to the pipeline between two frames."""
        async with self._reconfiguring:
            if self._stop.is_set():
                return
            task = asyncio.current_task()
            if task is not None:  # the stop may give it up (_end_reconfiguration)
                self._reconfig = (task, "model switch")
            try:
                await self._switch_to(variant)
            finally:
                self._reconfig, self._reconfig_step = None, ""

    async def _switch_to(self, variant: Optional[str]) -> None:
        """_switch_model's work, holding the reconfiguration lock."""
        if variant == self._variant or variant != (self._wanted_variant() or None):
            return  # a reload meanwhile loaded it, or the policy changed its mind
        cfg = _with_variant(self.cfg, variant)
        files = model_files(cfg)
        self._step(f"loading model variant {variant or '(main model)'}")
        try:
            # no more time asked of systemd: it is not starting or reloading us
            model = await self._load_unless_stopped(load_model, cfg, extend=False)
        except StartupError as exc:
            log.error("model variant %s not loaded, keeping the current model: %s",
                      variant, exc)
            return
        if model is None:
            return  # asked to stop meanwhile
        if self.pipeline is not None:
            self._step("handing the model to the pipeline")
            await _swap_off_loop(self.pipeline.swap_model, model)
        self.model = model
        self._variant, self._model_files = variant, files
        log.info("model variant %s in use", variant or "(main model)")

    def _observe_progress(self, pipeline: Pipeline, now: float) -> None:
        counters = pipeline.counters
        self.progress.camera_quiet_s = self.cfg.camera.stall_s  # as a reload left it
        state = self.camera.state if self.camera is not None else "running"
        if counters.source_ended or state != "running":  # ended, or lost and waited for
            self.progress.pause_capture()
            if counters.source_ended:  # snaps that came before the end: no frame will come
                self._give_up_snaps()
        else:
            if self.progress.capture_paused:
                self.progress.resume_capture(now)
            if counters.last_capture:
                self.progress.capture_progress(counters.last_capture)
            if counters.paced_until > now:  # waiting for a slow paced source's next frame
                self.progress.capture_progress(now)
        busy_since = counters.busy_since
        if counters.last_inference:
            self.progress.inference_progress(counters.last_inference)
        if busy_since is not None:
            self.progress.work_pending(busy_since)

    # -- pipeline callbacks (on the loop) ----------------------------------------------

    def emit_event(self, kind: str, ts: float, **fields: Any) -> Message:
        """Give an event its seq, keep it in the event log, and send it to subscribers."""
        message = self.eventlog.append(kind, round(ts, 6), **fields)
        self.hub.publish("events", message)
        return message

    def _on_results(self, batch: list[Inferred]) -> None:
        """Results the inference thread made since the loop last looked, in order."""
        done = []
        for inferred in batch:
            message = inferred.message()  # decoded here, while the model runs on the next frame
            if message is not None:
                done.append((inferred.captured, message))
        self.hub.publish_all("results", [message for _, message in done], filter_result)
        for captured, message in done:
            self._note_detections(message)
            if self._snaps:
                self._answer_snaps(captured, message)

    def _answer_snaps(self, captured: float, message: Message) -> None:
        waiting = []
        for requested, future in self._snaps:
            if captured >= requested and not future.done():
                future.set_result(message)
            elif not future.done():
                waiting.append((requested, future))
        self._snaps = waiting

    def _note_detections(self, message: Message) -> None:
        """A `detection` event when a label appears that the previous result did not have
        and no result had for gate.cooldown_s: a score hovering at the threshold drops a
        label from every other result, and each return was an event. (Results far apart, a
        heartbeat's, that all have it are one sighting.)"""
        ts, hold = message["ts"], self.cfg.gate.cooldown_s
        labels = frozenset(d["label"] for d in message["detections"])
        seen = self._labels_seen
        new = [label for label in labels - self._labels_last
               if not ts - seen.get(label, -math.inf) <= hold]
        self._labels_last = labels
        for label in labels:
            seen[label] = ts
        if new:
            best = max(message["detections"], key=lambda d: d["score"])
            self.emit_event(
                "detection", message["ts"], labels=sorted(new), frame=message["frame"],
                result_seq=message["seq"], score=best["score"],
            )

    def _on_motion(self, moving: bool, ts: float) -> None:
        self.emit_event("motion_start" if moving else "motion_end", ts)

    def _on_pipeline_error(self, stage: str, message: str, frame: Optional[int]) -> None:
        fields: dict[str, Any] = {"source": stage, "message": message}
        if frame is not None:
            fields["frame"] = frame
        self.emit_event("error", time.time(), **fields)

    def _on_camera_lost(self, reason: str) -> None:
        self.emit_event("camera_lost", time.time(), reason=reason)

    def _on_camera_ended(self, reason: str) -> None:
        """The source ended (a file played to its end, or cut short and left so): a last
        camera_lost says so (`ended`). A loss announced before gets no camera_back now, and
        a client watching only events took a file played to its end for still running. The
        daemon goes on serving, and status says the source ended."""
        self.emit_event("camera_lost", time.time(), reason=reason, ended=True)

    def _on_camera_back(self) -> None:
        self.emit_event("camera_back", time.time())
        if self.pipeline is not None:
            self.pipeline.request_recalibration()  # the scene may have changed meanwhile

    def _on_lighting_thread(self, verdict: LightVerdict) -> None:
        """On the sensor thread: a lighting change, relearnt at once and reported."""
        self._relearn_lighting(verdict)
        self._from_thread(self._on_lighting)(verdict.lux, verdict.before)

    def _relearn_lighting(self, verdict: LightVerdict) -> None:
        """On the sensor thread: recalibrate at once (a flag the capture thread reads), and
        ignore motion until the verdict says (sensors.light_suppress_s after the reading).
        Also for a further step of a change already reported (a lamp settling over two
        polls), which is not reported again."""
        if self.pipeline is not None:
            if verdict.suppress_until is not None:
                self.pipeline.suppress_motion(verdict.suppress_until)
            self.pipeline.request_recalibration()

    def _on_lighting(self, lux: float, before: Optional[float]) -> None:
        fields = {"lux": round(lux, 2)}
        if before is not None:
            fields["before"] = round(before, 2)
        self.emit_event("lighting", time.time(), **fields)

    def _on_pir(self, ts: float) -> None:
        self.emit_event("pir", ts)
        now = time.monotonic()
        if self.power is not None:
            self.power.on_snap(now)  # wake the NPU ahead of the frame
        if self.pipeline is not None:
            self.pipeline.request_snap(now)  # look now, whatever the gate says

    async def snap(self, timeout: float) -> Optional[Message]:
        """The result of the next frame captured from now on, inferred whatever the gate says;
        None at once when the source has ended (no frame will come: `no_frame`)."""
        if self.pipeline is None or self.pipeline.counters.source_ended:
            return None
        future: asyncio.Future[Optional[Message]] = asyncio.get_running_loop().create_future()
        requested = time.monotonic()
        self._snaps.append((requested, future))
        if self.power is not None:
            self.power.on_snap(requested)  # wake the NPU before the frame arrives
        self.pipeline.request_snap(requested)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:  # answered, timed out or cancelled: not kept until the next result
            self._snaps = [(r, f) for r, f in self._snaps if f is not future]

    def _give_up_snaps(self) -> None:
        """Answer every snap still waiting with no result (`unavailable` to its client)."""
        for _, future in self._snaps:
            if not future.done():
                future.set_result(None)

    def no_frame(self, timeout_ms: int) -> str:
        """Why a snap got no frame: the source ended (a file played to its end: answered at
        once, since no wait brings a frame), is lost or waited for (and why), or gave none
        within the snap's timeout."""
        waited = f"no frame was inferred within {timeout_ms} ms"
        if self.camera is None or self.camera.state == "running":
            return waited
        reason = self.camera.status().get("reason")
        because = f" ({reason})" if reason else ""
        if self.camera.state == "ended":
            return f"no frame was inferred: the source has ended{because}"
        return f"{waited}: the source is {self.camera.state}{because}"

    def pin_profile(self, name: Optional[str], peer: str) -> None:
        """Pin a profile for a client (None releases it); KeyError for an unknown name."""
        assert self.power is not None
        self.power.pin(name, peer)
        log.info("profile %s by %s", f"pinned to {name}" if name else "pin released", peer)
        self._power_events(self.power.drain_events())  # not at the next tick: a stop may come first

    # -- what clients see ----------------------------------------------------------------

    def _hello(self) -> Message:
        return {
            "class": "hello",
            "proto": PROTO,
            "version": __version__,
            "model": self.model.info if self.model else None,
            "profile": self.power.profile_status() if self.power else None,
            "capabilities": {
                "topics": list(TOPICS),
                "commands": sorted(self.server.handlers),
                "max_line": 65536,
                "power": self.power is not None,
            },
        }

    def status(self) -> Message:
        pipeline = self.pipeline
        status: Message = {
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "fps": round(self.fps.rate(), 2),
            "clients": len(self.hub.sessions),
            "model": self.model.info if self.model else None,
            "events": {"last_seq": self.eventlog.last_seq},
        }
        if self.camera is not None:
            status["source"] = self.camera.status()
        if pipeline is not None:
            status["pipeline"] = pipeline.status()
        if self.power is not None:
            status["power"] = self.power.status()
        if self.sensors is not None:
            status["sensors"] = self.sensors.status()
        return status

    def status_line(self) -> str:
        """One line for systemd's STATUS=: what an admin sees in `systemctl status`."""
        if self.pipeline is None:
            return "starting"
        pipe = self.pipeline.status()
        line = (
            f"{self.fps.rate():.1f} fps, skip {pipe['skip_ratio']:.0%}, "
            f"{pipe['inferred']} inferred, {len(self.hub.sessions)} clients"
        )
        if self.power is not None:
            message = self.power.power_message()
            watts = f", {message['watts']:.2f} W" if "watts" in message else ""
            line = f"profile {message['profile']}{watts}, {line}"
        camera = self.camera.status() if self.camera is not None else None
        if camera is not None and camera["state"] != "running":
            # capture pauses on purpose while it is gone: the watchdog goes on, and the
            # line alone would look like a healthy daemon with nothing to see
            reason = f": {camera['reason']}" if camera.get("reason") else ""
            line += "; " + shorten(f"camera {camera['source']} {camera['state']}{reason}",
                                   STATUS_REASON_CHARS)
        stalled = self.progress.stalled(time.monotonic())
        if stalled:  # the watchdog's pings are withheld: systemd restarts the daemon soon
            line += f"; stalled ({', '.join(stalled)})"
        if self._reload_rejected is not None:
            line += "; " + shorten(self._reload_rejected.splitlines()[0], STATUS_REASON_CHARS)
        return line


async def _swap_off_loop(swap: Callable[[Model], None], model: Model) -> None:
    """A model swapped in off the event loop: the swap waits for the inference under way,
    which a slow or wedged delegate holds for seconds, and every client would wait with it."""
    await asyncio.get_running_loop().run_in_executor(None, swap, model)


# Each of a model's files (the model, its labels) as (device, inode, size, mtime), or None
ModelFiles = tuple[Optional[tuple[int, int, int, int]], ...]


def model_files(cfg: Config) -> ModelFiles:
    """What the model and labels files of ``cfg`` are now, taken before a load: a reload
    loads the model again when a file under the same name has changed since. The bundled
    model (no model.path) changes only with the package, which a restart follows."""
    stamps: list[Optional[tuple[int, int, int, int]]] = []
    for path in (cfg.model.path, cfg.model.labels):
        try:
            info = os.stat(path) if path else None
        except OSError:
            info = None
        stamps.append(None if info is None
                      else (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


def _with_variant(cfg: Config, variant: Optional[str]) -> Config:
    """``cfg`` with the model of a power-policy variant (None or "": the main model)."""
    if not variant:
        return cfg
    return cfg.model_copy(update={"model": variant_model(cfg.model, variant)})

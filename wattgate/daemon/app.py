"""The daemon: wires source, gate, model and server together and owns the event loop.

Start order: socket first (so early clients wait for their hello instead of being
refused), then the model and the camera, then the pipeline threads, then hello/READY.
SIGTERM/SIGINT stop it; SIGHUP reloads config.toml and keeps the old config if the
new one is bad.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any, Optional

from wattgate import __version__
from wattgate.config import Config, ConfigError, load_config
from wattgate.daemon.hub import ClientSession, Hub, Message
from wattgate.daemon.logs import MessageId, event, set_level
from wattgate.daemon.notify import Notifier, ProgressWatch, inherited_listener, watchdog_interval
from wattgate.daemon.pipeline import Pipeline
from wattgate.daemon.server import Handler, ProtocolError, Server, check_fields
from wattgate.drivers.camera import Source, SourceError, open_source
from wattgate.drivers.inference import Model, ModelError
from wattgate.policies.gating import MotionGate

log = logging.getLogger("wattgate.daemon")

EXIT_OK = 0
EXIT_SOFTWARE = 1
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: no camera or model to work with
PROTO = 1
TOPICS = ("results", "events")
STATUS_EVERY_S = 5.0  # how often systemd's STATUS= line is refreshed


class StartupError(Exception):
    """The daemon cannot start: no model or no camera. Exit code 69."""


def load_model(cfg: Config) -> Model:
    m = cfg.model
    try:
        return Model.load(
            m.path,
            kind=m.kind,
            labels=m.labels,
            threads=m.threads,
            delegate=m.delegate,
            delegate_options=m.delegate_options,
            score_threshold=m.score_threshold,
        )
    except ModelError as exc:
        raise StartupError(f"model: {exc}") from None


def open_camera(cfg: Config) -> Source:
    try:
        return open_source(cfg.camera)
    except SourceError as exc:
        raise StartupError(str(exc)) from None


class RateMeter:
    """Frames per second over the last few one-second samples."""

    def __init__(self, window: int = 5) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def sample(self, now: float, count: int) -> None:
        self._samples.append((now, count))

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


class Daemon:
    def __init__(self, cfg: Config, config_path: Optional[Path] = None) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.hub = Hub()
        self.pipeline: Optional[Pipeline] = None
        self.model: Optional[Model] = None
        self.started = time.monotonic()
        self.fps = RateMeter()
        self.notifier = Notifier()
        self.progress = ProgressWatch(time.monotonic())
        self._stop = asyncio.Event()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._event_seq = 0
        handlers: dict[str, Handler] = {
            "status": self._cmd_status,
            "subscribe": self._cmd_subscribe,
            "unsubscribe": self._cmd_unsubscribe,
        }
        self.server = Server(cfg.daemon, self.hub, handlers, self._hello)

    # -- life cycle ------------------------------------------------------------------

    async def run(self) -> int:
        loop = self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload()))
        await self.server.start(inherited_listener())
        log.info("listening on %s", self.server.path)
        try:
            model, source = await loop.run_in_executor(None, self._open_parts, self.cfg)
        except StartupError:
            await self.server.close()
            raise
        self._start_pipeline(model, source)
        self.server.set_ready()
        self.notifier.ready(self.status_line())
        log.info(
            "ready: model %s, source %s", model.info.get("name"), source.description,
            extra=event(MessageId.STARTED),
        )
        ticker = loop.create_task(self._tick())
        await self._stop.wait()
        self.notifier.stopping()
        log.info("stopping", extra=event(MessageId.STOPPING))
        ticker.cancel()
        if self.pipeline is not None:
            await loop.run_in_executor(None, self.pipeline.stop)
        await self.server.close()
        return EXIT_OK

    def stop(self) -> None:
        self._stop.set()

    @staticmethod
    def _open_parts(cfg: Config) -> tuple[Model, Source]:
        model = load_model(cfg)
        return model, open_camera(cfg)

    def _start_pipeline(self, model: Model, source: Source) -> None:
        self.model = model
        self.pipeline = Pipeline(
            source, MotionGate(self.cfg.gate), model, self._from_thread(self._on_result),
            self._from_thread(self._on_motion),
        )
        self.pipeline.start()

    def _from_thread(self, func: Any) -> Any:
        """Wrap a loop-side callback so the pipeline threads can call it safely."""
        loop = self._loop
        assert loop is not None

        def call(*args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                loop.call_soon_threadsafe(func, *args)

        return call

    async def reload(self) -> None:
        """SIGHUP: apply a new config, or keep the old one if the new one is bad."""
        if self.config_path is None:
            log.info("reload: running on built-in defaults, nothing to reload")
            return
        self.notifier.reloading()
        try:
            await self._apply_reload(self.config_path)
        finally:
            self.notifier.ready(self.status_line())

    async def _apply_reload(self, path: Path) -> None:
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error(
                "reload rejected, keeping the running config: %s", exc,
                extra=event(MessageId.CONFIG_ERROR),
            )
            return
        if new.daemon.socket != self.cfg.daemon.socket:
            log.warning("daemon.socket changed; it takes effect after a restart")
        pipeline_keys = ("camera", "gate", "model")
        if any(getattr(new, k) != getattr(self.cfg, k) for k in pipeline_keys):
            loop = asyncio.get_running_loop()
            try:
                model, source = await loop.run_in_executor(None, self._open_parts, new)
            except StartupError as exc:
                log.error("reload rejected, keeping the running pipeline: %s", exc)
                return
            if self.pipeline is not None:
                await loop.run_in_executor(None, self.pipeline.stop)
            self.cfg = new
            self._start_pipeline(model, source)
        self.cfg = new
        self.server.cfg = new.daemon
        set_level(new.daemon.log_level)
        log.info("reloaded %s", path, extra=event(MessageId.RELOADED))

    async def _tick(self) -> None:
        """Once a second: fps, the watchdog's progress rule, and systemd's STATUS= line."""
        ping_every = watchdog_interval()
        last_ping = last_status = 0.0
        stalled_logged = False
        while True:
            now = time.monotonic()
            if self.pipeline is not None:
                self.fps.sample(now, self.pipeline.counters.frames)
                self._observe_progress(self.pipeline)
            healthy = self.progress.healthy(now)
            if ping_every is not None and healthy and now - last_ping >= ping_every:
                self.notifier.watchdog()
                last_ping = now
            if not healthy and not stalled_logged:
                log.error(
                    "pipeline stalled (%s); withholding watchdog pings",
                    ", ".join(self.progress.stalled(now)), extra=event(MessageId.STALLED),
                )
            stalled_logged = not healthy
            if now - last_status >= STATUS_EVERY_S:
                self.notifier.status(self.status_line())
                last_status = now
            await asyncio.sleep(min(1.0, ping_every or 1.0))

    def _observe_progress(self, pipeline: Pipeline) -> None:
        counters = pipeline.counters
        if counters.source_ended:
            self.progress.pause_capture()
        elif counters.last_capture:
            self.progress.capture_progress(counters.last_capture)
        busy_since = counters.busy_since
        if counters.last_inference:
            self.progress.inference_progress(counters.last_inference)
        if busy_since is not None:
            self.progress.work_pending(busy_since)

    def status_line(self) -> str:
        """One line for systemd's STATUS=: what an admin sees in `systemctl status`."""
        if self.pipeline is None:
            return "starting"
        pipe = self.pipeline.status()
        return (
            f"{self.fps.rate():.1f} fps, skip {pipe['skip_ratio']:.0%}, "
            f"{pipe['inferred']} inferred, {len(self.hub.sessions)} clients"
        )

    # -- pipeline callbacks (on the loop) ----------------------------------------------

    def _on_result(self, message: Message) -> None:
        self.hub.publish("results", message)

    def _on_motion(self, moving: bool, ts: float) -> None:
        self._event_seq += 1
        kind = "motion_start" if moving else "motion_end"
        event = {"class": "event", "seq": self._event_seq, "ts": round(ts, 6), "kind": kind}
        self.hub.publish("events", event)

    # -- protocol ----------------------------------------------------------------------

    def _hello(self) -> Message:
        return {
            "class": "hello",
            "proto": PROTO,
            "version": __version__,
            "model": self.model.info if self.model else None,
            "topics": list(TOPICS),
        }

    async def _cmd_status(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, set())
        pipeline = self.pipeline
        source = pipeline.source if pipeline else None
        status: Message = {
            "class": "status",
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "fps": round(self.fps.rate(), 2),
            "clients": len(self.hub.sessions),
            "model": self.model.info if self.model else None,
        }
        if source is not None and pipeline is not None:
            status["source"] = {
                "description": source.description,
                "width": source.width,
                "height": source.height,
                "fps": source.fps,
                "state": "ended" if pipeline.counters.source_ended else "running",
            }
            status["pipeline"] = pipeline.status()
        return status

    async def _cmd_subscribe(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, {"topics"})
        topics = request.get("topics", ["results"])
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise ProtocolError("bad_request", "field 'topics' must be a list of strings")
        unknown = sorted(set(topics) - set(TOPICS))
        if unknown:
            raise ProtocolError("bad_request", f"unknown topic(s) {unknown}; known: {TOPICS}")
        session.topics.update(topics)
        return {"topics": sorted(session.topics)}

    async def _cmd_unsubscribe(self, session: ClientSession, request: Message) -> Message:
        check_fields(request, {"topics"})
        topics = request.get("topics")
        if topics is None:
            session.topics.clear()
        elif isinstance(topics, list):
            session.topics.difference_update(str(t) for t in topics)
        else:
            raise ProtocolError("bad_request", "field 'topics' must be a list of strings")
        return {"topics": sorted(session.topics)}

"""The sensor thread: an ambient light sensor (IIO) and an optional PIR, polled.

It reads, asks wattgate/policies/lighting.py what the readings mean, and tells the daemon
through two callbacks, called on this thread:

* `on_lighting(verdict)` on a lighting change: the daemon recalibrates the gate and ignores
  motion until `verdict.suppress_until`;
* `on_lighting_extended(verdict)` on a further step of that change (a lamp settling over
  two polls; `verdict.extends`): the daemon recalibrates again and ignores motion until
  the new `verdict.suppress_until`, but reports no new change;
* `on_pir(ts)` on a PIR trigger: the daemon wakes the pipeline.

Readings are for `status` and `power` messages (`status()`, `readings()`). A day/night
profile rule reads the light level from here; choosing profiles is not this module's job.

Polling, not interrupts: an IIO light sensor updates a few times a second at most, and a
sysfs GPIO value can only be waited on after writing its `edge` attribute, a write this
daemon would have to journal and restore. Reading two small attributes a few times a second
costs far less than one camera frame. Nothing configured (light = "none", no PIR): no
thread at all. A light sensor configured but not there yet is looked for every
LOOK_AGAIN_S on the light thread: its driver may load after the daemon has started.

The light sensor and the PIR are polled on threads of their own: a light sensor's read can
take long (a one-shot conversion, a hung I2C transfer) and must not delay a PIR trigger.
A read that has not answered for STUCK_S shows as the light sensor's status error.

A PIR that cannot be read (a failed read, or one that has not answered for STUCK_S) counts
as its output gone low: someone around holds sensors.pir_hold_s past its last high reading,
and its status shows the error. A GPIO unexported or a USB GPIO expander unplugged while the
output was high otherwise kept someone around, and the clocks up, until a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from wattgate.drivers import iio
from wattgate.drivers.sysfs import Sysfs
from wattgate.policies.lighting import LightingPolicy, LightingSettings, LightVerdict, PirTrigger

log = logging.getLogger("wattgate.sensors")

SYSFS_PREFIX = "/sys/"
STUCK_S = 5.0  # a sensor read under way this long is reported as not answering
LOOK_AGAIN_S = 10.0  # how often a light sensor not found yet (a driver loaded late) is looked for


@dataclass(frozen=True)
class SensorSettings:
    """The proposed [sensors] config table, with its defaults (see the config patch)."""

    light: str = "auto"  # "auto" (first IIO illuminance sensor), "none", or "iio:deviceN"
    light_poll_s: float = 1.0
    light_jump_ratio: float = 2.0
    light_min_delta_lux: float = 5.0
    light_suppress_s: float = 3.0
    pir: str = ""  # a sysfs attribute: class/gpio/gpio17/value, or an IIO channel's _raw
    pir_active_low: bool = False
    pir_poll_s: float = 0.2
    pir_hold_s: float = 10.0

    @classmethod
    def from_config(cls, cfg: Any) -> SensorSettings:
        """From `cfg.sensors` where the config has that table; the defaults otherwise."""
        table = getattr(cfg, "sensors", None)
        if table is None:
            return cls()
        values = {name: getattr(table, name) for name in cls.__dataclass_fields__
                  if getattr(table, name, None) is not None}  # pir = None: no PIR
        return cls(**values)

    def lighting(self) -> LightingSettings:
        return LightingSettings(
            jump_ratio=self.light_jump_ratio,
            min_delta_lux=self.light_min_delta_lux,
            suppress_s=self.light_suppress_s,
        )


def attribute_of(path: str) -> str:
    """A configured path as an attribute under the sysfs root: /sys/x and x are the same."""
    return path[len(SYSFS_PREFIX):] if path.startswith(SYSFS_PREFIX) else path.lstrip("/")


def find_light_sensor(fs: Sysfs, which: str) -> tuple[Optional[str], str]:
    """The IIO device to read lux from, or (None, why not).

    Found by the illuminance attributes its driver offers, not by a first reading: an I2C
    sensor that answers EIO at start-up (powering up, a bus glitch) would otherwise be
    dropped for the daemon's lifetime. A read that fails later shows as the status error."""
    if which in ("", "none"):
        return None, "disabled"
    if which == "auto":
        found = iio.illuminance_sensors(fs)
        return (found[0], "") if found else (None, "no IIO illuminance sensor")
    if not iio.has_channel(fs, which, "in_illuminance"):
        return None, f"{which}: no illuminance reading"
    return which, ""


def follow_light_sensor(fs: Sysfs, which: str, current: Optional[str]) -> Optional[str]:
    """The light sensor to read now, given the one read so far (None: none yet).

    With "auto" the sensor read so far is kept while its device offers an illuminance
    reading, and only one that is gone is looked for again (a sensor re-probed after a bus
    error registers under another index). The sensor watch and the power rules' reader both
    follow this rule: the first found afresh each time made the rules read a sensor that
    appeared later under a lower index while the watch read the first one."""
    if which == "auto" and current is not None and iio.has_channel(
            fs, current, "in_illuminance"):
        return current
    return find_light_sensor(fs, which)[0]


class SensorWatch:
    """Polls the light sensor and the PIR on one daemon thread; see the module docstring."""

    def __init__(
        self,
        fs: Sysfs,
        settings: SensorSettings,
        on_lighting: Optional[Callable[[LightVerdict], None]] = None,
        on_pir: Optional[Callable[[float], None]] = None,
        on_lighting_extended: Optional[Callable[[LightVerdict], None]] = None,
    ) -> None:
        self.fs = fs
        self.settings = settings
        self.on_lighting = on_lighting
        self.on_lighting_extended = on_lighting_extended
        self.on_pir = on_pir
        self.light_sensor, self.light_reason = find_light_sensor(fs, settings.light)
        self.pir_attribute = attribute_of(settings.pir) if settings.pir else None
        self.lighting = LightingPolicy(settings.lighting())
        self.pir = PirTrigger(settings.pir_hold_s)
        self.lux: Optional[float] = None
        self.lux_ts: Optional[float] = None
        self.lighting_changes = 0
        self._last_change: Optional[float] = None  # wall time
        self._suppress_until: Optional[float] = None  # monotonic
        self._pir_error: Optional[str] = None
        self._pir_read = False  # the PIR has been read once (PirTrigger.first)
        self._pir_since: Optional[float] = None  # monotonic start of a PIR read under way
        self._light_error: Optional[str] = None
        self._light_since: Optional[float] = None  # monotonic start of a read under way
        self._next_light = 0.0
        self._next_look = 0.0  # monotonic time to look again for a light sensor not found
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        if self.light_sensor is None and settings.light not in ("", "none", "auto"):
            log.warning("sensors.light %s", self.light_reason)

    @property
    def _light_wanted(self) -> bool:
        """A light sensor is configured ("auto" or a name), found yet or not."""
        return self.settings.light not in ("", "none")

    @property
    def active(self) -> bool:
        """There is something to poll, or a light sensor to look for."""
        return self._light_wanted or self.pir_attribute is not None

    def start(self) -> None:
        if not self.active or self._threads:
            return
        s = self.settings
        if self.pir_attribute is not None:
            self._spawn("wattgate-sensors", self._poll_pir_due, s.pir_poll_s)
        if self._light_wanted:
            self._spawn("wattgate-sensors-light", self._poll_light_due, s.light_poll_s)

    def _spawn(self, name: str, step: Callable[[float, float], None], period: float) -> None:
        thread = threading.Thread(target=self._run, args=(step, period), name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the threads to end and wait up to `timeout` for each; a thread blocked in a
        read that never answers is a daemon thread and is left behind. A read that answers
        after this is dropped unused: the daemon has moved on to another watch (a reload,
        perhaps one that turned the sensor off), and a lighting change or PIR trigger from
        this one would recalibrate, suppress motion or wake under settings no longer wanted."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self, step: Callable[[float, float], None], period: float) -> None:
        while not self._stop.is_set():
            try:
                step(time.monotonic(), time.time())
            except Exception:
                log.exception("sensor poll failed")
            self._stop.wait(period)

    # -- one step (the thread's loop body; tests call it directly) -----------------------------

    def poll(self, now: float, ts: float) -> None:
        """Read whatever is due at monotonic `now` (wall-clock `ts`) and act on it."""
        self._poll_pir_due(now, ts)
        self._poll_light_due(now, ts)

    def _poll_pir_due(self, now: float, ts: float) -> None:
        if self.pir_attribute is not None:
            self._pir_since = now
            try:
                self._poll_pir(self.pir_attribute, now, ts)
            finally:
                self._pir_since = None

    def _pir_stuck(self, now: float) -> bool:
        """A PIR read has been under way for STUCK_S or more at monotonic `now`."""
        since = self._pir_since
        return since is not None and now - since >= STUCK_S

    def _follow_light_sensor(self) -> None:
        """With light = "auto", a sensor whose device is gone is looked for again: one
        re-probed after a bus error registers a new IIO device, often under another index,
        and polling the old name read nothing until a restart."""
        name = self.light_sensor
        if self.settings.light != "auto" or name is None:
            return
        found = follow_light_sensor(self.fs, "auto", name)
        if found is not None and found != name:
            log.info("light sensor %s is gone; reading %s", name, found)
            with self._lock:
                self.light_sensor = found

    def _look_for_light_sensor(self, now: float) -> None:
        """A light sensor not found yet is looked for every LOOK_AGAIN_S: its driver is often
        a module that probes after the daemon has started (a late I2C bus, a deferred
        probe), and the lighting went without it until a restart."""
        if self.light_sensor is not None or not self._light_wanted or now < self._next_look:
            return
        self._next_look = now + LOOK_AGAIN_S
        found, self.light_reason = find_light_sensor(self.fs, self.settings.light)
        if found is not None:
            log.info("light sensor %s found", found)
            with self._lock:
                self.light_sensor = found

    def _poll_light_due(self, now: float, ts: float) -> None:
        self._look_for_light_sensor(now)
        if self.light_sensor is not None and now >= self._next_light:
            self._next_light = now + self.settings.light_poll_s
            self._follow_light_sensor()
            self._light_since = now
            try:
                self._poll_light(self.light_sensor, now, ts)
            finally:
                self._light_since = None

    def _poll_light(self, name: str, now: float, ts: float) -> None:
        lux = iio.read_lux(self.fs, name)  # its other channels are of no use here
        if self._stop.is_set():
            return  # stopped while reading: see stop()
        if lux is None:
            if self._light_error is None:
                log.warning("light sensor %s: no reading", name)
            self._light_error = "no reading"
            return
        self._light_error = None
        verdict = self.lighting.update(lux, now)
        with self._lock:
            self.lux, self.lux_ts = lux, ts
            self._suppress_until = verdict.suppress_until
            if verdict.change:
                self.lighting_changes += 1
                self._last_change = ts
        if verdict.change:
            log.info("lighting change: %.1f -> %.1f lx", verdict.before or 0.0, lux)
            if self.on_lighting is not None:
                self.on_lighting(verdict)
        elif verdict.extends:
            log.info("lighting change goes on: -> %.1f lx", lux)
            if self.on_lighting_extended is not None:
                self.on_lighting_extended(verdict)

    def _poll_pir(self, attribute: str, now: float, ts: float) -> None:
        value = self.fs.read_int_opt(attribute)
        if self._stop.is_set():
            return  # stopped while reading
        if value is None:
            if self._pir_error is None:
                log.warning("PIR %s: cannot be read", attribute)
            self._pir_error = "cannot be read"
            with self._lock:
                self.pir.unreadable()
            return
        self._pir_error = None
        active = (value > 0) != self.settings.pir_active_low
        with self._lock:
            if not self._pir_read:  # high already: someone there before this watch began
                self._pir_read = True
                self.pir.first(active, now)
                return
            rising = self.pir.update(active, now)
        if rising:
            log.debug("PIR trigger")
            if self.on_pir is not None:
                self.on_pir(ts)

    def someone_around(self, now: float) -> bool:
        """The PIR's output is high, or was within sensors.pir_hold_s of monotonic `now`:
        the daemon keeps the pipeline awake for as long (the power tick asks). A PIR that
        cannot be read counts as low (see the module docstring)."""
        if self.pir_attribute is None:
            return False
        with self._lock:
            return self.pir.holding(now, output_known=not self._pir_stuck(now))

    # -- what the daemon shows -------------------------------------------------------------

    def motion_suppressed(self, now: float) -> bool:
        """A lighting change happened within suppress_s of monotonic `now`."""
        until = self._suppress_until
        return until is not None and now < until

    def status(self, now: Optional[float] = None) -> dict[str, Any]:
        """For the `status` reply: each sensor, its reading, and why one is missing."""
        now = time.monotonic() if now is None else now
        out: dict[str, Any] = {}
        with self._lock:
            light: dict[str, Any] = {}
            if self.light_sensor is None:
                light["reason"] = self.light_reason
            else:
                light["sensor"] = self.light_sensor
                if self.lux is not None:
                    light["lux"] = round(self.lux, 2)
                if self.lux_ts is not None:
                    light["ts"] = round(self.lux_ts, 3)
                light["changes"] = self.lighting_changes
                if self._last_change is not None:
                    light["last_change"] = round(self._last_change, 3)
                since = self._light_since
                if since is not None and now - since >= STUCK_S:
                    light["error"] = "no answer"
                elif self._light_error is not None:
                    light["error"] = self._light_error
            out["light"] = light
            if self.pir_attribute is not None:
                stuck = self._pir_stuck(now)
                pir: dict[str, Any] = {
                    "attribute": self.pir_attribute,
                    "active": self.pir.active and not stuck,
                    "holding": self.pir.holding(now, output_known=not stuck),
                    "triggers": self.pir.triggers,
                }
                if stuck:
                    pir["error"] = "no answer"
                elif self._pir_error is not None:
                    pir["error"] = self._pir_error
                out["pir"] = pir
        return out

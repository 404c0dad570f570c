"""What the power controller reads once a tick: temperatures, supplies, light, meters,
current clocks and CPU utilisation.

Read outside the controller's lock, since sysfs reads can block in a driver; the result is
plain data. The meter and CPU counters are differences between two ticks, so the reader
keeps the previous sample.

Each source (a thermal zone, a supply, a meter, an IIO device, a clock) is read on daemon
threads, one more whenever every one is in a read (`_Workers`), since a sysfs read runs in
a driver and can block: an ACPI battery waits on the embedded controller, an IIO light
sensor runs a one-shot conversion, an I2C bus hangs. Read on the caller, such a read
stalled the daemon's event loop and every other reading with it. The caller (the tick, on
an executor thread) waits at most WAIT_S, for the sources that read at once; a source whose read
takes longer than SLOW_S (or outlasts WAIT_S) is read in the background from then on: it
gives its newest answer a tick late, and is waited for again once it reads quickly. While
its next read is still running, the answer before stands in for one tick, marked stale
(``Inputs.stale``); after that it has no reading until it answers.

A battery that was seen and cannot be read now (its node gone, an attribute failing) is
shown as such: ``battery`` keeps its name with an ``error``, logged once when it starts and
once when it ends, and its readings are None (unknown) for the rules to hold on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Optional

from wattgate.daemon.handoff import join_within
from wattgate.daemon.sensors import follow_light_sensor
from wattgate.drivers import iio
from wattgate.drivers.cpufreq import CpuPolicy
from wattgate.drivers.meters import (
    HWMON,
    POWERCAP,
    EnergyZone,
    Meter,
    Rail,
    average_watts,
    board_energy_zone,
    package_meter,
    read_energy,
    read_hwmon,
    read_iio_rails,
)
from wattgate.drivers.supply import (
    POWER_SUPPLY,
    Supply,
    combined_percent,
    on_battery,
    read_supply,
)
from wattgate.drivers.sysfs import Sysfs
from wattgate.drivers.thermal import ThermalZone, read_zone, zone_names
from wattgate.policies.rules import Readings

log = logging.getLogger("wattgate.power")

# A meter rail that measures the whole board: POM_5V_IN is the Jetson Nano's (JetPack 4)
INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN", "IN")
# The caller is the tick, once a second: it waits for the sources that read at once (a
# plain attribute answers in microseconds) and never long for any, so a tick ends in time
# for the next.
WAIT_S = 0.25  # the longest a tick waits for a source
SLOW_S = 0.05  # a source whose read took longer is read in the background from then on
WORKERS = 4  # read threads kept; more start while every one is in a read
READ_IDLE_S = 10.0  # a read thread beyond WORKERS with nothing to do this long ends
STOP_WAIT_S = 0.2  # at exit, the longest wait for a read in progress to come back


_Job = tuple[Future[Any], Callable[[], Any]]


class _Pool:
    """One generation of read threads: ``_Workers.stop`` closes it and starts the next."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.cond = threading.Condition(threading.Lock())
        self.jobs: deque[_Job] = deque()
        self.threads = 0
        self.busy = 0  # threads in a read
        self.alive: set[threading.Thread] = set()
        self.closed = False

    def submit(self, future: Future[Any], job: Callable[[], Any]) -> None:
        with self.cond:
            while self.threads < self.keep:
                self._start()
            if len(self.jobs) + 1 > self.threads - self.busy:
                # at a task limit (systemd's TasksMax) it waits for a thread to come free
                with contextlib.suppress(RuntimeError):
                    self._start()
            self.jobs.append((future, job))
            self.cond.notify()

    def _start(self) -> None:
        """Counted once started: a thread that cannot start leaves nothing counted."""
        thread = threading.Thread(target=self._run, name="wattgate-read", daemon=True)
        thread.start()
        self.threads += 1
        self.alive.add(thread)

    def close(self) -> list[threading.Thread]:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
            return list(self.alive)

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: bool(self.jobs) or self.closed, READ_IDLE_S)
                    if not self.jobs:
                        if self.closed or self.threads > self.keep:
                            self.threads -= 1
                            return
                        continue
                    future, job = self.jobs.popleft()
                    self.busy += 1
                try:
                    if not future.set_running_or_notify_cancel():
                        continue
                    value: Any = None
                    error: Optional[BaseException] = None
                    try:
                        value = job()
                    except BaseException as exc:
                        error = exc
                finally:
                    with self.cond:  # free before the answer is out: it may bring a read
                        self.busy -= 1
                if error is None:
                    future.set_result(value)
                else:
                    future.set_exception(error)
        finally:
            with self.cond:
                self.alive.discard(threading.current_thread())


class _Workers:
    """Daemon threads that run reads, shared by every reader: ``count`` of them started on
    first use, and one more whenever a read is submitted while every thread is in a read.
    A read that never returns (a hung embedded controller or I2C bus) keeps its thread, and
    with a fixed pool a few of them left every other source, thermal zones included,
    queued behind them for good. The growth is bounded, since `Sources` reads a source
    again only once its read has returned; a thread beyond ``count`` with nothing to do
    for READ_IDLE_S ends.

    Not a ThreadPoolExecutor: its threads are joined at interpreter exit, and one blocked
    in a read that never returns would keep the daemon from exiting."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._start_afresh()
        os.register_at_fork(after_in_child=self._start_afresh)

    def _start_afresh(self) -> None:
        """No threads yet. Also a forked child's state: fork() copies the parent's thread
        list and queued jobs but none of the threads, so its reads would wait for ever."""
        self._pool = _Pool(self.count)
        self._lock = threading.Lock()

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            self._pool.submit(future, job)
        return future

    def stop(self, wait_s: float) -> None:
        """End the threads waiting for work, waiting up to wait_s for them; one still in a
        read is left to it, and ends when (if) the read returns. At the daemon's exit, so
        that the threads left (`handoff.end_process` names them) are the reads that hang,
        not the idle ones. Reads submitted later start new threads."""
        with self._lock:
            pool, self._pool = self._pool, _Pool(self.count)
        join_within(pool.close(), wait_s)


_WORKERS = _Workers(WORKERS)


def stop_reading(wait_s: float = STOP_WAIT_S) -> None:
    """End the read threads that are idle (see `_Workers.stop`)."""
    _WORKERS.stop(wait_s)


def _read_energy_timed(fs: Sysfs, zone: str) -> Optional[tuple[EnergyZone, float]]:
    """A powercap zone's counter and the monotonic time its read finished. A read that
    outlasts a tick is taken a tick late (`Sources`): timed by the tick that takes it,
    its interval was the wrong one."""
    found = read_energy(fs, zone)
    return None if found is None else (found, time.monotonic())


def _rapl_rank(zone: str, name: Optional[str]) -> Optional[int]:
    """The order in which `board_energy_zone` prefers a zone: psys 0, package-0 1, others
    never (None). A top-level zone not answered yet (its name unknown) may be psys: 0."""
    if name is None:
        return 0 if zone.count(":") == 1 else None
    return {"psys": 0, "package-0": 1}.get(name)


def _timed(job: Callable[[], Any]) -> Callable[[], tuple[float, Any]]:
    def run() -> tuple[float, Any]:
        start = time.monotonic()
        value = job()
        return time.monotonic() - start, value
    return run


def _battery_fields(battery: Supply) -> dict[str, Any]:
    """What status says of one battery, in `battery` and in each of `batteries`."""
    return {"name": battery.name, "percent": battery.capacity_percent,
            "status": battery.status, "watts": battery.watts}


class Sources:
    """Reads named sources on the shared workers; see the module docstring."""

    def __init__(self) -> None:
        self._running: dict[str, Future[tuple[float, Any]]] = {}  # read in the background
        self._slow: set[str] = set()
        self._fresh: dict[str, Any] = {}  # the answers the last call took, none stale
        self._lock = threading.Lock()  # a reload's read may come while the loop ticks

    def gather(self, jobs: Mapping[str, Callable[[], Any]]) -> tuple[dict[str, Any], set[str]]:
        """Each source's answer, and the sources that have no new one this time (still
        reading). A source still reading from an earlier call is not read again until it
        answers; meanwhile a source read in the background gives the answer the last call
        took, once: stale (both answered and still reading), which bridges a read that
        takes longer than a tick, while one that hangs soon has no reading."""
        with self._lock:
            return self._gather(jobs)

    def _gather(self, jobs: Mapping[str, Callable[[], Any]]) -> tuple[dict[str, Any], set[str]]:
        results: dict[str, Any] = {}
        stale: set[str] = set()
        waited: dict[str, Future[tuple[float, Any]]] = {}
        for key, job in jobs.items():
            running = self._running.get(key)
            if running is not None:
                if not running.done():
                    if key in self._fresh:
                        results[key] = self._fresh[key]
                        stale.add(key)
                    continue
                del self._running[key]
                self._take(key, running, results)  # its answer, a tick late
            future = _WORKERS.submit(_timed(job))
            if key in self._slow:
                self._running[key] = future
            else:
                waited[key] = future
        wait(waited.values(), timeout=WAIT_S)
        for key, future in waited.items():
            if future.done():
                self._take(key, future, results)
            else:
                self._running[key] = future
                self._slow.add(key)
        for key in [k for k in self._running if k not in jobs and self._running[k].done()]:
            del self._running[key]  # a source gone from sysfs
        self._fresh = {k: v for k, v in results.items() if k not in stale}
        return results, set(self._running) - set(results) | stale

    def _take(self, key: str, future: Future[tuple[float, Any]], results: dict[str, Any]) -> None:
        seconds, results[key] = future.result()
        if seconds > SLOW_S:
            self._slow.add(key)
        else:
            self._slow.discard(key)


@dataclass
class Inputs:
    """One tick's readings."""

    readings: Readings = field(default_factory=Readings)
    temps: dict[str, float] = field(default_factory=dict)  # zone type -> °C
    battery: Optional[dict[str, Any]] = None  # the first battery, or the one gone
    batteries: list[dict[str, Any]] = field(default_factory=list)  # every battery read now
    meter_w: Optional[float] = None
    meter_source: Optional[str] = None
    cpu_khz: dict[str, Optional[int]] = field(default_factory=dict)  # policy -> cur freq
    cpu_busy: dict[str, float] = field(default_factory=dict)  # policy -> CPU-s per s
    cpu_peak: Optional[float] = None  # busiest CPU, percent
    # by accelerator ("npu", "gpu"): its devfreq cur_freq, and its power/runtime_status
    device_hz: dict[str, Optional[int]] = field(default_factory=dict)
    runtime_status: dict[str, Optional[str]] = field(default_factory=dict)
    # the sources (``zone:thermal_zone2``) whose answer is the tick before's, read again now
    stale: set[str] = field(default_factory=set)


def _input_rail(rails: list[Rail]) -> Optional[Rail]:
    """The rail that measures the whole board, of those that measure or failed to: by its
    name (INPUT_RAILS, in order), else the one rail whose label says it is an input (ends
    in "_IN" or "VIN"); None without one, or with two such. Summed with the rails it
    feeds, it counted them twice (the Nano's POM_5V_GPU and POM_5V_CPU in POM_5V_IN)."""
    rails = [r for r in rails if r.watts is not None or r.unread]
    for label in INPUT_RAILS:
        found = next((r for r in rails if r.label == label), None)
        if found is not None:
            return found
    inputs = [r for r in rails if r.label.upper().endswith(("_IN", "VIN"))]
    return inputs[0] if len(inputs) == 1 else None


class InputReader:
    def __init__(
        self,
        fs: Sysfs,
        policies: dict[str, CpuPolicy],
        light: str = "auto",  # sensors.light: "auto", "none" or "iio:deviceN"
        devices: Optional[Mapping[str, tuple[Optional[str], Optional[str]]]] = None,
    ) -> None:
        """``devices``: accelerator kind ("npu", "gpu") -> its class/devfreq/NAME and its
        device directory, either None when not found; their clock and runtime PM status
        are read for the energy estimate."""
        self.fs = fs
        self.light = light
        self._light_for = light  # what _light_sensor was followed for
        self._light_sensor: Optional[str] = None  # the sensor read last (follow_light_sensor)
        self.policies = policies
        self.devices = dict(devices or {})
        # the counter (zone, its range), and its last energy_uj and time
        self._rapl: Optional[tuple[tuple[str, Optional[int]], int, float]] = None
        self._rapl_names: dict[str, str] = {}  # powercap zone -> its name, once it answered
        self._rapl_last: Optional[tuple[float, str]] = None  # the last tick's RAPL watts
        self._cpu_prev: Optional[Any] = None
        self._battery_name: Optional[str] = None  # the battery last seen
        self._battery_error: Optional[str] = None  # logged when it began
        self._zones: dict[str, tuple[str, float]] = {}  # zone -> its type and last °C
        self._sources = Sources()
        # One read at a time: a reload reads on its own thread while the tick may read on
        # another, and the counters' differences and the zones' last readings are shared.
        self._reading = threading.Lock()

    def _jobs(self) -> dict[str, Callable[[], Any]]:
        """One read per source, keyed by kind and name; the listings are taken here."""
        fs = self.fs
        jobs: dict[str, Callable[[], Any]] = {}
        for name in zone_names(fs):
            jobs[f"zone:{name}"] = partial(read_zone, fs, name)
        for name in fs.listdir(POWER_SUPPLY):
            jobs[f"supply:{name}"] = partial(read_supply, fs, name)
        # Of IIO, the JetPack 4 rail meters (a device with none answers from its listing,
        # without a read) and the light sensor: every channel of every device (accelerometers,
        # ADCs, a light sensor with light = "none") was read each tick for nothing.
        for name in fs.listdir(iio.IIO):
            jobs[f"iio:{name}"] = partial(read_iio_rails, fs, name)
        light = self._follow_light_sensor()
        if light is not None:
            jobs[f"light:{light}"] = partial(iio.read_lux, fs, light)
        for name in fs.listdir(HWMON):
            jobs[f"hwmon:{name}"] = partial(read_hwmon, fs, name)
        for name in fs.listdir(POWERCAP):
            jobs[f"powercap:{name}"] = partial(_read_energy_timed, fs, name)
        for path, policy in self.policies.items():
            jobs[f"cpu:{policy.name}"] = partial(fs.read_int_opt, f"{path}/scaling_cur_freq")
        for kind, (devfreq, device) in self.devices.items():
            if devfreq is not None:
                jobs[f"{kind}:hz"] = partial(fs.read_int_opt, f"{devfreq}/cur_freq")
            if device is not None:
                jobs[f"{kind}:status"] = partial(fs.read_opt, f"{device}/power/runtime_status")
        return jobs

    def read(self, now: float) -> Inputs:
        with self._reading:
            return self._read(now)

    def _read(self, now: float) -> Inputs:
        jobs = self._jobs()
        started = time.monotonic()
        got, waiting = self._sources.gather(jobs)

        def each(kind: str) -> list[Any]:
            """The answers of one kind of source, in name order, leaving out None."""
            return [got[k] for k in jobs if k.startswith(kind) and got.get(k) is not None]

        inputs = Inputs(stale=set(got) & waiting)
        inputs.temps = self._temps([k[len("zone:"):] for k in jobs if k.startswith("zone:")],
                                   {k[len("zone:"):]: v for k, v in got.items()
                                    if k.startswith("zone:") and v is not None})
        supplies: list[Supply] = each("supply:")
        batteries = [s for s in supplies if s.is_battery]
        battery = next(iter(batteries), None)  # the one the status shows
        # a supply not answering may be the battery, as may be one seen before and gone
        unread = any(got.get(k) is None for k in jobs if k.startswith("supply:"))
        discharging = on_battery(supplies, unread or self._battery_name is not None)
        lux = self._lux(got)
        percent = combined_percent(batteries)
        inputs.readings = Readings(discharging, percent, inputs.temps, lux)
        silent = f"supply:{self._battery_name}" in waiting
        inputs.battery = self._battery(supplies, battery, discharging, silent)
        inputs.batteries = [{**_battery_fields(b), "error": b.error} for b in batteries]
        meters = each("hwmon:") + each("iio:")
        # powercap zone -> its counter and when it was read, on the clock of `now`: `now` for
        # a read that finished during this tick, earlier for an answer taken a tick late.
        # A stale answer (the tick before's) is left out: paired with `now` it made 0 W.
        energy: dict[str, tuple[EnergyZone, float]] = {}
        for key in (k for k in jobs if k.startswith("powercap:") and k not in waiting):
            if got.get(key) is not None:
                zone, finished = got[key]
                energy[zone.zone] = (zone, now - max(0.0, started - finished))
        reading = {k[len("powercap:"):] for k in jobs if k.startswith("powercap:") and k in waiting}
        inputs.meter_w, inputs.meter_source = self._measure(
            meters, energy, reading, batteries, discharging)
        for policy in self.policies.values():
            inputs.cpu_khz[policy.name] = got.get(f"cpu:{policy.name}")
        inputs.cpu_busy, inputs.cpu_peak = self._cpu_busy()
        for kind in self.devices:
            inputs.device_hz[kind] = got.get(f"{kind}:hz")
            inputs.runtime_status[kind] = got.get(f"{kind}:status")
        return inputs

    def _temps(self, names: list[str], zones: Mapping[str, ThermalZone]) -> dict[str, float]:
        """°C by zone type (else name). Zones may share a type (acpitz): the hottest, and a
        zone of the type that has no reading now counts with its last one. Else, the hot
        zone not answering, a cooler one of its type stood in and released the rule the
        hot one had tripped, where a zone that cannot be read holds it."""
        self._zones = {n: self._zones[n] for n in names if n in self._zones}  # still there
        temps: dict[str, float] = {}
        for name in names:
            zone = zones.get(name)
            if zone is not None and zone.celsius is not None:
                key = zone.type or zone.name
                self._zones[name] = (key, zone.celsius)
                temps[key] = max(zone.celsius, temps.get(key, zone.celsius))
        for name in names:
            zone, known = zones.get(name), self._zones.get(name)
            unread = zone is None or zone.celsius is None
            if unread and known is not None and known[0] in temps:
                temps[known[0]] = max(temps[known[0]], known[1])
        return temps

    def _follow_light_sensor(self) -> Optional[str]:
        """The sensor `sensors.light` names, found as the sensor thread finds it (None with
        "none"), to be read this tick."""
        # Compared here, under the one-read lock, not reset by the reload that sets
        # `light`: a read under way meanwhile would store the old sensor back.
        if self.light != self._light_for:  # a reload named another sensor: afresh
            self._light_for, self._light_sensor = self.light, None
        self._light_sensor = follow_light_sensor(self.fs, self.light, self._light_sensor)
        return self._light_sensor

    def _lux(self, got: Mapping[str, Any]) -> Optional[float]:
        """Lux from the light sensor read this tick (`_follow_light_sensor`), None without
        one. The first IIO device with a reading stood in for it: with light = "none" the
        light rules still switched profiles, and a named sensor could lose to another
        device."""
        name = self._light_sensor
        lux: Optional[float] = None if name is None else got.get(f"light:{name}")
        return lux

    def _battery(
        self, supplies: list[Supply], battery: Optional[Supply], discharging: Optional[bool],
        silent: bool,
    ) -> Optional[dict[str, Any]]:
        """The battery for status, with an error while the one seen before cannot be read
        (`silent`: its read has not answered yet)."""
        if battery is None and self._battery_name is None:
            return None  # no battery, ever
        if battery is None:  # its node is gone, or even its type does not read
            left = next((s for s in supplies if s.name == self._battery_name), None)
            error: Optional[str] = left.error if left is not None and left.error else (
                "no answer" if silent else "gone")
            out: dict[str, Any] = {"name": self._battery_name}
        else:
            self._battery_name, error = battery.name, battery.error
            out = {**_battery_fields(battery), "on_battery": discharging}
        if error != self._battery_error:
            if error is not None:
                log.warning("battery %s cannot be read (%s): its rules keep their state until "
                            "it reads again", out["name"], error)
            else:
                log.info("battery %s reads again", out["name"])
            self._battery_error = error
        if error is not None:
            out["error"] = error
        return out

    def _measure(
        self, meters: list[Meter], energy: Mapping[str, tuple[EnergyZone, float]],
        reading: set[str], batteries: list[Supply], discharging: Optional[bool],
    ) -> tuple[Optional[float], Optional[str]]:
        """Measured board watts: an input rail, else the board rails' sum, else RAPL psys,
        else the processor package (RAPL package-0, else an AMD hwmon package sensor), else
        the discharging batteries together. None while a rail that counts fails its read. A package
        sensor (amdgpu PPT, zenpower) is no board rail: summed with them it counted the
        package twice, as itself and in the rails that feed it.

        `energy`: the powercap zones answered this tick, each with the time of its counter;
        `reading`: those whose read is still under way (see `_rapl_watts`)."""
        every = [r for m in meters if m.scope == "board" for r in m.rails]
        board = _input_rail(every)
        if board is not None:
            if board.watts is None or board.watts < 0.0:
                # Not answering now, the sum of the other rails is a part of it
                # (VDD_CPU_GPU_CV and VDD_SOC of VDD_IN), published as the whole. Below 0 W
                # it misread (a shunt wired the other way, a bad register): the whole board
                # draws power, and published it was negative watts.
                return None, None
            return board.watts, f"hwmon {board.label}"
        rails = [(r.label, r.watts) for r in every if r.watts is not None]
        if rails and any(r.unread for r in every):
            return None, None  # the sum of the others is too low
        if rails:
            # Every rail (two unlabelled chips both have an "ina226:1"); one reading below
            # 0 W (noise at no load, a shunt wired the other way) draws nothing from the
            # board, and counted it made the board's watts low or even negative.
            return sum(max(0.0, w) for _, w in rails), "hwmon rails"
        rapl = self._rapl_watts(energy, reading)
        if rapl is not None:
            return rapl
        package = package_meter(meters)
        if package is not None:
            if any(r.unread for r in package.rails):
                return None, None  # a part of the package is not answering
            parts = [r.watts for r in package.rails if r.watts is not None]
            if parts:
                return sum(max(0.0, w) for w in parts), f"hwmon {package.chip} package"
        watts = [b.watts for b in batteries]
        if discharging and batteries and all(w is not None for w in watts):
            # every battery: the one in use need not be the first (an idle BAT0 read 0 W)
            names = "+".join(b.name for b in batteries)
            return sum(w for w in watts if w is not None), f"battery {names}"
        return None, None

    def _rapl_watts(
        self, energy: Mapping[str, tuple[EnergyZone, float]], reading: set[str],
    ) -> Optional[tuple[Optional[float], Optional[str]]]:
        """RAPL watts and their source, (None, None) while unknown; None without a zone to
        measure by. A zone whose read is still under way has no sample this tick: the
        previous one is kept, and no other zone stands in while that zone could be the one
        chosen (psys still reading, package-0 was published as the whole board for a tick and
        the counter restarted twice). For one tick the watts are then the last tick's: a read
        slower than a tick answers every other tick (its stale answer is left out), and the
        status keeps its measured figure and the measured joules count that tick. After
        that, none until it answers. Paired with this tick's time, the stale answer made 0 W
        and the next answer double."""
        self._rapl_names = {z: n for z, n in self._rapl_names.items()
                            if z in energy or z in reading}  # a zone gone is forgotten
        for found, _ in energy.values():
            self._rapl_names[found.zone] = found.name
        zone = board_energy_zone([z for z, _ in energy.values()])
        rank = None if zone is None else _rapl_rank(zone.zone, zone.name)
        last, self._rapl_last = self._rapl_last, None
        for waiting in reading:
            ahead = _rapl_rank(waiting, self._rapl_names.get(waiting))
            if ahead is not None and (rank is None or ahead < rank):
                held = self._rapl is not None and self._rapl[0][0] == waiting
                return last if held and last is not None else (None, None)
        if zone is None or zone.energy_uj is None:
            return None
        # Samples of one counter only: another zone (psys gone, package-0 read) or a new
        # max_energy_range_uj (the zone registered again) is a counter that starts over.
        counter = (zone.zone, zone.max_energy_range_uj)
        at = energy[zone.zone][1]
        prev, self._rapl = self._rapl, (counter, zone.energy_uj, at)
        if prev is not None and prev[0] == counter:
            avg = average_watts(prev[1], prev[2], zone.energy_uj, at, counter[1])
            if avg is not None:
                self._rapl_last = (avg, f"RAPL {zone.name}")
                return self._rapl_last
        return None, None

    def _cpu_busy(self) -> tuple[dict[str, float], Optional[float]]:
        """CPU-seconds per second per policy since the last call, and the busiest CPU's
        utilisation in percent (psutil; the load feedback's CPU signal)."""
        try:
            import psutil

            times = psutil.cpu_times(percpu=True)
        except Exception:  # no /proc/stat (sandbox): no utilisation
            return {}, None
        prev, self._cpu_prev = self._cpu_prev, times
        if prev is None or len(prev) != len(times):
            return {}, None
        busy_per_cpu = []
        for a, b in zip(prev, times):
            total = sum(b) - sum(a)
            idle = (b.idle + getattr(b, "iowait", 0.0)) - (a.idle + getattr(a, "iowait", 0.0))
            busy_per_cpu.append(0.0 if total <= 0 else max(0.0, 1.0 - idle / total))
        out = {}
        for policy in self.policies.values():
            out[policy.name] = sum(busy_per_cpu[c] for c in policy.cpus if c < len(busy_per_cpu))
        return out, 100.0 * max(busy_per_cpu, default=0.0)

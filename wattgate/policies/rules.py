"""Rules: which profile applies now, and why.

In order of precedence:

1. a client's pin (``wattgate profile NAME``) until it is released;
2. the first [[rules]] entry whose conditions all hold;
3. ``power.profile``.

Conditions: running on battery or on mains, battery capacity below N %, a thermal zone
above a temperature, ambient light below or above a level. Temperature, light and battery
capacity latch with hysteresis, so a zone hovering at its trip does not flip the profile
every second (the kernel's trip points carry a hysteresis for the same reason:
``trip_point_K_hyst``, Documentation/driver-api/thermal/sysfs-api.rst). Every rule's
latches are updated on every evaluation, also those of rules below the one that wins, so a
rule's state never depends on which rules come before it.

A reading that is missing (None) is unknown, not a reading that lets go: a held latch stays
held until a reading says otherwise, and the power source is taken as the last one known.
An I2C fuel gauge answering EIO for one poll, or a battery node that vanishes for a moment,
must not lift a low-battery cap and put it back a second later.

Pure: readings in, a decision out; the caller reads sysfs and owns the clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Optional

from wattgate.config import RuleConfig

BATTERY_HYSTERESIS = 2.0  # percent: capacity readings step by 1 % and jitter back and forth
Source = Literal["default", "rule", "pin"]


@dataclass(frozen=True)
class Readings:
    """What the rules look at; None where the machine cannot tell."""

    on_battery: Optional[bool] = None
    battery_percent: Optional[float] = None
    temps_c: Mapping[str, float] = field(default_factory=dict)  # zone type -> °C
    lux: Optional[float] = None


@dataclass(frozen=True)
class Decision:
    profile: str
    reason: str
    source: Source
    rule: Optional[int] = None  # index into [[rules]] when source == "rule"
    model_variant: Optional[str] = None  # a rule's variant, overriding the profile's
    pinned_by: Optional[str] = None


@dataclass(frozen=True)
class Latch:
    """A latched condition that changed state (a thermal or light event)."""

    rule: int
    kind: Literal["thermal", "light", "battery"]
    held: bool
    detail: str


def _thermal_key(rule: RuleConfig) -> tuple[Optional[float], Optional[str]]:
    """What a thermal latch depends on: the trip and the zone.

    Not the hysteresis: a held latch means the trip was passed and the zone has not cooled
    to the release point since, and the next evaluation applies the new release point. A
    reload that widens the hysteresis (what a user does against flapping) must not start
    the rule afresh and release it while the zone is still inside it.
    """
    return rule.temp_above_c, rule.zone


def _light_key(rule: RuleConfig) -> tuple[Optional[float], Optional[float]]:
    """What a light latch depends on: the thresholds (not the hysteresis, as for heat)."""
    return rule.lux_below, rule.lux_above


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def unknown_zones(rules: Sequence[RuleConfig], zone_types: Collection[str]) -> list[int]:
    """The indexes of the temperature rules that no zone of ``zone_types`` can ever trip.

    A rule reads only the zone whose type it names, so one that names a type the board
    does not have (``thermal_zone0``, the directory, for ``soc-thermal``, its type) never
    holds, nor does an any-zone rule on a board with no zones: thermal protection off
    without a word. Zones are found on the board, not in the config, so the caller checks
    once it knows them and says so; the rule stays as written.
    """
    return [i for i, rule in enumerate(rules) if rule.temp_above_c is not None
            and (rule.zone not in zone_types if rule.zone is not None else not zone_types)]


class RuleEngine:
    def __init__(
        self, rules: Sequence[RuleConfig], default: str, known: Collection[str]
    ) -> None:
        self.rules = list(rules)
        self.default = default
        self.known = frozenset(known)
        self.pinned: Optional[str] = None
        self.pinned_by: Optional[str] = None
        # per rule: latched thermal / light / battery conditions
        self._hot = [False] * len(self.rules)
        self._hot_zone: list[Optional[str]] = [None] * len(self.rules)  # the zone that held it
        self._light = [False] * len(self.rules)
        self._low = [False] * len(self.rules)
        self._on_battery: Optional[bool] = None  # the last power source read

    # -- pin -----------------------------------------------------------------------------

    def pin(self, name: Optional[str], who: str) -> None:
        """Pin ``name`` for client ``who``; None releases. KeyError for an unknown name."""
        if name is not None and name not in self.known:
            raise KeyError(f"unknown profile {name!r}; known: {', '.join(sorted(self.known))}")
        self.pinned = name
        self.pinned_by = who if name is not None else None

    def carry_over(self, old: RuleEngine, *, latches: bool = True) -> list[Latch]:
        """After a reload: what ``old`` had learnt that the new rules still apply to; returns
        the releases of the held latches the new rules do not carry on, ``rule`` indexing
        ``old.rules`` (the rule is gone, or without ``latches`` starts afresh).

        The pin stays if its profile still exists. With ``latches`` (the same board), a
        latched condition the new rules still have, with the same threshold (and zone),
        keeps its state, under the new hysteresis from the next evaluation on: a
        reload of unrelated settings while a zone sits inside its hysteresis must neither
        release the hold nor report the zone hot again. Identical conditions fed the
        same readings latch alike, so any old rule with the same condition will do; where
        old rules differ only in hysteresis, a held one wins.

        A held latch dropped without a word left the event stream with a "hot" and no
        "cool": re-adding the rule later sent a second "hot". Its release says why instead
        of a reading.
        """
        if old.pinned is not None and old.pinned_by is not None and old.pinned in self.known:
            self.pin(old.pinned, old.pinned_by)
        if not latches:
            return old._released(set(), set(), set(), "rule started afresh by reload")
        # Held entries last, so they win: two old rules at one threshold with different
        # hysteresis may disagree, and a hold is what the new rule's evaluation can release.
        held_last = sorted(range(len(old.rules)), key=lambda i: old._hot[i] or old._light[i])
        hot = {_thermal_key(old.rules[i]): (old._hot[i], old._hot_zone[i])
               for i in held_last if old.rules[i].temp_above_c is not None}
        light = {_light_key(old.rules[i]): old._light[i] for i in held_last
                 if old.rules[i].lux_below is not None or old.rules[i].lux_above is not None}
        low: dict[Optional[float], bool] = {
            r.battery_below: old._low[i] for i, r in enumerate(old.rules)
            if r.battery_below is not None
        }
        self._on_battery = old._on_battery
        for i, rule in enumerate(self.rules):
            self._hot[i], self._hot_zone[i] = hot.get(_thermal_key(rule), (False, None))
            self._light[i] = light.get(_light_key(rule), False)
            self._low[i] = low.get(rule.battery_below, False)
        return old._released(
            {_thermal_key(r) for r in self.rules if r.temp_above_c is not None},
            {_light_key(r) for r in self.rules if r.lux_below is not None
             or r.lux_above is not None},
            {r.battery_below for r in self.rules if r.battery_below is not None},
            "rule removed by reload")

    def _released(self, hot: Collection[tuple[Optional[float], Optional[str]]],
                  light: Collection[tuple[Optional[float], Optional[float]]],
                  low: Collection[Optional[float]], why: str) -> list[Latch]:
        """A release for each held latch of these rules whose condition is not among
        ``hot``, ``light`` and ``low`` (the keys of the conditions carried on)."""
        out: list[Latch] = []
        for i, rule in enumerate(self.rules):
            if self._hot[i] and _thermal_key(rule) not in hot:
                out.append(Latch(i, "thermal", False, why))
            if self._light[i] and _light_key(rule) not in light:
                out.append(Latch(i, "light", False, why))
            if self._low[i] and rule.battery_below not in low:
                out.append(Latch(i, "battery", False, why))
        return out

    # -- conditions ----------------------------------------------------------------------

    def _thermal(self, i: int, rule: RuleConfig, temps: Mapping[str, float]) -> Optional[str]:
        """The zone and temperature that hold the rule, or None (updates the latch)."""
        assert rule.temp_above_c is not None
        if rule.zone is not None:
            candidates = {rule.zone: temps[rule.zone]} if rule.zone in temps else {}
        else:
            candidates = dict(temps)
        if not candidates:  # no reading: a held rule stays held until a zone reads cool
            return "temperature unknown (held)" if self._hot[i] else None
        held_by = self._hot_zone[i]
        if self._hot[i] and held_by is not None and held_by not in candidates:
            # The zone that tripped the rule has no reading this time (a driver's read
            # failing now and then): hold, as for a named zone. Releasing on the other,
            # cooler zones would flip the profile every time that one read fails.
            return f"{held_by} temperature unknown (held)"
        zone, temp = max(candidates.items(), key=lambda kv: kv[1])
        release = rule.temp_above_c - rule.hysteresis_c
        self._hot[i] = temp > (release if self._hot[i] else rule.temp_above_c)
        if not self._hot[i]:
            self._hot_zone[i] = None
            return None
        self._hot_zone[i] = zone
        if temp > rule.temp_above_c:
            return f"{zone} {_fmt(temp)} °C above {_fmt(rule.temp_above_c)} °C"
        # Back at or under the trip, held by the hysteresis: "79 °C above 80 °C" was false.
        return f"{zone} {_fmt(temp)} °C, held until {_fmt(release)} °C or below"

    def _light_holds(self, i: int, rule: RuleConfig, lux: Optional[float]) -> Optional[str]:
        if lux is None:
            return "light unknown (held)" if self._light[i] else None
        hyst = rule.hysteresis_lux
        held = self._light[i]
        ok = True
        parts = []
        # Each part says the threshold the reading is past, or, when only the hysteresis
        # holds it, where it lets go: "7 lx below 2 lx" was false.
        if rule.lux_below is not None:
            limit = rule.lux_below + hyst if held else rule.lux_below
            ok = ok and lux < limit
            parts.append(f"below {_fmt(rule.lux_below)} lx" if lux < rule.lux_below
                         else f"held until {_fmt(limit)} lx or above")
        if rule.lux_above is not None:
            # Never below 0 lx, the darkest a sensor reads: a dim threshold under the
            # hysteresis (lux_above 2, hysteresis 5) would otherwise hold for ever.
            limit = max(0.0, rule.lux_above - hyst) if held else rule.lux_above
            ok = ok and lux > limit
            parts.append(f"above {_fmt(rule.lux_above)} lx" if lux > rule.lux_above
                         else f"held until {_fmt(limit)} lx or below")
        self._light[i] = ok
        if not ok:
            return None
        sep = ", " if parts[0].startswith("held") else " "
        return f"light {_fmt(lux)} lx{sep}{' and '.join(parts)}"

    def _battery_low(self, i: int, rule: RuleConfig, percent: Optional[float]) -> Optional[str]:
        assert rule.battery_below is not None
        if percent is None:  # unknown: a held rule stays held until a reading lets it go
            return "battery unknown (held)" if self._low[i] else None
        limit = rule.battery_below
        if self._low[i]:  # at most 100 %: a full battery always releases (battery_below 99)
            limit = min(100.0, limit + BATTERY_HYSTERESIS)
        self._low[i] = percent < limit
        if not self._low[i]:
            return None
        if percent < rule.battery_below:
            return f"battery {_fmt(percent)} % below {_fmt(rule.battery_below)} %"
        return f"battery {_fmt(percent)} %, held until {_fmt(limit)} % or above"

    def _power_source(self, rule: RuleConfig, reading: Optional[bool]) -> Optional[str]:
        """The reason text when the rule's on_battery condition holds, else None; an unknown
        source (None) is the last one read."""
        assert rule.on_battery is not None
        source = reading if reading is not None else self._on_battery
        if source is None or source != rule.on_battery:
            return None
        text = "on battery" if rule.on_battery else "on mains"
        return text if reading is not None else f"{text} (power source unknown, held)"

    def _holds(self, i: int, rule: RuleConfig, r: Readings) -> tuple[bool, str]:
        """Whether every condition of rule i holds, and the reason text; updates latches."""
        reasons: list[str] = []
        ok = True
        # Latched conditions first, all of them, so their state is kept up to date.
        if rule.temp_above_c is not None:
            text = self._thermal(i, rule, r.temps_c)
            ok = ok and text is not None
            reasons.append(text or "")
        if rule.lux_below is not None or rule.lux_above is not None:
            text = self._light_holds(i, rule, r.lux)
            ok = ok and text is not None
            reasons.append(text or "")
        if rule.battery_below is not None:
            text = self._battery_low(i, rule, r.battery_percent)
            ok = ok and text is not None
            reasons.append(text or "")
        if rule.on_battery is not None:
            text = self._power_source(rule, r.on_battery)
            ok = ok and text is not None
            reasons.append(text or "")
        reason = rule.name or " and ".join(t for t in reasons if t)
        return ok, reason

    # -- decision ------------------------------------------------------------------------

    def evaluate(self, readings: Readings) -> tuple[Decision, list[Latch]]:
        """The profile to use now, plus the latched conditions that changed."""
        before = (list(self._hot), list(self._light), list(self._low))
        winner: Optional[Decision] = None
        for i, rule in enumerate(self.rules):
            ok, reason = self._holds(i, rule, readings)
            if ok and winner is None:
                winner = Decision(
                    profile=rule.profile if rule.profile is not None else self.default,
                    reason=reason,
                    source="rule",
                    rule=i,
                    model_variant=rule.model_variant,
                )
        if readings.on_battery is not None:
            self._on_battery = readings.on_battery
        changes = self._changes(before, readings)
        if self.pinned is not None:
            return Decision(
                self.pinned, f"pinned by {self.pinned_by}", "pin", pinned_by=self.pinned_by
            ), changes
        if winner is not None:
            return winner, changes
        return Decision(self.default, "default (power.profile)", "default"), changes

    def _changes(
        self, before: tuple[list[bool], list[bool], list[bool]], readings: Readings
    ) -> list[Latch]:
        changes: list[Latch] = []
        hot, light, low = before
        for i, rule in enumerate(self.rules):
            if hot[i] != self._hot[i]:
                zone = rule.zone or "any zone"
                temps = readings.temps_c
                now = temps.get(rule.zone) if rule.zone else max(temps.values(), default=None)
                detail = f"{zone} {_fmt(now)} °C" if now is not None else zone
                changes.append(Latch(i, "thermal", self._hot[i], detail))
            if light[i] != self._light[i]:
                lux = readings.lux
                text = "unknown" if lux is None else f"{_fmt(lux)} lx"
                changes.append(Latch(i, "light", self._light[i], text))
            if low[i] != self._low[i]:
                pct = readings.battery_percent
                text = "unknown" if pct is None else f"{_fmt(pct)} %"
                changes.append(Latch(i, "battery", self._low[i], text))
        return changes

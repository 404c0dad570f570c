"""Profiles: the [profiles.*] tables resolved into concrete settings per activity state.

A profile has shared keys, an [idle] and an [active] table, and may ``include`` another
profile, as tuned's profiles do. A setting for state S of profile P is the first one found
in this order, nearest first (the same rule tuned applies to included profiles):

    P.S.key -> P.key -> include(P).S.key -> include(P).key -> ... -> unset

Unset means "leave the knob as the daemon found it": the controller then writes back the
original value it journaled, so switching away from a profile that set a knob undoes it.

Frequencies may be given as a percentage of a device's range ("40%"); ``absolute`` turns
them into kHz or Hz once the device's range is known (target.py). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal, Optional, Union

from wattgate.config import (
    ActivitySettings,
    Config,
    FreqSetting,
    ModelConfig,
    ProfileConfig,
    governor_list,
    include_chain,
    parse_percent,
)

State = Literal["idle", "active"]
STATES: tuple[State, ...] = ("idle", "active")
WAKE_ALL = frozenset({"motion", "snap"})


@dataclass(frozen=True)
class Settings:
    """One activity state's resolved knobs; None (or an empty tuple) means unset."""

    cpu_governor: tuple[str, ...] = ()
    cpu_min_khz: Optional[FreqSetting] = None
    cpu_max_khz: Optional[FreqSetting] = None
    cpu_epp: Optional[str] = None
    npu_governor: tuple[str, ...] = ()
    npu_min_hz: Optional[FreqSetting] = None
    npu_max_hz: Optional[FreqSetting] = None
    npu_runtime_pm: Optional[str] = None
    npu_autosuspend_ms: Optional[int] = None
    gpu_governor: tuple[str, ...] = ()
    gpu_max_hz: Optional[FreqSetting] = None
    gpu_govern: Optional[str] = None
    gpu_railgate: Optional[bool] = None
    capture_fps: Optional[float] = None
    max_infer_fps: Optional[float] = None
    model_variant: Optional[str] = None

    def as_dict(self) -> dict[str, object]:
        """The set keys only, as config spells them (for status and events)."""
        out: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == ():
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


SETTING_KEYS = tuple(f.name for f in fields(Settings))
_GOVERNOR_KEYS = ("cpu_governor", "npu_governor", "gpu_governor")


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile with its includes applied: what each activity state asks for."""

    name: str
    description: str
    chain: tuple[str, ...]  # the profile, then what it includes, nearest first
    cooldown_s: float
    wake_on: frozenset[str]
    idle: Settings = field(default_factory=Settings)
    active: Settings = field(default_factory=Settings)

    def settings(self, state: State) -> Settings:
        return self.active if state == "active" else self.idle


def _lookup(chain: list[ProfileConfig], state: State, key: str) -> object:
    for profile in chain:
        table: ActivitySettings = profile.active if state == "active" else profile.idle
        for source in (table, profile):
            value = getattr(source, key)
            if value is not None:
                return value
    return None


def _settings(chain: list[ProfileConfig], state: State) -> Settings:
    values: dict[str, object] = {}
    for key in SETTING_KEYS:
        value = _lookup(chain, state, key)
        if value is None:
            continue
        if key in _GOVERNOR_KEYS:
            assert isinstance(value, (str, list))
            values[key] = governor_list(value)
        else:
            values[key] = value
    return Settings(**values)  # type: ignore[arg-type]


def resolve(
    profiles: Mapping[str, ProfileConfig], name: str, default_cooldown_s: float
) -> ResolvedProfile:
    """Resolve one profile; KeyError for an unknown name, ValueError for a bad include.

    The config validator already rejects unknown includes and cycles, so the errors here
    only reach callers that build profiles by hand.
    """
    if name not in profiles:
        raise KeyError(f"unknown profile {name!r}; known: {', '.join(sorted(profiles))}")
    names = include_chain(dict(profiles), name)
    chain = [profiles[n] for n in names]
    cooldown = next((p.cooldown_s for p in chain if p.cooldown_s is not None), None)
    wake_on = next((p.wake_on for p in chain if p.wake_on is not None), None)
    return ResolvedProfile(
        name=name,
        description=chain[0].description,
        chain=tuple(names),
        cooldown_s=default_cooldown_s if cooldown is None else cooldown,
        wake_on=WAKE_ALL if wake_on is None else frozenset(wake_on),
        idle=_settings(chain, "idle"),
        active=_settings(chain, "active"),
    )


def resolve_all(cfg: Config) -> dict[str, ResolvedProfile]:
    return {
        name: resolve(cfg.profiles, name, cfg.power.cooldown_s) for name in sorted(cfg.profiles)
    }


def absolute(value: Union[int, str], lo: int, hi: int) -> int:
    """A frequency setting in the device's unit: ints pass through, "N%" maps onto lo..hi.

    "0%" is the lowest frequency and "100%" the highest; the result is rounded to the
    unit and snapped to an OPP later, by the caller that knows the device's table.
    """
    if isinstance(value, int):
        return value
    percent = parse_percent(value)
    if percent is None:
        raise ValueError(f"not a frequency: {value!r}")
    return round(lo + (hi - lo) * percent / 100.0)


def chosen_variant(rule_variant: Optional[str], profile_variant: Optional[str]) -> Optional[str]:
    """The model variant to run: a rule's (``Decision.model_variant``) overrides the
    profile's for the activity state; the result None is the main model.

    A rule's None means the rule says nothing of the model (no model_variant key), so the
    profile's variant stands; a rule's "" is the main model, as "" is in a profile, and
    overrides the profile's variant like any name does ("on mains: full model")."""
    if rule_variant is not None:
        return rule_variant or None
    return profile_variant or None


def variant_model(model: ModelConfig, variant: Optional[str]) -> ModelConfig:
    """The [model] settings to load for ``variant`` (None or "" is the main model).

    A variant replaces path and kind; labels, score_threshold and resize fall back to
    [model]'s.
    KeyError for a name that [model.variants] does not have.
    """
    if not variant:
        return model
    v = model.variants[variant]
    return model.model_copy(
        update={
            "path": v.path,
            "kind": v.kind,
            "labels": v.labels if v.labels is not None else model.labels,
            "score_threshold": (
                v.score_threshold if v.score_threshold is not None else model.score_threshold
            ),
            "resize": v.resize if v.resize is not None else model.resize,
        }
    )

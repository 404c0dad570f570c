"""Profiles: config errors that name the key, include inheritance, percentages, and the
target state they become on a real board's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.boards import materialize
from wattgate.config import BUILTIN_PROFILES, Config, ConfigError, load_config, parse_config
from wattgate.drivers.cpufreq import discover_policies
from wattgate.drivers.devfreq import read_devfreq
from wattgate.drivers.sysfs import Sysfs
from wattgate.policies.profiles import Settings, absolute, resolve, resolve_all, variant_model
from wattgate.policies.target import BoardCaps, CpuCaps, DevfreqCaps, build, complete, diff

REPO = Path(__file__).resolve().parents[1]
CPU = "devices/system/cpu/cpufreq"
NPU = "class/devfreq/fdab0000.npu"
NPU_DEV = "devices/platform/fdab0000.npu"


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


# -- config errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"profiles": {"night": {"include": "nope"}}},
         "profiles.night.include: got 'nope'; unknown profile 'nope'"),
        ({"profiles": {"a": {"include": "b"}, "b": {"include": "a"}}},
         "profiles.a.include: got 'b'; include cycle: a -> b -> a"),
        ({"profiles": {"a": {"include": "a"}}}, "profiles.a.include: got 'a'; include cycle"),
        ({"profiles": {"a": {"idle": {"cpu_max_khz": "120%"}}}},
         "profiles.a.idle.cpu_max_khz: got '120%'"),
        ({"profiles": {"a": {"active": {"npu_max_hz": "fast"}}}},
         "profiles.a.active.npu_max_hz: got 'fast'"),
        ({"profiles": {"a": {"cpu_min_khz": 0}}}, "profiles.a.cpu_min_khz: got 0"),
        ({"profiles": {"a": {"npu_runtime_pm": "off"}}}, "profiles.a.npu_runtime_pm: got 'off'"),
        ({"profiles": {"a": {"cpu_governor": "|"}}}, "profiles.a.cpu_governor: got '|'"),
        ({"profiles": {"a": {"turbo": True}}}, "profiles.a.turbo: unknown key"),
        ({"profiles": {"a": {"idle": {"model_variant": "lite"}}}},
         "profiles.a.idle.model_variant: got 'lite'; not a name in [model.variants]"),
        ({"power": {"profile": "eco"}}, "power.profile: got 'eco'; unknown profile"),
        ({"rules": [{"on_battery": True, "profile": "eco"}]},
         "rules.0.profile: got 'eco'; unknown profile"),
        ({"rules": [{"profile": "powersave"}]}, "rules.0: "),
        ({"rules": [{"on_battery": True}]}, "rules.0: "),
        # conditions no sensor can meet: the rule would never hold
        ({"rules": [{"lux_below": 0, "profile": "powersave"}]}, "rules.0.lux_below: got 0"),
        ({"rules": [{"lux_above": 50.0, "lux_below": 20.0, "profile": "powersave"}]},
         "rules.0: got {'lux_above': 50.0, 'lux_below': 20.0, 'profile': 'powersave'}; Value "
         "error, lux_above 50 and lux_below 20: no light is both"),
        ({"rules": [{"on_battery": True, "model_variant": "lite"}]},
         "rules.0.model_variant: got 'lite'"),
        ({"model": {"variants": {"lite": {"kind": "ssd"}}}},
         "model.variants.lite.path: required key is missing"),
    ],
)
def test_bad_profiles_and_rules_name_their_key(raw: dict[str, Any], expected: str) -> None:
    got = problems(raw)
    assert any(p.startswith(expected) for p in got), got


def test_cycle_reports_every_profile_in_it() -> None:
    got = problems({"profiles": {"a": {"include": "b"}, "b": {"include": "c"},
                                 "c": {"include": "a"}}})
    assert {p.split(":")[0] for p in got} == {
        "profiles.a.include", "profiles.b.include", "profiles.c.include"
    }


def test_builtin_profiles_stay_and_a_table_merges_over_one(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[profiles.balanced]\ndescription = "mine"\ncpu_governor = "powersave"\n'
                    '[profiles.night]\ninclude = "powersave"\n')
    cfg = load_config(path)
    assert set(cfg.profiles) == {*BUILTIN_PROFILES, "night"}
    mine = resolve(cfg.profiles, "balanced", cfg.power.cooldown_s)
    assert mine.description == "mine"
    assert mine.idle.cpu_governor == mine.active.cpu_governor == ("powersave",)
    assert mine.idle.npu_runtime_pm == "auto"  # the built-in's keys the table leaves out
    # powersave includes balanced: it inherits the changed balanced
    night = resolve(cfg.profiles, "night", cfg.power.cooldown_s)
    assert night.chain == ("night", "powersave", "balanced")
    assert night.idle.npu_runtime_pm == "auto"
    assert night.active.npu_max_hz == "50%"


def test_shipped_profiles_are_the_builtin_ones() -> None:
    shipped = load_config(REPO / "config.toml")
    assert shipped.profiles == Config().profiles
    assert set(shipped.profiles) == {"performance", "balanced", "powersave", "inspection"}


# -- resolution ------------------------------------------------------------------------------


def test_state_tables_override_shared_keys_then_includes() -> None:
    cfg = parse_config({"profiles": {
        "base": {"cpu_governor": ["ondemand"], "cpu_epp": "power", "cooldown_s": 7.0,
                 "idle": {"cpu_max_khz": "10%"}, "active": {"cpu_max_khz": "90%"}},
        "child": {"include": "base", "cpu_max_khz": "50%", "wake_on": ["snap"],
                  "active": {"cpu_epp": "performance"}},
    }})
    child = resolve(cfg.profiles, "child", 2.0)
    # own shared key beats the included profile's state table
    assert child.idle.cpu_max_khz == child.active.cpu_max_khz == "50%"
    assert child.active.cpu_epp == "performance"  # own state table first
    assert child.idle.cpu_epp == "power"  # inherited shared key
    assert child.idle.cpu_governor == ("ondemand",)
    assert child.cooldown_s == 7.0 and child.wake_on == frozenset({"snap"})
    base = resolve(cfg.profiles, "base", 2.0)
    assert base.wake_on == frozenset({"motion", "snap"})


def test_builtin_balanced_and_inspection() -> None:
    profiles = resolve_all(Config())
    balanced = profiles["balanced"]
    assert balanced.idle.npu_runtime_pm == "auto" and balanced.idle.npu_max_hz == "0%"
    assert balanced.active.npu_governor == ("performance", "userspace")
    assert balanced.active.npu_max_hz == "100%"
    inspection = profiles["inspection"]
    assert inspection.chain == ("inspection", "balanced")
    assert inspection.wake_on == frozenset({"snap"})
    assert inspection.idle.max_infer_fps == inspection.active.max_infer_fps == 0.0
    assert inspection.idle.npu_autosuspend_ms == 0


def test_governor_strings_and_tuned_style_lists() -> None:
    cfg = parse_config({"profiles": {"a": {"cpu_governor": "schedutil|ondemand",
                                           "npu_governor": ["simple_ondemand"]}}})
    a = resolve(cfg.profiles, "a", 2.0)
    assert a.idle.cpu_governor == ("schedutil", "ondemand")
    assert a.idle.npu_governor == ("simple_ondemand",)


def test_resolve_unknown_name() -> None:
    with pytest.raises(KeyError, match="unknown profile 'x'"):
        resolve(Config().profiles, "x", 2.0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0%", 408000), ("100%", 2400000), ("50%", 1404000), ("12.5%", 657000), (1000000, 1000000)],
)
def test_percent_to_absolute(value: Any, expected: int) -> None:
    assert absolute(value, 408000, 2400000) == expected


def test_variant_model_keeps_unset_keys_from_the_main_model() -> None:
    cfg = parse_config({"model": {"labels": "/l.txt", "score_threshold": 0.6,
                                  "resize": "letterbox", "variants": {
        "lite": {"path": "/m/lite.tflite", "kind": "ssd"},
        "stretched": {"path": "/m/s.tflite", "resize": "stretch"}}}})
    lite = variant_model(cfg.model, "lite")
    assert (lite.path, lite.kind, lite.labels, lite.score_threshold, lite.resize) == (
        "/m/lite.tflite", "ssd", "/l.txt", 0.6, "letterbox")
    assert variant_model(cfg.model, "stretched").resize == "stretch"
    assert variant_model(cfg.model, None) is cfg.model
    assert variant_model(cfg.model, "") is cfg.model


# -- target state on a board ----------------------------------------------------------------


def rk3588_caps(tmp_path: Path) -> BoardCaps:
    fs = Sysfs(materialize("rk3588", tmp_path))
    cpus = tuple(
        CpuCaps(p.name, p.path, p.governors, True, p.cpuinfo_min_khz, p.cpuinfo_max_khz,
                p.frequencies_khz)
        for p in discover_policies(fs)
    )
    npu = read_devfreq(fs, "fdab0000.npu")
    table = npu.frequencies_hz
    return BoardCaps(
        cpus=cpus,
        npu=DevfreqCaps(npu.name, npu.path, npu.governors, True, table, table[0], table[-1]),
        npu_pm=(NPU_DEV,),
        npu_autosuspend=(NPU_DEV,),
    )


def test_balanced_idle_target_on_rk3588(tmp_path: Path) -> None:
    caps = rk3588_caps(tmp_path)
    target = build(resolve_all(Config())["balanced"].idle, caps)
    assert target.knobs == {
        f"{NPU_DEV}/power/control": "auto",
        f"{NPU_DEV}/power/autosuspend_delay_ms": "100",
        f"{NPU}/max_freq": "300000000",
        f"{CPU}/policy0/scaling_governor": "schedutil",
        f"{CPU}/policy0/scaling_max_freq": "816000",  # 40 % of 408..1800 = 964.8, snapped down
        f"{CPU}/policy4/scaling_governor": "schedutil",
        f"{CPU}/policy4/scaling_max_freq": "1200000",  # 40 % of 408..2400 = 1204.8
        f"{CPU}/policy6/scaling_governor": "schedutil",
        f"{CPU}/policy6/scaling_max_freq": "1200000",
    }
    assert next(iter(target.knobs)) == f"{NPU_DEV}/power/control"  # the NPU first
    assert target.notes == ()


def test_active_ceilings_follow_the_load_level(tmp_path: Path) -> None:
    caps = rk3588_caps(tmp_path)
    active = resolve_all(Config())["balanced"].active
    top = build(active, caps, 1.0).knobs
    assert top[f"{NPU}/governor"] == "performance"
    assert top[f"{NPU}/max_freq"] == "1000000000"
    assert top[f"{CPU}/policy4/scaling_max_freq"] == "2400000"
    bottom = build(active, caps, 0.0).knobs
    assert bottom[f"{NPU}/max_freq"] == "300000000"
    assert bottom[f"{CPU}/policy4/scaling_max_freq"] == "408000"
    half = build(active, caps, 0.5).knobs
    assert half[f"{NPU}/max_freq"] == "600000000"  # 300 + 0.5 * 700 = 650 MHz, snapped down
    assert build(active, caps).knobs == top  # no level: the profile's ceiling


@pytest.mark.parametrize("name", ["performance", "always_on"])
def test_a_profile_held_at_the_top_stays_there_at_any_load(tmp_path: Path, name: str) -> None:
    """performance (and simulate's always_on baseline) hold the NPU at its top clock, as
    docs/power.md's table says: load feedback slid its active ceiling down to the lowest
    clock at a low duty, ~3x slower inference in the middle of every event."""
    from wattgate.simulate import BASELINES, baseline_config

    caps = rk3588_caps(tmp_path)
    cfg = baseline_config(Config(), name) if name in BASELINES else Config()
    profile = resolve_all(cfg)[name]
    targets = [build(profile.settings("idle"), caps)] + [
        build(profile.settings("active"), caps, level) for level in (0.0, 0.5, 1.0)]
    for n, target in enumerate(targets):
        knobs = target.knobs
        assert knobs[f"{NPU}/max_freq"] == "1000000000", n
        assert knobs[f"{NPU}/min_freq"] == "1000000000", n


def test_floor_never_above_ceiling_and_fallbacks_noted(tmp_path: Path) -> None:
    caps = rk3588_caps(tmp_path)
    settings = Settings(cpu_governor=("interactive",), cpu_min_khz="90%", cpu_max_khz="10%",
                        npu_governor=("nonesuch",), npu_min_hz=400_000_000)
    target = build(settings, caps)
    assert f"{CPU}/policy0/scaling_governor" not in target.knobs
    assert target.knobs[f"{CPU}/policy0/scaling_min_freq"] == \
        target.knobs[f"{CPU}/policy0/scaling_max_freq"] == "408000"
    assert target.knobs[f"{NPU}/min_freq"] == "400000000"
    assert any("none of governors ['interactive']" in n for n in target.notes)
    assert any("fdab0000.npu: none of governors ['nonesuch']" in n for n in target.notes)


def test_epp_checked_against_choices_and_governor() -> None:
    cpu = CpuCaps("policy0", f"{CPU}/policy0", ("performance", "powersave"), True,
                  400000, 4800000, (), has_epp=True, epp_choices=("performance", "power"))
    caps = BoardCaps(cpus=(cpu,))
    ok = build(Settings(cpu_governor=("powersave",), cpu_epp="power"), caps)
    assert ok.knobs[f"{CPU}/policy0/energy_performance_preference"] == "power"
    busy = build(Settings(cpu_governor=("performance",), cpu_epp="power"), caps)
    assert f"{CPU}/policy0/energy_performance_preference" not in busy.knobs
    assert "needs a governor other than performance" in busy.notes[0]
    bad = build(Settings(cpu_epp="turbo"), caps)
    assert "not in ['performance', 'power']" in bad.notes[0]


def test_vendor_knobs_and_pipeline_settings() -> None:
    caps = BoardCaps(gpu_railgate="devices/gpu.0",
                     galcore_govern="bus/platform/drivers/galcore/gpu_govern")
    target = build(Settings(gpu_railgate=False, gpu_govern="nominal", capture_fps=5.0,
                            max_infer_fps=2.0, model_variant="lite"), caps)
    assert target.knobs == {"devices/gpu.0/railgate_enable": "0",
                            "bus/platform/drivers/galcore/gpu_govern": "nominal"}
    assert (target.pipeline.capture_fps, target.pipeline.max_infer_fps,
            target.pipeline.model_variant) == (5.0, 2.0, "lite")
    assert build(Settings(model_variant=""), caps).pipeline.model_variant is None


def test_complete_fills_originals_and_diff_keeps_order() -> None:
    baseline = {"a": "1", "b": "2", "c": "3"}
    wanted = complete({"b": "20", "d": "4"}, baseline, ["a", "b", "c", "x"])
    assert wanted == {"a": "1", "b": "20", "c": "3", "d": "4"}
    assert diff({"a": "1", "b": "2"}, wanted) == {"b": "20", "c": "3", "d": "4"}
    assert list(diff({}, wanted)) == ["a", "b", "c", "d"]
    assert diff(wanted, wanted) == {}


@pytest.mark.parametrize("level", [None, 0.0, 0.5, 1.0])
def test_load_level_never_lifts_a_ceiling_above_what_was_asked(level: Any) -> None:
    # 45 % .. 55 % of 300..1000 MHz is 615..685 MHz: the floor snaps up to 1 GHz, the
    # ceiling down to 600 MHz, and a thermal profile's cap must win over its floor.
    npu = DevfreqCaps("fdab0000.npu", NPU, ("performance",), True,
                      (300_000_000, 600_000_000, 1_000_000_000), 300_000_000, 1_000_000_000)
    cpu = CpuCaps("policy0", f"{CPU}/policy0", ("schedutil",), True, 400_000, 2_000_000,
                  (400_000, 1_000_000, 2_000_000))
    caps = BoardCaps(cpus=(cpu,), npu=npu)
    settings = Settings(npu_min_hz="45%", npu_max_hz="55%",
                        cpu_min_khz="80%", cpu_max_khz="50%")
    knobs = build(settings, caps, level).knobs
    assert int(knobs[f"{NPU}/max_freq"]) <= 685_000_000
    assert int(knobs[f"{NPU}/min_freq"]) <= int(knobs[f"{NPU}/max_freq"])
    assert int(knobs[f"{CPU}/policy0/scaling_max_freq"]) <= 1_200_000
    assert int(knobs[f"{CPU}/policy0/scaling_min_freq"]) <= \
        int(knobs[f"{CPU}/policy0/scaling_max_freq"])

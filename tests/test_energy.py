"""The energy model: the kernel's per-OPP formula, device states, board tables, integration."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.boards import BOARDS, energy_model, module
from wattgate.policies.energy import (
    BoardPower,
    ClusterPower,
    CpuLoad,
    DeviceLoad,
    DevicePower,
    EnergyMeter,
    Opp,
    PowerState,
    Watts,
    board_power,
    estimate,
)

MHZ = 1_000_000


def rk3588() -> BoardPower:
    return board_power("rk3588", energy_model("rk3588"))


def test_cpu_power_is_the_kernel_energy_model_formula() -> None:
    # drivers/opp/of.c: uW = dynamic-power-coefficient * MHz * V^2
    little = rk3588().clusters["policy0"]
    assert little.busy_w(1800000) == pytest.approx(100 * 1800 * 0.95**2 / 1e6)
    big = rk3588().clusters["policy4"]
    assert big.busy_w(2400000) == pytest.approx(300 * 2400 * 1.0**2 / 1e6)
    # 2304 MHz is not in the OPP table with a voltage: it runs at the next OPP up
    assert big.busy_w(2304000) == big.busy_w(2400000)
    assert big.busy_w(None) == big.busy_w(2400000)


def test_policy6_shares_policy4_model() -> None:
    model = rk3588()
    assert model.clusters["policy6"].opps == model.clusters["policy4"].opps
    assert model.clusters["policy6"].name == "policy6"


def test_idle_floor_scales_with_voltage_squared() -> None:
    little = rk3588().clusters["policy0"]
    assert little.floor_w(None) == pytest.approx(little.idle_w)
    assert little.floor_w(408000) == pytest.approx(little.idle_w * (0.675 / 0.95) ** 2)
    assert little.watts(408000, 0.5) == pytest.approx(
        0.5 * little.busy_w(408000) + little.floor_w(408000))


def test_npu_states() -> None:
    npu = rk3588().npu
    assert npu is not None
    assert npu.busy_w(None) == npu.active_w == 1.45
    assert npu.busy_w(300 * MHZ) == pytest.approx(1.45 * 300 * 0.7**2 / (1000 * 0.85**2))
    assert npu.powered_w(300 * MHZ) == pytest.approx(0.12 * (0.7 / 0.85) ** 2)
    assert npu.speed(300 * MHZ) == pytest.approx(0.3)
    assert npu.watts(None, 0.0, 0.0) == npu.suspended_w
    assert npu.watts(None, 0.0, 1.0) == npu.idle_w
    assert npu.watts(None, 1.0, 1.0) == npu.active_w
    assert npu.watts(None, 0.25, 0.5) == pytest.approx(
        0.25 * npu.active_w + 0.25 * npu.idle_w + 0.5 * npu.suspended_w)
    assert npu.watts(None, 0.5, 0.1) == npu.watts(None, 0.5, 0.5)  # powered >= busy


def test_gpu_active_power_from_its_dt_coefficient() -> None:
    gpu = rk3588().gpu
    assert gpu is not None
    assert gpu.active_w == pytest.approx(2982 * 1000 * 0.85**2 / 1e6)


def test_single_frequency_device() -> None:
    hailo = DevicePower(1.5, 0.2, 0.05)
    assert hailo.busy_w(123) == 1.5 and hailo.powered_w(None) == 0.2 and hailo.speed(1) == 1.0


@pytest.mark.parametrize("name", BOARDS)
def test_every_board_model_parses_and_estimates_are_labelled(name: str) -> None:
    spec = energy_model(name)
    model = board_power(name, spec)
    assert model.source
    doc = module(name).__doc__ or ""
    text = Path(module(name).__file__ or "").read_text(encoding="utf-8")
    if model.npu is not None:
        assert "ESTIMATE" in text, f"{name}: NPU watts without a labelled estimate"
    assert "Sources" in doc


def test_boards_without_a_cpu_model_say_so() -> None:
    jetson = board_power("jetson-orin-nano", energy_model("jetson-orin-nano"))
    assert set(jetson.unmodelled) == {"cpu", "npu", "gpu", "camera", "static"}
    assert board_power("nothing", None).unmodelled == ["cpu", "npu", "gpu", "camera", "static"]
    assert rk3588().unmodelled == []


def test_estimate_sums_the_parts() -> None:
    model = rk3588()
    state = PowerState(
        cpus={"policy0": CpuLoad(408000, 0.2), "policy4": CpuLoad(408000, 0.0),
              "policy6": CpuLoad(408000, 0.0)},
        npu=DeviceLoad(300 * MHZ, 0.0, 0.0),
    )
    watts = estimate(model, state)
    expected_cpu = sum(c.watts(408000, 0.2 if n == "policy0" else 0.0)
                       for n, c in model.clusters.items())
    assert watts.cpu == pytest.approx(expected_cpu)
    assert watts.npu == pytest.approx(0.005)
    assert (watts.camera, watts.static) == (0.25, 1.0)
    assert watts.total == pytest.approx(watts.steerable + 1.25)
    off = estimate(model, PowerState(camera_on=False))
    assert off.camera == 0.0 and off.npu == 0.0
    assert off.cpu == pytest.approx(sum(c.floor_w(None) for c in model.clusters.values()))


def test_meter_integrates_joules_and_means() -> None:
    meter = EnergyMeter()
    meter.add(Watts(cpu=1.0, npu=2.0), 2.0)
    meter.add(Watts(cpu=3.0, static=1.0), 2.0)
    meter.add(Watts(cpu=100.0), 0.0)  # no time, no energy
    assert meter.seconds == 4.0
    assert meter.joules == Watts(cpu=8.0, npu=4.0, static=2.0)
    assert meter.mean_watts() == Watts(cpu=2.0, npu=1.0, static=0.5)
    assert EnergyMeter().mean_watts() == Watts()
    assert meter.joules.to_dict()["total"] == 14.0


def test_cluster_cycles_per_second() -> None:
    c = ClusterPower("p", 100.0, (Opp(408000, 0.675), Opp(1800000, 0.95)))
    assert c.cycles_per_s(500000) == 1.8e9

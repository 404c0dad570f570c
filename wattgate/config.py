"""pydantic models of config.toml: the one source of truth for keys, defaults and docs.

Every model forbids unknown keys, so a typo is an error that names the key instead of a
setting that silently does nothing. `load_config` reads the main file, deep-merges the
drop-ins in `config.d/*.toml` beside it in name order, and validates the result;
`ConfigError` carries one line per problem, each naming the key path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11 (Debian 11, older Yocto)
    import tomli as tomllib

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: what systemd and init scripts expect


class ConfigError(Exception):
    """A config that cannot be used; `problems` has one line per bad key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class Section(BaseModel):
    """Base of every table: unknown keys are errors, values are checked on assignment too."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class DaemonConfig(Section):
    socket: str = Field(
        "/run/wattgate/wattgate.sock", description="Unix socket the daemon listens on."
    )
    socket_mode: int = Field(0o660, ge=0, le=0o777, description="Mode of the socket file.")
    socket_group: Optional[str] = Field(
        None, description="Group that owns the socket; unset keeps the daemon's group."
    )
    state_dir: str = Field(
        "/var/lib/wattgate", description="Where the event log and the sysfs journal live."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level that is logged."
    )
    max_clients: int = Field(64, ge=1, le=4096, description="Connections beyond this get busy.")
    client_queue: int = Field(
        256, ge=1, le=65536, description="Messages a slow subscriber may lag before overflow."
    )
    admin_group: Optional[str] = Field(
        "wattgate",
        description="Members (and root) may pin profiles and reload; others only read.",
    )
    max_image_bytes: int = Field(
        48 * 1024,
        ge=1024,
        le=48 * 1024,
        description="Largest decoded size of an image sent with `infer` (base64 fits a line).",
    )
    events_max: int = Field(
        100_000, ge=100, description="Events kept in the event log before the oldest go."
    )
    events_max_age_days: float = Field(
        30.0, gt=0, description="Events older than this are pruned from the event log."
    )


class CameraConfig(Section):
    source: str = Field(
        "synthetic:office",
        description=(
            "/dev/videoN, a camera index, a video file, a URL or GStreamer pipeline, "
            "or synthetic:NAME for a generated scene."
        ),
    )
    width: int = Field(640, ge=16, le=8192, description="Requested frame width in pixels.")
    height: int = Field(480, ge=16, le=8192, description="Requested frame height in pixels.")
    fps: float = Field(15.0, gt=0, le=240, description="Requested capture rate.")
    realtime: bool = Field(
        True, description="Play files at their own frame rate; false reads as fast as possible."
    )
    loop: bool = Field(False, description="Start a file again at its end.")
    format: Literal["auto", "mjpeg", "yuyv"] = Field(
        "auto",
        description=(
            "Pixel format asked of a V4L2 camera. mjpeg and yuyv let the gate work on "
            "luma without decoding colour; auto takes what OpenCV negotiates."
        ),
    )
    stall_s: float = Field(
        5.0, gt=0, description="A camera that gives no frame this long is reopened."
    )


class GateConfig(Section):
    """Frame-difference gate; defaults follow Frigate's improved motion detector (REFERENCE.md)."""

    enabled: bool = Field(True, description="False sends every frame to the model.")
    frame_height: int = Field(
        100, ge=16, le=1080, description="Rows of the low-resolution luma the gate works on."
    )
    threshold: int = Field(
        30, ge=1, le=255, description="Luma difference (0-255) that counts a pixel as changed."
    )
    min_area: int = Field(
        10, ge=1, description="Smallest changed region, in pixels of the low-resolution image."
    )
    blur_sigma: float = Field(1.0, ge=0, le=10, description="Gaussian blur before differencing.")
    alpha: float = Field(
        0.01, gt=0, le=1, description="Background learning rate once calibrated."
    )
    lighting_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Changed fraction of the frame above which a change is lighting, not motion.",
    )
    cooldown_s: float = Field(
        2.0, ge=0, description="Seconds of no motion before the gate goes idle again."
    )
    heartbeat_s: float = Field(
        10.0, gt=0, description="Infer at least this often even when nothing moves."
    )


ModelKind = Literal["auto", "blazeface", "ssd", "yolov8", "classifier"]


class ModelConfig(Section):
    path: Optional[str] = Field(
        None, description="A .tflite file; unset uses the bundled BlazeFace short-range model."
    )
    kind: ModelKind = Field("auto", description="Output decoder; auto picks by output shapes.")
    labels: Optional[str] = Field(None, description="Labels file, one label a line.")
    threads: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Interpreter CPU threads. More help a large model only on cores nothing else "
            "uses: XNNPACK's workers spin-wait for each other, so sharing a core with the "
            "capture thread or another process can make each invoke many times slower."
        ),
    )
    delegate: Optional[str] = Field(
        None, description="External delegate library (e.g. libedgetpu.so.1); CPU if it fails."
    )
    delegate_options: dict[str, Union[str, int, float, bool]] = Field(
        default_factory=dict, description="Options passed to the delegate."
    )
    score_threshold: float = Field(
        0.5, ge=0, le=1, description="Detections below this score are dropped."
    )


class PowerConfig(Section):
    sysfs_root: str = Field("/sys", description="Root of sysfs; tests point it at a fake tree.")


class Config(Section):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    power: PowerConfig = Field(default_factory=PowerConfig)

    @model_validator(mode="after")
    def _check_paths(self) -> Config:
        if not self.daemon.socket:
            raise ValueError("daemon.socket must not be empty")
        return self


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return base with override laid over it; tables merge key by key, other values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except PermissionError:
        raise ConfigError(str(path), ["permission denied"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None


def describe_errors(exc: ValidationError) -> list[str]:
    """One line per error: key path, the bad value and what is allowed."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
            continue
        if err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
            continue
        lines.append(f"{key}: got {err.get('input')!r}; {err['msg']}")
    return lines


def dropin_files(path: Path) -> list[Path]:
    """The drop-ins that apply to the main file at path, in the order they are merged."""
    return sorted((path.parent / "config.d").glob("*.toml"))


def load_raw(path: Path) -> dict[str, Any]:
    """The main file with its drop-ins merged, before validation."""
    raw = _read_toml(path)
    for dropin in dropin_files(path):
        raw = deep_merge(raw, _read_toml(dropin))
    return raw


def parse_config(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, describe_errors(exc)) from None


def load_config(path: Optional[Path]) -> Config:
    """Load and validate path (and its drop-ins); None gives the built-in defaults."""
    if path is None:
        return Config()
    return parse_config(load_raw(path), str(path))


def json_schema() -> dict[str, Any]:
    return Config.model_json_schema()

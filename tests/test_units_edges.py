"""What the installed units and packages must give the daemon at run time, checked against
what the daemon really does: the files it reads as user wattgate, the programs the unit
runs, and what each package installs."""

from __future__ import annotations

import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_as
from tests.test_udev_rule import _TOKEN, Event, _glob, _user
from wattgate.boards import materialize
from wattgate.drivers.meters import discover_energy
from wattgate.drivers.sysfs import Sysfs

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "systemd"


def rule_files() -> list[Path]:
    """Every udev rule file the project ships."""
    return sorted(UNITS.glob("*.rules"))


def replay_all(root: Path, events: list[Event]) -> None:
    """Run every shipped rule file's matching RUN+= for `events` against the fake tree at
    `root`, as tests/test_udev_rule.py does for 60-wattgate.rules (no udevd can replay
    events against a fake tree); chown gets a user other than root instead of wattgate."""
    user = _user().pw_name
    for path in rule_files():
        text = path.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            tokens = _TOKEN.findall(line)
            for ev in events:
                values = {"ACTION": ev.action, "SUBSYSTEM": ev.subsystem,
                          "KERNEL": ev.kernel, "DRIVER": ev.driver}
                ok = True
                for key, op, value in tokens:
                    if key == "RUN":
                        continue
                    if key == "TEST":
                        hit = (root / ev.devpath.lstrip("/") / value).exists()
                    else:
                        assert key in values, f"unknown match key {key} in {path.name}"
                        hit = _glob(values[key], value)
                    ok = ok and (hit if op == "==" else not hit)
                if not ok:
                    continue
                for key, _op, run in tokens:
                    if key != "RUN":
                        continue
                    cmd = run.replace("%p", ev.devpath).replace("$$", "$")
                    cmd = cmd.replace("/sys/", f"{root}/")
                    cmd = cmd.replace("chown wattgate", f"chown {user}")
                    subprocess.run(shlex.split(cmd), check=True, timeout=30)


# -- RAPL energy counters -----------------------------------------------------------------
#
# Since Linux 5.10 (CVE-2020-8694, PLATYPUS) powercap makes energy_uj readable by root
# only: mode 0400, or 0600 where the zone can be reset (drivers/powercap/powercap_sys.c).
# The daemon runs as user wattgate and reads energy_uj for the watts it reports on Intel
# and AMD machines (drivers/meters.py); without a grant every read is EACCES and the
# status has no measured power.

RAPL_ZONES = {
    "intel-rapl:0": "devices/virtual/powercap/intel-rapl/intel-rapl:0",
    "intel-rapl:0:0": "devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0",
    "intel-rapl:0:1": "devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:1",
    "intel-rapl:1": "devices/virtual/powercap/intel-rapl/intel-rapl:1",
}


def rapl_tree(base: Path) -> Path:
    root = materialize("intel-mtl", base / "sys")
    for path in root.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
        elif path.is_file():
            path.chmod(0o444)  # readable by all, as most attributes are
    for device in RAPL_ZONES.values():
        (root / device / "energy_uj").chmod(0o400)  # as the kernel makes it
    (root / RAPL_ZONES["intel-rapl:1"] / "energy_uj").chmod(0o600)  # a resettable zone
    return root


def energy_as_daemon_user(root: Path) -> str:
    user = _user()

    def read() -> str:
        zones = discover_energy(Sysfs(str(root)))
        return " ".join(f"{z.zone}={z.energy_uj}" for z in sorted(zones, key=lambda z: z.zone))

    return run_as(user.pw_uid, user.pw_gid, read)


def test_rapl_energy_is_readable_by_the_daemon_user_once_the_zones_are_added(
    reachable_tmp: Path,
) -> None:
    root = rapl_tree(reachable_tmp)
    assert "=None" in energy_as_daemon_user(root)  # the kernel's modes: root only
    replay_all(root, [Event("add", "powercap", f"/{dev}") for dev in RAPL_ZONES.values()]
               + [Event("add", "powercap", "/devices/virtual/powercap/intel-rapl")])
    report = energy_as_daemon_user(root)
    assert "=None" not in report and report.count("=") == len(RAPL_ZONES), report
    uid = _user().pw_uid
    for device in RAPL_ZONES.values():
        st = (root / device / "energy_uj").stat()
        assert st.st_uid == uid, device
        # read, and no more: a reset of the counter would break every other reader of it
        assert stat.S_IMODE(st.st_mode) == 0o400, (device, oct(st.st_mode))


# -- every recipe installs every shipped rule file ------------------------------------------

RECIPES = {
    "yocto": ROOT / "packaging/yocto/wattgate_0.1.0.bb",
    "buildroot": ROOT / "packaging/buildroot/wattgate/wattgate.mk",
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_yocto_and_buildroot_install_every_rule_file(recipe: str) -> None:
    """No bitbake or Buildroot here: the recipes' install lines are read instead."""
    text = RECIPES[recipe].read_text().replace("\\\n", " ")
    for rule in rule_files():
        assert f"systemd/{rule.name} " in text, (recipe, rule.name)
        assert f"/udev/rules.d/{rule.name}" in text, (recipe, rule.name)


def test_buildroot_builds_opencv_with_the_codecs_the_daemon_reads() -> None:
    """Buildroot's opencv4 is built with no JPEG and no PNG unless asked: the start's first
    inference reads a PNG (cv2.imread), so the service exited 69 at every boot, and MJPEG
    cameras and client images did not decode."""
    text = (ROOT / "packaging/buildroot/wattgate/Config.in").read_text()
    for option in ("OPENCV4_LIB_IMGCODECS", "OPENCV4_WITH_JPEG", "OPENCV4_WITH_PNG"):
        assert f"select BR2_PACKAGE_{option}" in text, option


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb from scripts/build-deb.sh (a few seconds: pybuild builds one wheel)."""
    if any(shutil.which(t) is None for t in ("dpkg-buildpackage", "dh", "dpkg-deb")):
        pytest.skip("Debian build tools not installed")
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run(["bash", str(ROOT / "scripts/build-deb.sh"), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    [built] = out.glob("wattgate_*_all.deb")
    return built


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=120)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(root / "DEBIAN")], check=True, timeout=60)
    return root


def test_the_deb_installs_every_rule_file_and_replays_it(unpacked: Path) -> None:
    postinst = (unpacked / "DEBIAN/postinst").read_text()
    for rule in rule_files():
        found = [unpacked / d / rule.name for d in ("lib/udev/rules.d", "usr/lib/udev/rules.d")
                 if (unpacked / d / rule.name).is_file()]
        assert len(found) == 1, rule.name
        assert found[0].read_bytes() == rule.read_bytes(), rule.name
        # The subsystems the rule acts on are replayed at install, before the start.
        for subsystem in set(_TOKEN.findall(rule.read_text().replace("\\\n", " "))):
            if subsystem[0] == "SUBSYSTEM":
                for name in subsystem[2].split("|"):
                    if name not in ("module", "scmi_protocol"):  # module loads, not replayed
                        assert f"--subsystem-match={name}" in postinst, (rule.name, name)


# -- the programs the unit runs are there wherever the package is --------------------------


def exec_programs() -> set[str]:
    """The absolute programs of the service's Exec*= lines, the package's own excepted."""
    out = set()
    for raw in (UNITS / "wattgate.service").read_text().splitlines():
        key, sep, value = raw.strip().partition("=")
        if sep and key.startswith("Exec") and value:
            program = value.lstrip("@-:+!").split()[0]
            if program != "/usr/bin/wattgate":
                out.add(program)
    return out


def essential(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Essential}", package],
                         capture_output=True, text=True, timeout=60)
    return out.stdout.strip() == "yes"


def test_the_deb_depends_on_every_program_the_unit_runs(deb: Path) -> None:
    """ExecReload=/bin/kill: on Debian 12 that is procps, which is not Essential; an image
    built without it (debootstrap --variant=minbase) cannot `systemctl reload wattgate`.
    The owners are looked up in this machine's dpkg database."""
    depends = subprocess.run(["dpkg-deb", "--field", str(deb), "Depends"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    names = {d.split()[0] for alt in depends.split(",") for d in alt.split("|") if d.strip()}
    checked = 0
    for program in sorted(exec_programs()):
        owner = subprocess.run(["dpkg", "-S", program, f"/usr{program}"],
                               capture_output=True, text=True, timeout=60).stdout
        packages = {line.split(":", 1)[0] for line in owner.splitlines() if ":" in line}
        if not packages:
            continue  # no owner known on this machine
        checked += 1
        assert any(essential(p) or p in names for p in packages), (program, packages, names)
    if not checked:
        pytest.skip("no owner of the unit's programs in this machine's dpkg database")

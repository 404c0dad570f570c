"""The .deb: built by scripts/build-deb.sh, unpacked into a throwaway root, file list checked.

Building takes a few seconds (pybuild builds one wheel); it happens once per test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "scripts" / "build-deb.sh"
APT = "debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools dpkg-dev"


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tools = [t for t in ("dpkg-buildpackage", "dh", "dpkg-deb") if shutil.which(t) is None]
    assert not tools, f"{', '.join(tools)} missing: apt-get install {APT}"
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run(
        ["bash", str(BUILD), str(out)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    debs = sorted(out.glob("wattgate_*_all.deb"))
    assert len(debs) == 1, proc.stdout
    assert proc.stdout.strip() == str(debs[0])
    return debs[0]


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=120)
    return root


def one_of(root: Path, *candidates: str) -> Path:
    """Debian 12's debhelper installs units and udev rules under /lib, Debian 13's under
    /usr/lib (merged /usr); either is right for the release it was built on."""
    found = [root / c for c in candidates if (root / c).is_file()]
    assert len(found) == 1, f"expected one of {candidates}, found {found}"
    return found[0]


def field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


def test_version_matches_pyproject(deb: Path) -> None:
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert field(deb, "Version").split("-")[0] == version
    assert field(deb, "Architecture") == "all"


def test_entry_point_and_python_package(unpacked: Path) -> None:
    script = unpacked / "usr/bin/wattgate"
    assert script.is_file() and os.access(script, os.X_OK)
    assert script.read_text().splitlines()[0] == "#!/usr/bin/python3"
    pkg = unpacked / "usr/lib/python3/dist-packages/wattgate"
    for rel in ("__init__.py", "config.py", "cli.py", "daemon/notify.py", "daemon/logs.py"):
        assert (pkg / rel).is_file(), rel
    assert list((unpacked / "usr/lib/python3/dist-packages").glob("wattgate-*.dist-info"))


def test_installed_script_runs_from_the_unpacked_tree(unpacked: Path) -> None:
    # The system Python lacks pydantic 2, OpenCV & co. on a build host; the checkout's
    # interpreter has them, and PYTHONPATH puts the unpacked package in front of the
    # checkout's own (editable) copy.
    site = unpacked / "usr/lib/python3/dist-packages"
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import wattgate; print(wattgate.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert where.stdout.strip() == str(site / "wattgate/__init__.py"), where.stderr
    run = subprocess.run(
        [sys.executable, str(unpacked / "usr/bin/wattgate"), "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert run.returncode == 0, run.stderr
    assert "run" in run.stdout


def test_systemd_udev_sysusers_tmpfiles(unpacked: Path) -> None:
    for name in ("wattgate.service", "wattgate.socket"):
        unit = one_of(unpacked, f"lib/systemd/system/{name}", f"usr/lib/systemd/system/{name}")
        assert unit.read_bytes() == (ROOT / "systemd" / name).read_bytes(), name
    rule = one_of(
        unpacked, "lib/udev/rules.d/60-wattgate.rules", "usr/lib/udev/rules.d/60-wattgate.rules"
    )
    assert rule.read_bytes() == (ROOT / "systemd/60-wattgate.rules").read_bytes()
    sysusers = unpacked / "usr/lib/sysusers.d/wattgate.conf"
    assert sysusers.read_bytes() == (ROOT / "systemd/wattgate.sysusers").read_bytes()
    tmpfiles = unpacked / "usr/lib/tmpfiles.d/wattgate.conf"
    assert tmpfiles.read_bytes() == (ROOT / "systemd/wattgate.tmpfiles").read_bytes()


def test_the_protocol_and_power_docs_and_the_c_example_are_shipped(unpacked: Path) -> None:
    """The installed config sends the admin to docs/protocol.md, and a C, Go or shell
    client is written from it alone: the package shipped neither it nor docs/power.md."""
    docs = unpacked / "usr/share/doc/wattgate"
    shipped = {p.relative_to(docs).as_posix().removesuffix(".gz") for p in docs.rglob("*")}
    assert {"README.md", "protocol.md", "power.md",
            "examples/wattgate-watch.c"} <= shipped, sorted(shipped)


def test_config_is_a_conffile(deb: Path, unpacked: Path, tmp_path: Path) -> None:
    conf = unpacked / "etc/wattgate/config.toml"
    assert conf.read_bytes() == (ROOT / "config.toml").read_bytes()
    assert (unpacked / "etc/wattgate/config.d").is_dir()
    control = tmp_path / "DEBIAN"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True, timeout=60)
    assert (control / "conffiles").read_text().split() == ["/etc/wattgate/config.toml"]


def test_maintainer_scripts(deb: Path, tmp_path: Path) -> None:
    control = tmp_path / "DEBIAN"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True, timeout=60)
    for name in ("postinst", "prerm", "postrm"):
        script = control / name
        assert script.is_file(), name
        subprocess.run(["sh", "-n", str(script)], check=True, timeout=60)
    postinst = (control / "postinst").read_text()
    # Users first (the udev rule and tmpfiles chown to wattgate), then tmpfiles, then units.
    order = [
        postinst.index("systemd-sysusers"),
        postinst.index("udevadm trigger"),
        postinst.index("systemd-tmpfiles"),
        postinst.index("deb-systemd-helper enable 'wattgate.service'"),
        postinst.index("deb-systemd-helper enable 'wattgate.socket'"),
    ]
    assert order == sorted(order)
    # ...and postrm has udevd drop the rules dpkg removed (tests/test_debian_postrm.py).
    assert "udevadm control --reload" in (control / "postrm").read_text()


def test_depends(deb: Path) -> None:
    depends = {d.strip() for d in field(deb, "Depends").split(",")}
    for needed in (
        "python3-numpy",
        "python3-opencv",
        "python3-pydantic (>= 2.5)",
        "python3-psutil",
        "python3-pyudev",
        "python3-systemd",
    ):
        assert needed in depends, depends
    # sysusers.d needs an implementation of systemd-sysusers.
    assert any("systemd-sysusers" in d for d in depends), depends

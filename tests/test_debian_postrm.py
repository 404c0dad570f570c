"""packaging/debian/postrm: once dpkg has removed the package's udev rules, udevd is told to
reload, and a system without udevd (chroot, container, image build) still removes cleanly.

The real systemd-udevd cannot run here, so a stand-in `udevadm` early in PATH records its
arguments. Whether udevd runs is what the script asks of /run/udev; each run gets a private
mount namespace with an empty tmpfs on /run (with or without /run/udev), so the host's /run
is neither read nor changed. That needs root and unshare(1); elsewhere the tests skip.

"purge" is not run: it deletes /var/lib/wattgate, which a mount namespace does not protect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSTRM = ROOT / "packaging" / "debian" / "postrm"

# The wrapper runs with the caller's PATH; the script under test with only the stand-ins.
WRAPPER = """
mount -t tmpfs tmpfs /run || exit 97
if [ "$UDEVD" = running ]; then mkdir /run/udev || exit 97; fi
PATH="$STUB_PATH" exec /bin/sh "$0" "$@"
"""


@pytest.fixture(scope="module")
def namespaces() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a private /run")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"unshare --mount: {probe.stderr.decode().strip()}")


def stub_dir(tmp_path: Path, *, udevadm_status: int | None) -> Path:
    """A PATH directory with a stand-in udevadm that logs its arguments and exits with
    ``udevadm_status`` (None: no udevadm at all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if udevadm_status is not None:
        stub = bin_dir / "udevadm"
        log = tmp_path / "udevadm.log"
        stub.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexit {udevadm_status}\n')
        stub.chmod(0o755)
    return bin_dir


def postrm(
    tmp_path: Path,
    action: str,
    *,
    udevd: bool = True,
    udevadm_status: int | None = 0,
    dpkg_root: str = "",
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = {
        "PATH": os.environ["PATH"],
        "STUB_PATH": str(stub_dir(tmp_path, udevadm_status=udevadm_status)),
        "UDEVD": "running" if udevd else "absent",
    }
    if dpkg_root:
        env["DPKG_ROOT"] = dpkg_root
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", WRAPPER,
         str(POSTRM), action],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 97, proc.stderr  # the namespace setup, not the script
    log = tmp_path / "udevadm.log"
    return proc, log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("action", ["remove", "abort-install"])
def test_udevd_reloads_once_the_rules_are_gone(
    namespaces: None, tmp_path: Path, action: str
) -> None:
    # abort-install: dpkg has unpacked the rules and removed them again (Debian Policy 6.6).
    proc, calls = postrm(tmp_path, action)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["control --reload"]


def test_no_reload_on_upgrade(namespaces: None, tmp_path: Path) -> None:
    # The new version's rules are in place: nothing was removed.
    proc, calls = postrm(tmp_path, "upgrade")
    assert proc.returncode == 0, proc.stderr
    assert calls == []


def test_removal_succeeds_without_udevadm(namespaces: None, tmp_path: Path) -> None:
    proc, calls = postrm(tmp_path, "remove", udevadm_status=None)
    assert proc.returncode == 0, proc.stderr
    assert calls == []


def test_removal_succeeds_without_a_running_udevd(namespaces: None, tmp_path: Path) -> None:
    # A chroot or a container: udevadm installed, no /run/udev.
    proc, calls = postrm(tmp_path, "remove", udevd=False)
    assert proc.returncode == 0, proc.stderr
    assert calls == []


def test_removal_succeeds_when_the_reload_fails(namespaces: None, tmp_path: Path) -> None:
    # /run/udev left behind by a udevd that is gone: udevadm cannot reach it and fails.
    proc, calls = postrm(tmp_path, "remove", udevadm_status=1)
    assert proc.returncode == 0, proc.stderr
    assert calls == ["control --reload"]


def test_no_reload_into_another_root(namespaces: None, tmp_path: Path) -> None:
    # dpkg --root / DPKG_ROOT: the host's udevd does not serve that tree.
    proc, calls = postrm(tmp_path, "remove", dpkg_root=str(tmp_path / "target"))
    assert proc.returncode == 0, proc.stderr
    assert calls == []

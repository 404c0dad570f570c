"""The Yocto recipe and the Buildroot package name the project's own LICENSE file, with
checksums of the file as it is, so an image's licence manifest (Yocto) and
`make legal-info` (Buildroot) carry it; a changed LICENSE fails here before it fails an
image build."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LICENSE = ROOT / "LICENSE"
RECIPE = ROOT / "packaging/yocto/wattgate_0.1.0.bb"
BUILDROOT = ROOT / "packaging/buildroot/wattgate"


def test_the_yocto_recipe_checksums_the_projects_license() -> None:
    match = re.search(r'^LIC_FILES_CHKSUM = "([^"]*)"', RECIPE.read_text(), re.MULTILINE)
    assert match is not None
    entries = match.group(1).split()
    assert entries == [f"file://LICENSE;md5={hashlib.md5(LICENSE.read_bytes()).hexdigest()}"]


def test_the_buildroot_package_lists_and_hashes_the_license() -> None:
    mk = (BUILDROOT / "wattgate.mk").read_text()
    assert re.search(r"^WATTGATE_LICENSE_FILES = LICENSE$", mk, re.MULTILINE)
    sha256 = hashlib.sha256(LICENSE.read_bytes()).hexdigest()
    hashes = [line.split() for line in (BUILDROOT / "wattgate.hash").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ["sha256", sha256, "LICENSE"] in hashes


def test_the_packaging_notes_do_not_say_there_is_no_license() -> None:
    for path in (ROOT / "packaging/README.md", RECIPE, BUILDROOT / "wattgate.hash"):
        text = path.read_text()
        assert "until the project ships" not in text, path
        assert "no LICENSE file" not in text, path
        assert "once the project ships" not in text, path

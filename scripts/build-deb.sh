#!/usr/bin/env bash
# Build the wattgate .deb from this checkout: scripts/build-deb.sh [OUTDIR]   (default: dist)
#
# A Debian source tree is the upstream tree with debian/ at its top. The packaging lives in
# packaging/debian so that the repository root stays the Python project; this script puts
# the two together in a temporary directory and runs dpkg-buildpackage there, so the
# checkout is never written to except for OUTDIR.
#
# Needs (Debian/Ubuntu): debhelper dh-python pybuild-plugin-pyproject python3-all
# python3-setuptools dpkg-dev. -d skips the Build-Depends check: debian/control targets
# Debian 13, and this also builds on Debian 12 with its older debhelper.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-dist}
case $out in /*) ;; *) out=$here/$out ;; esac

cd "$here"
for tool in dpkg-buildpackage dh; do
    command -v "$tool" >/dev/null || {
        echo "build-deb: $tool not found; install: debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools dpkg-dev" >&2
        exit 2
    }
done
# Files the package installs that other parts of the tree provide.
for f in config.toml systemd/60-wattgate.rules systemd/60-wattgate-meters.rules \
    systemd/wattgate.service systemd/wattgate.socket systemd/wattgate.sysusers \
    systemd/wattgate.tmpfiles pyproject.toml; do
    [ -f "$f" ] || { echo "build-deb: missing $f" >&2; exit 3; }
done

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n1)
debversion=$(sed -n '1s/^wattgate (\([^)]*\)).*/\1/p' packaging/debian/changelog)
if [ "${debversion%-*}" != "$version" ]; then
    echo "build-deb: packaging/debian/changelog has $debversion but pyproject.toml has $version;" \
        "add a changelog entry (dch -v $version-1)" >&2
    exit 4
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/wattgate-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/wattgate-$version
mkdir -p "$src"

# The working tree as git sees it (tracked and new files, minus ignored ones such as .venv
# and build output); outside a git checkout, everything but the usual build litter.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -xf - -C "$src"
else
    tar --exclude=./.venv --exclude=./.git --exclude=./dist --exclude=./build \
        --exclude='*.egg-info' --exclude=__pycache__ -cf - . | tar -xf - -C "$src"
fi
rm -rf "$src/debian"
cp -r packaging/debian "$src/debian"

# The system Python and tools, never a virtualenv that happens to be active.
(
    cd "$src"
    env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        dpkg-buildpackage -us -uc -b -d
) >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    echo "build-deb: dpkg-buildpackage failed (last 60 lines above)" >&2
    exit 1
}

mkdir -p "$out"
for deb in "$work"/*.deb; do
    cp "$deb" "$out/"
    echo "$out/$(basename "$deb")"
done

SUMMARY = "Power-aware TFLite inference daemon for embedded Linux cameras"
DESCRIPTION = "Reads a camera, skips idle frames with frame-difference gating, runs a \
TensorFlow Lite model on the frames that matter, steers CPU DVFS and NPU power states \
through sysfs, and serves results over a Unix socket. Ships a hardened systemd service."
SECTION = "console/utils"
LICENSE = "Apache-2.0"
# The project's own licence text, at the top of the source tree: a change to it fails the
# build until the checksum is updated.
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

# Point this at the project's git server in a bbappend (no public URL is fixed yet), or
# build a local checkout with externalsrc:
#   INHERIT += "externalsrc"
#   EXTERNALSRC:pn-wattgate = "/path/to/wattgate"
SRC_URI = "git://git.example.com/wattgate.git;protocol=https;branch=main"
# Pin the release commit; AUTOREV follows the branch and needs the network at parse time.
SRCREV = "${AUTOREV}"
S = "${WORKDIR}/git"

# pyproject.toml builds with setuptools' PEP 517 backend; the wheel carries the `wattgate`
# entry point (${bindir}/wattgate, the unit's ExecStart).
inherit python_setuptools_build_meta systemd useradd

# The socket unit is enabled with the service: clients can connect from early boot.
SYSTEMD_SERVICE:${PN} = "wattgate.socket wattgate.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# The user is created at image build time (works with read-only rootfs); this does what
# systemd/wattgate.sysusers does on distributions that run systemd-sysusers. User
# "wattgate" is the one 60-wattgate.rules grants sysfs write access to, its group owns the
# client socket; "video" owns the cameras (base-passwd provides it). Group "wattgate-admin"
# (daemon.admin_group) may pin profiles and reload.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system wattgate-admin"
USERADD_PARAM:${PN} = "--system --user-group --groups video \
    --home-dir ${localstatedir}/lib/wattgate --no-create-home \
    --shell ${base_sbindir}/nologin --comment 'wattgate inference daemon' wattgate"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/wattgate.service ${S}/systemd/wattgate.socket \
        ${D}${systemd_system_unitdir}/
    install -D -m 0644 ${S}/systemd/60-wattgate.rules \
        ${D}${nonarch_base_libdir}/udev/rules.d/60-wattgate.rules
    install -m 0644 ${S}/systemd/60-wattgate-meters.rules \
        ${D}${nonarch_base_libdir}/udev/rules.d/60-wattgate-meters.rules
    install -D -m 0644 ${S}/systemd/wattgate.tmpfiles \
        ${D}${nonarch_libdir}/tmpfiles.d/wattgate.conf
    install -D -m 0644 ${S}/config.toml ${D}${sysconfdir}/wattgate/config.toml
    install -d ${D}${sysconfdir}/wattgate/config.d
}

FILES:${PN} += " \
    ${systemd_system_unitdir} \
    ${nonarch_base_libdir}/udev/rules.d \
    ${nonarch_libdir}/tmpfiles.d \
    ${sysconfdir}/wattgate \
"
CONFFILES:${PN} = "${sysconfdir}/wattgate/config.toml"

# meta-python: python3-pydantic (v2 as of scarthgap), python3-psutil,
# python3-pyudev, python3-systemd. meta-oe: python3-opencv (opencv with PACKAGECONFIG
# "python3"). meta-tensorflow-lite: python3-tensorflow-lite provides the tflite_runtime
# module the daemon imports; that layer's litert recipe is the C++ library only.
# python3-modules: the daemon uses asyncio, sqlite3, json, mmap, tomllib and more of the
# standard library; narrow this to the split packages once the import set settles.
RDEPENDS:${PN} = " \
    python3-core \
    python3-modules \
    python3-numpy \
    python3-opencv \
    python3-pydantic \
    python3-psutil \
    python3-pyudev \
    python3-systemd \
    python3-tensorflow-lite \
"

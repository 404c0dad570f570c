################################################################################
#
# wattgate
#
################################################################################

WATTGATE_VERSION = 0.1.0
# Built from the checkout this br2-external tree lives in (packaging/buildroot). For a
# release build, replace these two lines with the sdist's location:
#   WATTGATE_SITE = <release download URL>
#   WATTGATE_SOURCE = wattgate-$(WATTGATE_VERSION).tar.gz
# and put its sha256 in wattgate.hash.
WATTGATE_SITE = $(BR2_EXTERNAL_WATTGATE_PATH)/../..
WATTGATE_SITE_METHOD = local
WATTGATE_LICENSE = Apache-2.0
WATTGATE_LICENSE_FILES = LICENSE
# pyproject.toml uses setuptools' PEP 517 backend; the pep517 infrastructure brings
# python-pypa-build and python-installer but not the backend.
WATTGATE_SETUP_TYPE = pep517
WATTGATE_DEPENDENCIES = host-python-setuptools

# The system user (what systemd/wattgate.sysusers does elsewhere): it gets write access
# to the sysfs power attributes from 60-wattgate.rules; its group owns the client socket;
# "video" owns the cameras. Group wattgate-admin (daemon.admin_group) may pin profiles.
define WATTGATE_USERS
	wattgate -1 wattgate -1 * /var/lib/wattgate - video wattgate inference daemon
	- - wattgate-admin -1 - - - - -
endef

# Units are enabled by the preset run at the end of the build ([Install] sections).
define WATTGATE_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/systemd/wattgate.service \
		$(TARGET_DIR)/usr/lib/systemd/system/wattgate.service
	$(INSTALL) -D -m 0644 $(@D)/systemd/wattgate.socket \
		$(TARGET_DIR)/usr/lib/systemd/system/wattgate.socket
	$(INSTALL) -D -m 0644 $(@D)/systemd/wattgate.tmpfiles \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/wattgate.conf
endef

define WATTGATE_INSTALL_UDEV_AND_CONFIG
	$(INSTALL) -D -m 0644 $(@D)/systemd/60-wattgate.rules \
		$(TARGET_DIR)/usr/lib/udev/rules.d/60-wattgate.rules
	$(INSTALL) -D -m 0644 $(@D)/systemd/60-wattgate-meters.rules \
		$(TARGET_DIR)/usr/lib/udev/rules.d/60-wattgate-meters.rules
	$(INSTALL) -D -m 0644 $(@D)/config.toml $(TARGET_DIR)/etc/wattgate/config.toml
	$(INSTALL) -d -m 0755 $(TARGET_DIR)/etc/wattgate/config.d
endef
WATTGATE_POST_INSTALL_TARGET_HOOKS += WATTGATE_INSTALL_UDEV_AND_CONFIG

$(eval $(python-package))

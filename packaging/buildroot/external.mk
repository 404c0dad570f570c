include $(sort $(wildcard $(BR2_EXTERNAL_WATTGATE_PATH)/wattgate/*.mk))

"""Mechanism: thin I/O with hardware (sysfs, cameras, the TFLite interpreter). No decisions."""

"""wattgate: a power-aware inference daemon for embedded Linux cameras."""

__version__ = "0.1.0"

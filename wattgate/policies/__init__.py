"""Decisions as pure functions of observations: no I/O, no clock reads, no threads."""

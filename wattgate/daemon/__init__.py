"""Orchestration: threads, the event loop, signals, the socket server, persistence."""

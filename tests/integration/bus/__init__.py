"""Integration tests of the queues (shared/bus)."""

"""Unit tests of the queues (shared/bus)."""

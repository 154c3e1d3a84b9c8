"""Integration tests of the engines (shared/engines)."""

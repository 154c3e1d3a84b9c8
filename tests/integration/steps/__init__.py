"""Integration tests of the steps (shared/steps)."""

"""Integration tests of the foundation (shared/core)."""

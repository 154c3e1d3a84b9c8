"""Unit tests of the foundation (shared/core)."""

"""Unit tests of the steps (shared/steps)."""

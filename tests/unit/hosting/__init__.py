"""Unit tests of the local host (shared/hosting)."""

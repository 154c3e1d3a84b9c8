"""Unit tests of the domain (shared/domain)."""

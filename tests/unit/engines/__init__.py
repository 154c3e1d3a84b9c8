"""Unit tests of the engines (shared/engines)."""

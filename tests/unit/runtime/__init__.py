"""Unit tests of the runtime: the consume loop, metrics (shared/runtime)."""

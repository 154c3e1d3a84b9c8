"""Integration tests of the consumers' handlers (shared/worker)."""

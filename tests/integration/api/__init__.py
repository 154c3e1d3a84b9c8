"""Integration tests of the HTTP fronts (functions/api)."""

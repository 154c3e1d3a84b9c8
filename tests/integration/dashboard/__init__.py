"""Integration tests of the ops dashboard (dashboard/)."""

"""Unit tests of the command line (shared/cli)."""

"""Unit tests of blob storage (shared/storage)."""

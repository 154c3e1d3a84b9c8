"""Integration tests of blob storage (shared/storage)."""

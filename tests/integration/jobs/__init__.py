"""Integration tests of jobs: lifecycle, webhooks, retention (shared/jobs)."""

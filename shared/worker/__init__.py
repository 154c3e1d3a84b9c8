"""Consumers: the handlers the one consume loop feeds — the step handler for every step queue, the
router on job-events, the dead-letter accounting — the runner of a registered component, and the
health and readiness endpoints of a long-lived worker. The same handlers run under the Functions host's
triggers (functions/) and under the local host."""

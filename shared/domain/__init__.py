"""The domain: what a job is and how it moves, with no I/O. The database rows (models), the status
vocabulary, the workflows and `next_decision`, job options, the typed results and their subtitles, the
message envelopes, usage and cost, language codes, speaker attribution, and the step registry (each step
type declared once, its module found by name in shared/steps)."""

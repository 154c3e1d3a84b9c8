"""The `speechflow` command line: a client of the HTTP API (submit, follow, fetch results), plus key
administration on the database."""

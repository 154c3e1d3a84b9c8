"""Steps: the step runtime — claiming a step with its fencing token (claims), what a processor works
with (context), running it and recording the outcome (runner), reading inputs and storing outputs — and
one module per step type, each declaring its `SPEC` for the registry (shared/domain/registry.py)."""

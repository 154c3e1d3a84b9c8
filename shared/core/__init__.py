"""Foundation: the one Settings object, the exception hierarchy, structured logs, traces, the database
engine and migrations, and the network-safety rules for URLs we call. Nothing here knows a job, a step
or a queue; every other layer may import it."""

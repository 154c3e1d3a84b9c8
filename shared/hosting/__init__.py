"""Hosting on one machine: the local host (`python -m shared.hosting`, what `make up` runs) says what each
component runs, and the supervisor runs each in its own process, restarting any that dies. Components
above this layer (the API, the live server, the dashboard) are started by name or command line, never
imported."""

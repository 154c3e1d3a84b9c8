"""SpeechFlow's library: what the Functions app (functions/), the long-lived workers (gpu_worker/) and the
dashboard import. Its packages are layers, each importing only those below it (docs/ARCHITECTURE.md,
"Layers"; `lint-imports` checks it): core, domain, engines, storage and bus, runtime, jobs, steps,
worker, and on top hosting and cli."""

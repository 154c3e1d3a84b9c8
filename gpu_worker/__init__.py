"""The long-lived workers' entry: `python -m gpu_worker <component>` runs any registered component's
worker (shared/worker/component.py); the images in this folder carry it."""

"""Which of the Functions app's triggers each Functions deployment runs, and the
`AzureWebJobs.<function>.Disabled` settings that turn the others off in its k8s manifest (for the router
and the azure-ai steps, the patch of their kustomize overlay).

The flags are generated, never written by hand: `python -m functions.triggers` (make manifests) rewrites
the block of each manifest from the app's functions — the dead-letter triggers are one per queue of the
step registry (functions/deadletters.py) — so a new step's queue is disabled where it must be without
anyone listing it; tests/unit/deploy/test_k8s_manifests.py checks the manifests are current.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

K8S = Path(__file__).resolve().parents[1] / "k8s"

RUNS: dict[str, Callable[[Sequence[str]], set[str]]] = {
    "speechflow-api": lambda names: {"http_app_func"},
    # The router's deployment also delivers webhooks, applies retention and accounts for dead letters.
    "speechflow-router": lambda names: (
        {"router", "webhooks", "retention"} | {name for name in names if name.startswith("deadletters_")}
    ),
    "speechflow-worker-azure": lambda names: {"azure_ai"},
}
"""Deployment → the functions it runs, given every function the app declares."""

MANIFESTS = {
    "speechflow-api": "02-backend-api.yaml",
    "speechflow-router": "03-backend-router/kustomization.yaml",
    "speechflow-worker-azure": "07-worker-azure/kustomization.yaml",
}
"""Deployment → the file under k8s/ that holds its Disabled settings."""

_FLAG = re.compile(r'( *)- name: AzureWebJobs\.\w+\.Disabled\n +value: "true"\n')
_BLOCK = re.compile(r'(?:( *)- name: AzureWebJobs\.\w+\.Disabled\n +value: "true"\n)+')


def disabled(deployment: str, names: Sequence[str]) -> list[str]:
    """The functions this deployment turns off, in the app's order."""
    runs = RUNS[deployment](names)
    return [name for name in names if name not in runs]


def render(manifest: str, flags: Sequence[str]) -> str:
    """The manifest with its block of Disabled settings replaced by `flags`."""
    match = _BLOCK.search(manifest)
    if match is None:
        raise ValueError("the manifest has no AzureWebJobs.<function>.Disabled settings to replace")
    indent = match.group(1)
    block = "".join(f'{indent}- name: AzureWebJobs.{name}.Disabled\n{indent}  value: "true"\n' for name in flags)
    return manifest[: match.start()] + block + manifest[match.end() :]


def function_names() -> list[str]:
    """Every function of the app, as the Functions host indexes them (once per process)."""
    import function_app

    return [name for function in function_app.app.get_functions() if (name := function.get_function_name())]


def main(argv: list[str] | None = None) -> int:
    del argv
    names = function_names()
    for deployment, file in MANIFESTS.items():
        path = K8S / file
        path.write_text(render(path.read_text(), disabled(deployment, names)))
        print(f"{file}: {len(disabled(deployment, names))} triggers disabled")
    return 0


if __name__ == "__main__":
    sys.exit(main())

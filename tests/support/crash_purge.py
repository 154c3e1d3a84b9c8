"""A purger process for the fault suite: `python -m tests.support.crash_purge JOB_ID MARKER`, with the
stack's settings in the environment. It purges the job, but after its first blob delete it touches
MARKER and stalls, so that the test can SIGKILL it between two blob deletes."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

from shared.core.config import Settings
from shared.jobs.retention import purge_job
from shared.runtime import Runtime


def main(job_id: str, marker: str) -> int:
    runtime = Runtime(Settings())
    store = runtime.blobs
    real_delete = store.delete

    def delete_then_stall(container: str, blob: str) -> None:
        real_delete(container, blob)
        Path(marker).touch()
        time.sleep(120)  # killed here

    store.delete = delete_then_stall  # type: ignore[method-assign]
    print(purge_job(runtime, uuid.UUID(job_id)))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

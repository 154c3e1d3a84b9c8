"""Timer-triggered data retention in Azure: the retention pass of shared.jobs.retention (requested purges
finished, audio and results past their retention deleted)."""

from __future__ import annotations

import azure.functions as func

from shared.jobs.retention import apply_retention
from shared.runtime import process_runtime

bp = func.Blueprint()

SCHEDULE = "0 */5 * * * *"
"""Every 5 minutes, PURGE_INTERVAL_SECONDS' default; a timer's schedule is fixed when the app is built.
Blob Storage's lifecycle rule (infra/bicep/modules/storage.bicep) is the backstop should this stop."""


@bp.function_name("retention")
@bp.timer_trigger(arg_name="timer", schedule=SCHEDULE, run_on_startup=False, use_monitor=True)
def retention_timer(timer: func.TimerRequest) -> None:
    del timer
    apply_retention(process_runtime())

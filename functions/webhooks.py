"""Timer-triggered delivery of due webhooks (the dispatcher of shared.jobs.webhooks) in Azure."""

from __future__ import annotations

import azure.functions as func

from shared.jobs.webhooks import deliver_due
from shared.runtime import process_runtime

bp = func.Blueprint()


@bp.function_name("webhooks")
@bp.timer_trigger(arg_name="timer", schedule="*/10 * * * * *", run_on_startup=False, use_monitor=False)
def webhooks_timer(timer: func.TimerRequest) -> None:
    """Every 10 s: deliver what is due (new callbacks are tried at once by the router; this retries)."""
    del timer
    while deliver_due(process_runtime()) > 0:
        pass

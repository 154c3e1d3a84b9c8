"""GET /live: the live-captions page (functions/api/static/live.html), plain HTML and JavaScript served by
the API, so that it shares the API's origin: it gets a client secret from POST /v1/realtime/client_secrets
with the key a person types (or `?key=`), and opens /v1/realtime with it in the browsers' subprotocol.
Browsers give the microphone only to https pages or localhost."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).resolve().parent / "static" / "live.html"


def make_live_page_router() -> APIRouter:
    router = APIRouter()

    @router.get("/live", include_in_schema=False)
    def live_page() -> HTMLResponse:
        """The page: no key in it, nothing cached (a key may sit in the address as ?key=)."""
        return HTMLResponse(
            PAGE.read_text(encoding="utf-8"),
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )

    del live_page
    return router

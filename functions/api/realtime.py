"""Live transcription at the API's address: `POST /v1/realtime/client_secrets` (a short-lived credential
for a browser), and, under `make up`, `GET /v1/realtime` passed on to the live component
(gpu_worker/realtime) so that one base URL serves the OpenAI REST front and the Realtime one. The API
holds no model: every frame goes both ways untouched, the handshake's refusal comes back as the live
component gave it. On Azure the Ingress sends /v1/realtime to the live Deployment directly."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, Field
from starlette.responses import Response
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from functions.api.schemas import ErrorResponse
from functions.api.security import PrincipalDep
from shared.core.config import Settings
from shared.jobs.keys import issue_client_secret

PASSED_HEADERS = ("authorization", "x-api-key")
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not valid JSON"},
    401: {"model": ErrorResponse, "description": "No API key, or one that is not valid"},
    422: {"model": ErrorResponse},
    429: {"model": ErrorResponse, "description": "Too many requests for this key; see Retry-After"},
}


class ClientSecretRequest(BaseModel):
    expires_after_seconds: int | None = Field(default=None, ge=10, le=7200)
    """How long the secret is good for (default REALTIME_CLIENT_SECRET_SECONDS)."""


class ClientSecret(BaseModel):
    value: str
    """`ek_…`: use it as the bearer token, or in the `openai-insecure-api-key.` subprotocol."""
    expires_at: int
    """Unix seconds."""


def make_realtime_router(settings: Settings, signing_key: bytes) -> APIRouter:
    router = APIRouter(tags=["openai"])

    @router.post("/v1/realtime/client_secrets", response_model=ClientSecret, responses=ERRORS)
    def client_secrets(principal: PrincipalDep, request: ClientSecretRequest | None = None) -> ClientSecret:
        """A short-lived credential that opens live sessions as the calling key, for a browser that must not
        hold the key itself."""
        ttl = (request.expires_after_seconds if request else None) or settings.realtime_client_secret_seconds
        value, expires = issue_client_secret(
            principal_id=principal.id, signing_key=signing_key, ttl_seconds=ttl, now=time.time()
        )
        return ClientSecret(value=value, expires_at=expires)

    @router.websocket("/v1/realtime")
    async def realtime(websocket: WebSocket) -> None:
        query = websocket.url.query
        target = f"ws://{settings.realtime_host}:{settings.realtime_port}/v1/realtime" + (f"?{query}" if query else "")
        headers = {name: websocket.headers[name] for name in PASSED_HEADERS if name in websocket.headers}
        offered = [part.strip() for part in websocket.headers.get("sec-websocket-protocol", "").split(",") if part]
        try:
            upstream = await connect(
                target,
                additional_headers=headers,
                subprotocols=offered or None,  # type: ignore[arg-type]
                max_size=None,
                open_timeout=10,
                ping_interval=None,
            )
        except InvalidStatus as refused:
            answer = refused.response
            body = bytes(answer.body or b"")
            await websocket.send_denial_response(
                Response(body, status_code=answer.status_code, media_type="application/json")
            )
            return
        except (OSError, TimeoutError):
            await websocket.send_denial_response(
                Response(
                    b'{"error": {"code": "live_unavailable", "message": "live transcription is not running", '
                    b'"details": null}}',
                    status_code=503,
                    media_type="application/json",
                )
            )
            return
        await websocket.accept(subprotocol=upstream.subprotocol)
        await _pump(websocket, upstream)

    del client_secrets, realtime
    return router


async def _pump(client: WebSocket, upstream: ClientConnection) -> None:
    async def client_to_upstream() -> None:
        while True:
            message = await client.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            await upstream.send(data if data is not None else message.get("bytes") or b"")

    async def upstream_to_client() -> None:
        async for frame in upstream:
            if isinstance(frame, str):
                await client.send_text(frame)
            else:
                await client.send_bytes(frame)

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    with contextlib.suppress(ConnectionClosed, RuntimeError):
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        await upstream.close()
    code = upstream.close_code or 1000
    reason = upstream.close_reason or ""
    if code == 1006:
        # The live worker went away without a word (killed, restarted): 1012 tells the client to try again;
        # what it had sent is recorded as a job when the worker comes back.
        code, reason = 1012, "the live worker restarted: reconnect"
    with contextlib.suppress(Exception):
        await client.close(code=code, reason=reason)

"""Errors on the OpenAI-compatible routes in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
so that the SDKs raise their usual exceptions; every other route keeps SpeechFlow's own shape."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from functions.api.security import SecurityError

log = logging.getLogger("functions.api.openai_audio")


JOB_ID_HEADER = "x-speechflow-job-id"
"""On every answer that has a job: the job behind it, to read with GET /jobs/{id}."""


class OpenAIError(Exception):
    """A refusal on these routes, answered as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
        job_id: uuid.UUID | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.error_type = error_type or ("invalid_request_error" if status < 500 else "server_error")
        self.job_id = job_id
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        headers = dict(self.headers)
        if self.job_id is not None:
            body["job_id"] = str(self.job_id)
            headers[JOB_ID_HEADER] = str(self.job_id)
        return JSONResponse(status_code=self.status, content={"error": body}, headers=headers)


def from_security_error(error: SecurityError) -> OpenAIError:
    """401, 422 (the upload), 429 and 503 of the security layer, in OpenAI's terms."""
    if error.status == 422:
        # OpenAI answers a file it cannot use with 400 invalid_request_error, param "file".
        return OpenAIError(400, error.message, param="file", code=error.code)
    if error.status == 429:
        return OpenAIError(429, error.message, code="rate_limit_exceeded", error_type="requests", headers=error.headers)
    return OpenAIError(error.status, error.message, code=error.code, headers=error.headers)


class OpenAIErrorRoute(APIRoute):
    """A route whose refusals — including authentication and the framework's own — take OpenAI's shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def openai_shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError as error:
                return error.response()
            except SecurityError as error:
                return from_security_error(error).response()
            except RequestValidationError as error:
                first: dict[str, Any] = next(iter(error.errors()), {})
                param = ".".join(str(part) for part in first.get("loc", ())[1:]) or None
                return OpenAIError(400, str(first.get("msg", "invalid request")), param=param).response()
            except StarletteHTTPException as error:
                return OpenAIError(error.status_code, str(error.detail)).response()
            except Exception as error:
                # Never a bare 500 page: the shape the SDK expects, the cause in the log only.
                log.error(
                    "unexpected error in %s %s",
                    request.method,
                    request.url.path,
                    exc_info=error,
                    extra={"action": "openai_audio_unexpected_error"},
                )
                return OpenAIError(500, "the server could not answer this request; it has been logged").response()

        return openai_shaped


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None
    job_id: str | None = None
    """SpeechFlow's addition: the job to poll with GET /jobs/{id} (504), or whose step failed."""


class OpenAIErrorResponse(BaseModel):
    error: OpenAIErrorBody

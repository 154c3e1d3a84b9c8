"""Chat completions through the openai SDK, shared by the Azure OpenAI and OpenAI-compatible
adapters: structured output, retries that honour Retry-After, and the service's errors mapped to
SpeechFlow's (content filter and invalid requests are permanent)."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from shared.core.errors import PermanentError, TransientError
from shared.engines.text.port import ChatReply

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 120.0


def is_retryable(error: BaseException) -> bool:
    """429, 5xx, 408/409, timeouts and dropped connections are worth another try."""
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in (408, 409, 429) or error.status_code >= 500
    return False


def retry_after_seconds(error: BaseException) -> float | None:
    """The wait the service asked for (`retry-after-ms` or `retry-after` in seconds), if any."""
    response = getattr(error, "response", None)
    if response is None:
        return None
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is None:
            continue
        try:
            return min(MAX_RETRY_AFTER_SECONDS, max(0.0, float(value) * scale))
        except ValueError:
            continue
    return None


class RetryAfterOrBackoff:
    """tenacity wait: what Retry-After says, else exponential backoff with jitter."""

    def __init__(self, *, initial: float = 1.0, maximum: float = 30.0) -> None:
        self._initial = initial
        self._maximum = maximum

    def __call__(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        asked = retry_after_seconds(error) if error is not None else None
        if asked is not None:
            return asked
        backoff = min(self._maximum, self._initial * 2 ** (state.attempt_number - 1))
        return float(backoff * (0.5 + random.random() / 2))  # jitter, not security


class OpenAIChat:
    """A `ChatClient` over an `openai.OpenAI` or `openai.AzureOpenAI` client built with
    max_retries=0, so tenacity alone decides about retries."""

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        engine: str,
        model: str,
        max_attempts: int,
        structured_output: bool = True,
        wait: Any = None,
    ) -> None:
        self._client = client
        self.engine = engine
        self.model = model
        self._max_attempts = max_attempts
        self._structured_output = structured_output
        self._wait = wait or RetryAfterOrBackoff()

    def complete_json(self, messages: list[dict[str, str]], *, schema: dict[str, Any], name: str) -> ChatReply:
        retrying = Retrying(
            retry=retry_if_exception(is_retryable),
            wait=self._wait,
            stop=stop_after_attempt(self._max_attempts),
            reraise=True,
            before_sleep=_log_retry,
        )
        try:
            return retrying(self._complete, messages, schema, name)
        except openai.APIStatusError as error:
            raise _mapped(error) from error
        except (openai.APITimeoutError, openai.APIConnectionError) as error:
            raise TransientError(f"{self.engine} unreachable: {error}") from error

    def _complete(self, messages: list[dict[str, str]], schema: dict[str, Any], name: str) -> ChatReply:
        response_format: Any = (
            {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
            if self._structured_output
            else {"type": "json_object"}
        )
        try:
            completion = self._client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                response_format=response_format,
                temperature=0.2,
            )
        except openai.BadRequestError as error:
            if not self._structured_output or "response_format" not in str(error):
                raise
            # An OpenAI-compatible server without JSON-schema support: ask for a JSON object instead.
            log.warning("structured output refused; falling back to json_object", extra={"action": "llm.fallback"})
            self._structured_output = False
            return self._complete(messages, schema, name)
        choice = completion.choices[0]
        if choice.finish_reason == "content_filter":
            raise PermanentError(f"{self.engine}: the answer was blocked by the content filter")
        content = choice.message.content or ""
        try:
            data = json.loads(content)
        except json.JSONDecodeError as error:
            raise TransientError(f"{self.engine} answered malformed JSON (finish: {choice.finish_reason})") from error
        if not isinstance(data, dict):
            raise TransientError(f"{self.engine} answered JSON that is not an object")
        usage = completion.usage
        return ChatReply(
            data=data,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )


def _mapped(error: openai.APIStatusError) -> Exception:
    message = _service_message(error)
    if error.status_code == 400 and (error.code == "content_filter" or "content_filter" in message):
        return PermanentError(f"content filter: {message}")
    if is_retryable(error):
        return TransientError(f"HTTP {error.status_code}: {message}")
    return PermanentError(f"HTTP {error.status_code}: {message}")


def _service_message(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return error.message


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning(
        "text model request failed; retrying",
        extra={
            "action": "llm.retry",
            "attempt": state.attempt_number,
            "wait_seconds": round(state.upcoming_sleep, 3),
            "error": repr(error),
        },
    )

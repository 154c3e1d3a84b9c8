"""A local HTTP server that speaks the Azure OpenAI chat-completions REST shape:
POST /openai/deployments/{deployment}/chat/completions?api-version=…, authenticated by the `api-key`
header (or a bearer token). It also answers the OpenAI shape (POST /v1/chat/completions).

Scripted replies (`FakeOpenAI.script`) are served first, in order; after them the server answers
like a cooperative model: translation requests get every segment back as "[en] <text>", summary
requests a summary that quotes the first words of the transcript. Every request is recorded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "test-azure-openai-key"
DEPLOYMENT = "gpt-4.1-test"


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (a slow service)."""


@dataclass
class Recorded:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]
    at: float


@dataclass
class FakeOpenAI:
    url: str
    script: list[Reply] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    api_key: str = API_KEY
    deployment: str = DEPLOYMENT
    usage: tuple[int, int] = (40, 12)


def completion(
    content: dict[str, Any] | str, *, usage: tuple[int, int] = (40, 12), finish: str = "stop"
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": "gpt-4.1",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "message": {
                    "role": "assistant",
                    "content": content if isinstance(content, str) else json.dumps(content, ensure_ascii=False),
                },
            }
        ],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": None, "type": None}}


def content_filter_error() -> Reply:
    body = error(
        "content_filter",
        "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
    )
    body["error"]["innererror"] = {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {}}
    return Reply(400, body)


def cooperative_answer(request: dict[str, Any]) -> dict[str, Any]:
    schema_name = ((request.get("response_format") or {}).get("json_schema") or {}).get("name")
    user = next(m["content"] for m in request["messages"] if m["role"] == "user")
    if schema_name == "translation":
        segments = json.loads(user)["segments"]
        return {"segments": [{"id": s["id"], "text": f"[en] {s['text']}" if s["text"] else ""} for s in segments]}
    words = user.split()
    return {"summary": "Summary: " + " ".join(words[:8]), "key_points": ["first point", "second point"]}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        fake = self.server.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        fake.requests.append(
            Recorded(
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                at=time.monotonic(),
            )
        )
        azure_path = f"/openai/deployments/{fake.deployment}/chat/completions"
        if parts.path == azure_path:
            if "api-version" not in parse_qs(parts.query):
                return self._send(Reply(404, error("404", "Resource not found")))
            if (
                self.headers.get("api-key") != fake.api_key
                and self.headers.get("authorization") != f"Bearer {fake.api_key}"
            ):
                return self._send(Reply(401, error("401", "Access denied due to invalid subscription key.")))
        elif parts.path != "/v1/chat/completions":
            return self._send(Reply(404, error("DeploymentNotFound", "The API deployment does not exist.")))
        if fake.script:
            return self._send(fake.script.pop(0))
        self._send(Reply(200, completion(cooperative_answer(body), usage=fake.usage)))

    def _send(self, reply: Reply) -> None:
        time.sleep(reply.delay)
        payload = json.dumps(reply.body).encode("utf-8")
        self.send_response(reply.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAI


@contextmanager
def serve_fake_openai() -> Iterator[FakeOpenAI]:
    """Run the fake on a free local port for the duration of the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = FakeOpenAI(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, name="fake-openai", daemon=True)
    thread.start()
    try:
        yield server.fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

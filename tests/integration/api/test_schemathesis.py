"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis, in-process ASGI).

Bounded to fit in `make test`: a few examples per operation, no shrinking deadline surprises. Every
response must be a non-5xx, with a status code, content type and body the schema documents. Requests
carry the stack's bootstrap key; unauthenticated and refused paths are covered by test_api_security.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.core import netsafety
from tests.support.pipeline import API_KEY, Stack, build_stack

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture
def api_schema(tmp_path, make_settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from shared.core.db import migrate

    def no_dns(host: str, *_args: Any, **_kwargs: Any) -> Any:
        raise socket.gaierror(f"no DNS in tests: {host}")

    # Generated callback URLs name random hosts: resolve none of them rather than wait on DNS.
    monkeypatch.setattr(netsafety.socket, "getaddrinfo", no_dns)
    settings_ = make_settings(database_url=f"sqlite:///{tmp_path / 'fuzz.db'}")
    migrate(settings_)
    stack: Stack = build_stack(settings_)
    stack.submit("lid_only")  # something to list
    yield schemathesis.openapi.from_asgi("/openapi.json", stack.client.app)
    stack.client.close()
    stack.runtime.close()


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
    database=None,
    derandomize=True,  # the same examples on every run: a gate in make test, not a flaky one
)
def test_api_conforms_to_its_schema(case: Any) -> None:
    case.call_and_validate(headers={"x-api-key": API_KEY}, checks=CHECKS)

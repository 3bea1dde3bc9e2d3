"""One error tree: bad input stays a ValueError, SDK failures are sorted by type, never by name."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from serve_app import errors
from serve_app.routing.providers.errors import call_errors


def _sorted(exc: Exception, status_of=lambda _: (None, False)) -> errors.ProviderError:
    async def call() -> None:
        async with call_errors("p", 5, status_of):
            raise exc

    with pytest.raises(errors.ProviderError) as caught:
        asyncio.run(call())
    return caught.value


def test_every_input_error_is_a_value_error_and_not_retryable() -> None:
    inputs = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.InvalidInput)]
    assert len(inputs) == 10  # the base, the eight the modules raised as ValueError, ForeignStream
    assert all(issubclass(c, ValueError) and not c.retryable for c in inputs)
    assert errors.Overloaded.retryable and errors.ReplicaLost.retryable


def test_transport_failures_are_sorted_by_type() -> None:
    request = httpx.Request("POST", "http://model.invalid")
    assert _sorted(httpx.ReadTimeout("slow", request=request)).kind == "timeout"
    assert _sorted(httpx.ConnectError("refused", request=request)).kind == "connection"
    assert _sorted(httpx.RemoteProtocolError("closed", request=request)).kind == "connection"
    assert _sorted(ConnectionResetError()).kind == "connection"
    wrapped = RuntimeError("the SDK's own type")
    wrapped.__cause__ = httpx.ConnectError("refused", request=request)
    assert _sorted(wrapped).kind == "connection"


def test_an_sdk_api_error_is_sorted_by_its_status() -> None:
    failure = _sorted(KeyError("x"), status_of=lambda _: (429, True))
    assert failure.kind == "rate_limit" and failure.retryable and failure.status == 429


def test_a_bug_named_like_a_transport_failure_is_not_retried() -> None:
    class ConnectTimeoutLookalike(Exception):
        pass

    async def call() -> None:
        async with call_errors("p", 5, lambda _: (None, False)):
            raise ConnectTimeoutLookalike("a bug")

    with pytest.raises(ConnectTimeoutLookalike):
        asyncio.run(call())


def test_the_sdks_connection_errors_are_connection_failures() -> None:
    import anthropic
    import openai

    from serve_app.routing.providers.claude import _status as claude_status
    from serve_app.routing.providers.openai_compat import _status as openai_status

    request = httpx.Request("POST", "http://model.invalid")
    assert _sorted(openai.APIConnectionError(request=request), openai_status).kind == "connection"
    assert _sorted(anthropic.APIConnectionError(request=request), claude_status).kind == "connection"
    assert _sorted(openai.APITimeoutError(request=request), openai_status).kind == "timeout"

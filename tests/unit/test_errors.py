"""from_response(): every failure lands on the right branch of the error tree."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from connectors.autotask import errors as E

URL = "https://webservices14.autotask.net/ATServicesRest/V1.0/Tickets/1"


def _resp(status: int, body: Any = None, headers: dict[str, str] | None = None, text: str | None = None) -> httpx.Response:
    request = httpx.Request("GET", URL)
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


CASES = [
    (_resp(200, {"item": {"id": 1}}), None),
    (_resp(200, {"itemId": 1}), None),
    (_resp(200, {"item": None}), E.TicketNotFound),
    (_resp(401, {"errors": ["Unauthorized"]}), E.AuthError),
    (_resp(403, text=""), E.AuthError),
    (_resp(500, {"errors": ["Value 99 is not a valid value for field status."]}), E.RejectedError),
    (_resp(500, {"errors": [{"message": "Title is required."}]}), E.RejectedError),
    (_resp(500, {"errors": ["Thread Threshold Exceeded - thread threshold of 3 threads (Itgenatr005)"]}),
     E.ThreadThresholdExceeded),
    (_resp(429, {"errors": ["Itgenatr005"]}), E.ThreadThresholdExceeded),
    (_resp(500, {"errors": ["Transaction (Process ID 71) was deadlocked on lock resources"]}), E.LockContention),
    (_resp(500, {"errors": ["Timeout expired. The timeout period elapsed"]}), E.LockContention),
    (_resp(500, text="<html>Internal Server Error</html>"), E.ServiceUnavailable),
    (_resp(429, text=""), E.RateLimited),
    (_resp(429, {"errors": ["API request threshold exceeded"]}, {"Retry-After": "30"}), E.RateLimited),
    (_resp(502, text="Bad Gateway"), E.ServiceUnavailable),
    (_resp(503, text=""), E.ServiceUnavailable),
    (_resp(504, text=""), E.ServiceUnavailable),
    (_resp(404, text="Not Found"), E.RejectedError),
    (_resp(400, {"errors": ["bad filter"]}), E.RejectedError),
]


@pytest.mark.parametrize(("response", "expected"), CASES)
def test_classification(response: httpx.Response, expected: type[E.AutotaskError] | None) -> None:
    err = E.from_response(response)
    if expected is None:
        assert err is None
        return
    assert type(err) is expected
    assert err.status_code == response.status_code
    assert err.retryable is issubclass(expected, E.RetryableError)
    assert err.reason.startswith(expected.code)


def test_permanent_and_retryable_are_disjoint() -> None:
    assert not issubclass(E.PermanentError, E.RetryableError)
    for cls in (E.TicketNotFound, E.AuthError, E.RejectedError):
        assert issubclass(cls, E.PermanentError) and not cls.retryable
    for cls in (E.RateLimited, E.ThreadThresholdExceeded, E.LockContention, E.ServiceUnavailable, E.TransportError):
        assert issubclass(cls, E.RetryableError) and cls.retryable


def test_retry_after_seconds_and_http_date() -> None:
    err = E.from_response(_resp(429, text="", headers={"Retry-After": "12"}))
    assert isinstance(err, E.RateLimited) and err.retry_after == 12.0
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=90), usegmt=True)
    assert E.parse_retry_after(when, now=now.timestamp()) == pytest.approx(90)
    assert E.parse_retry_after("soon") is None
    assert E.parse_retry_after(None) is None
    assert E.parse_retry_after("-5") == 0.0


def test_transport_errors_are_retryable() -> None:
    err = E.from_transport_error(httpx.ReadTimeout("slow"), "GET", "/Tickets/1")
    assert isinstance(err, E.TransportError) and "timed out" in str(err)
    err = E.from_transport_error(httpx.ConnectError("refused"), "GET", "/Tickets/1")
    assert isinstance(err, E.TransportError) and "failed to connect" in str(err)

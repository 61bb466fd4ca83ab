"""Contract tests from TimeZest's documented examples, not from atrelay's own sandbox.

Each answer is quoted from TimeZest's developer docs (§1.1: base URL, authentication, pagination,
filtering) or from one real API response saved in a public repository (§1.2: the object's shape), and
each test names the part it quotes. Served by an ``httpx.MockTransport``: the client is checked against
something it did not write (the cassettes are recorded from atrelay's TimeZest sandbox).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from connectors.timezest.client import TimezestAuthError, TimezestClient, TimezestUnavailable

BASE_URL = "https://api.timezest.com/v1"  # §1.1 Base URL
KEY = "doc-example-key"  # this test's own, never a real key

#: §1.2 "Object shape": the real API response quoted there (values replaced by the source).
SCHEDULED = {
    "id": "sreq_EXAMPLE0001",
    "object": "scheduling_request",
    "appointment_type_id": "apty_EXAMPLE0001",
    "associated_entities": [
        {"type": "autotask/company", "id": 23149},
        {"type": "autotask/contact", "id": 1778},
        {"type": "autotask/ticket", "id": 51234},
    ],
    "duration_mins": 30,
    "earliest_date": None, "earliest_time": None,
    "latest_date": None, "latest_time": None,
    "end_user_email": "jane@example.com",
    "end_user_name": "Jane Example",
    "guests_list": [],
    "resources": [{"id": "team_EXAMPLE01", "name": "Remote Team", "object": "team"}],
    "scheduled_agents": [{"id": "agnt_EXAMPLE01", "name": "Tech One", "object": "agent"}],
    "scheduled_at": 1774650862,
    "scheduling_url": "https://yourmsp.timezest.com/schedule/EXAMPLEtoken",
    "selected_start_time": 1774969200,
    "selected_time_zone": "Eastern Time (US & Canada)",
    "status": "scheduled",
    "created_at": 1774644599,
    "updated_at": 1774650862,
}


def make(route: Callable[[httpx.Request], httpx.Response], attempts: int = 1,
         sleeps: list[float] | None = None) -> tuple[TimezestClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return route(request)

    client = TimezestClient(api_key=KEY, base_url=BASE_URL, transport=httpx.MockTransport(handler),
                            max_attempts=attempts, sleep=sleeps.append if sleeps is not None else (lambda _s: None))
    return client, seen


def _request(n: int, status: str = "sent") -> dict[str, Any]:
    """A §1.2 request while ``new``/``sent``: "scheduled_agents is [] and scheduled_at, selected_* are null"."""
    return {**SCHEDULED, "id": f"sreq_EXAMPLE{n:04d}", "status": status, "scheduled_agents": [],
            "scheduled_at": None, "selected_start_time": None, "selected_time_zone": None,
            "created_at": 1774644599 - n, "updated_at": 1774644599 - n}


def test_scheduling_request_object_shape() -> None:
    """§1.2 Scheduling requests, "Object shape" (a real response) via ``GET /v1/scheduling_requests/{id}``."""
    client, seen = make(lambda _r: httpx.Response(200, json=SCHEDULED))
    req = client.scheduling_request("sreq_EXAMPLE0001")
    assert str(seen[0].url) == "https://api.timezest.com/v1/scheduling_requests/sreq_EXAMPLE0001"
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"  # §1.1 Auth: a Bearer token
    assert req.status == "scheduled"
    assert req.autotask_ticket is not None and req.autotask_ticket.id == 51234
    assert req.selected_time_zone == "Eastern Time (US & Canada)"  # Rails-style, not IANA
    assert req.scheduled_agents and req.changed_at().tzinfo is not None  # §1.1: Unix seconds


def test_pending_request_has_nulls() -> None:
    """§1.2 observations: while ``sent``, no agents and null times; the model must accept that."""
    client, _ = make(lambda _r: httpx.Response(200, json=_request(2)))
    req = client.scheduling_request("sreq_EXAMPLE0002")
    assert req.status == "sent" and not req.scheduled_agents and req.selected_time_zone is None


def test_list_pages_follow_next_page() -> None:
    """§1.1 Pagination: ``{"object":"list","next_page":<url or null>,"previous_page":...,"data":[...]}``,
    20 items per page, newest-created first; ``next_page`` is a ready-made URL that keeps the filter."""
    first = [_request(n) for n in range(20)]
    second = [_request(n) for n in range(20, 25)]
    next_url = f"{BASE_URL}/scheduling_requests?starting_after={first[-1]['id']}&filter=x"

    def route(request: httpx.Request) -> httpx.Response:
        if "starting_after" in str(request.url):
            return httpx.Response(200, json={"object": "list", "next_page": None,
                                             "previous_page": f"{BASE_URL}/scheduling_requests?ending_before=x",
                                             "data": second})
        return httpx.Response(200, json={"object": "list", "next_page": next_url, "previous_page": None,
                                         "data": first})

    client, seen = make(route)
    got = list(client.scheduling_requests(tql="scheduling_request.status EQ sent"))
    assert [r.id for r in got] == [r["id"] for r in first + second]
    assert seen[0].url.params["filter"] == "scheduling_request.status EQ sent"  # §1.1 Filtering: filter=<TQL>
    assert str(seen[1].url) == next_url  # followed as given, not rebuilt


def test_next_page_as_a_bare_query_string() -> None:
    """§1.1 Discrepancies: "``next_page`` sometimes comes back as a bare query string"."""
    def route(request: httpx.Request) -> httpx.Response:
        if "starting_after" in str(request.url):
            return httpx.Response(200, json={"object": "list", "next_page": None, "previous_page": None,
                                             "data": [_request(21)]})
        return httpx.Response(200, json={"object": "list", "next_page": "?starting_after=sreq_EXAMPLE0020",
                                         "previous_page": None, "data": [_request(20)]})

    client, seen = make(route)
    assert len(list(client.scheduling_requests())) == 2
    assert str(seen[1].url) == f"{BASE_URL}/scheduling_requests?starting_after=sreq_EXAMPLE0020"


def test_missing_or_invalid_key_is_401() -> None:
    """§1.1 Errors: **401** ``{"error": "Unauthorized. No valid API key provided"}``: not retried."""
    client, seen = make(lambda _r: httpx.Response(401, json={"error": "Unauthorized. No valid API key provided"}),
                        attempts=3)
    with pytest.raises(TimezestAuthError, match="No valid API key provided"):
        list(client.scheduling_requests())
    assert len(seen) == 1


def test_key_without_permission_is_403() -> None:
    """§1.1 Errors: **403** when the key lacks permission."""
    client, _ = make(lambda _r: httpx.Response(403, json={"error": "Forbidden"}))
    with pytest.raises(TimezestAuthError, match="403"):
        client.scheduling_request("sreq_EXAMPLE0001")


def test_429_is_retried_honouring_retry_after() -> None:
    """§1.1 Rate limit: **429** when exceeded; the community client "honours ``Retry-After`` on 429"."""
    answers = [httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "Too Many Requests"}),
               httpx.Response(200, json=SCHEDULED)]
    sleeps: list[float] = []
    client, _ = make(lambda _r: answers.pop(0), attempts=2, sleeps=sleeps)
    assert client.scheduling_request("sreq_EXAMPLE0001").status == "scheduled"
    assert sleeps == [3.0]
    client, _ = make(lambda _r: httpx.Response(429, headers={"Retry-After": "3"}))
    with pytest.raises(TimezestUnavailable) as exc:
        client.scheduling_request("sreq_EXAMPLE0001")
    assert exc.value.retry_after == 3.0

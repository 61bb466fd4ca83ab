"""The TimeZest sandbox: cancel after scheduling, reschedule, ids never reused, TQL on time attributes."""

from __future__ import annotations

from typing import Any

import httpx

from sandboxes.timezest.app import TimezestSandboxState
from workers.settings import SANDBOX_TIMEZEST_API_KEY

AUTH = {"Authorization": f"Bearer {SANDBOX_TIMEZEST_API_KEY}"}


def listing(url: str, tql: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/scheduling_requests", params={"filter": tql}, headers=AUTH)


def ids(url: str, tql: str) -> list[str]:
    response = listing(url, tql)
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["data"]]


def scheduled(url: str, tz: TimezestSandboxState, ticket: int = 50004) -> dict[str, Any]:
    req = tz.create({"ticket_id": ticket})
    tz.transition(req["id"], "sent")
    return tz.transition(req["id"], "scheduled")


def test_cancel_after_scheduled_and_reschedule(timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    req = scheduled(url, tz)
    booked, updated = req["selected_start_time"], req["updated_at"]
    moved = httpx.post(f"{url}/_sandbox/scheduling_requests/{req['id']}/reschedule", json={"shift_seconds": 3600})
    assert moved.status_code == 200
    after = httpx.get(f"{url}/v1/scheduling_requests/{req['id']}", headers=AUTH).json()
    assert after["status"] == "scheduled" and after["selected_start_time"] == booked + 3600
    assert after["updated_at"] > updated
    cancelled = httpx.post(f"{url}/_sandbox/scheduling_requests/{req['id']}/transition", json={"status": "cancelled"})
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["updated_at"] > after["updated_at"]
    again = httpx.post(f"{url}/_sandbox/scheduling_requests/{req['id']}/reschedule", json={})
    assert again.status_code == 409


def test_ids_are_never_reused_after_a_reset(timezest: tuple[str, TimezestSandboxState]) -> None:
    _url, tz = timezest
    first = tz.create({"ticket_id": 50004})["id"]
    tz.reset()
    assert tz.create({"ticket_id": 50004})["id"] != first


def test_tql_on_updated_at_and_selected_start_time(timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    old = scheduled(url, tz)
    fresh = tz.create({"ticket_id": 50005})
    tz.transition(fresh["id"], "sent")
    cut = tz.requests[fresh["id"]]["updated_at"]
    assert ids(url, f"updated_at GTE {cut}") == [fresh["id"]]
    assert ids(url, f"scheduling_request.updated_at~LT~{cut}") == [old["id"]]
    start = old["selected_start_time"]
    assert ids(url, f"scheduling_requests.selected_start_time GTE {start} AND "
                    f"scheduling_requests.selected_start_time LTE {start + 1}") == [old["id"]]
    assert ids(url, "selected_start_time GTE 2000-01-01 AND selected_start_time LTE 2000-02-01") == []
    assert set(ids(url, f"status EQ sent OR id EQ {old['id']}")) == {old["id"], fresh["id"]}
    assert ids(url, "status NOT_IN (sent,new)") == [old["id"]]
    assert listing(url, "updated_at GTE not-a-date").status_code == 400
    # Real TimeZest may not filter on updated_at (unverified): the sandbox can ignore or refuse it.
    httpx.put(f"{url}/_sandbox/faults", json={"tql_ignore": ["updated_at"]}).raise_for_status()
    assert set(ids(url, f"updated_at GTE {cut}")) == {old["id"], fresh["id"]}
    httpx.put(f"{url}/_sandbox/faults", json={"tql_reject": ["updated_at"]}).raise_for_status()
    assert listing(url, f"updated_at GTE {cut}").status_code == 400

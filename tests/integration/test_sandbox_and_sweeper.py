"""The Autotask sandbox's limits behave like Autotask's; the sweeper finds work the broker lost."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
from sqlalchemy import update
from sqlmodel import col

from pipelines.audit import EventState, InboundEvent
from pipelines.db import session_scope, utcnow
from pipelines.sweeper import sweep
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, webform_body
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS

HEADERS = {"ApiIntegrationCode": SANDBOX_AUTOTASK_CREDENTIALS["integration_code"],
           "UserName": SANDBOX_AUTOTASK_CREDENTIALS["username"], "Secret": SANDBOX_AUTOTASK_CREDENTIALS["secret"]}


def test_concurrency_limit_answers_the_thread_threshold_error(autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    sandbox.latency_ms, sandbox.max_in_flight = 300, 3

    def call(_i: int) -> httpx.Response:
        return httpx.get(f"{url}/atservicesrest/V1.0/Tickets/50001", headers=HEADERS, timeout=10)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(call, range(6)))
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == 3 and len(refused) == 3
    assert all(r.status_code == 500 and "Itgenatr005" in r.json()["errors"][0] for r in refused)
    assert sandbox.errors_returned["thread_threshold"] == 3


def test_hourly_limit_answers_429(autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    sandbox.hourly_limit = 4
    codes = [httpx.get(f"{url}/atservicesrest/V1.0/Tickets/50001", headers=HEADERS).status_code for _ in range(6)]
    assert codes == [200, 200, 200, 200, 429, 429]
    body = httpx.get(f"{url}/atservicesrest/V1.0/ThresholdInformation", headers=HEADERS)
    assert body.status_code == 429  # the threshold call itself counts, as in Autotask


def test_missing_credentials_are_401_and_put_is_refused(autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    assert httpx.get(f"{url}/atservicesrest/V1.0/Tickets/50001").status_code == 401
    put = httpx.put(f"{url}/atservicesrest/V1.0/Tickets", headers=HEADERS, json={"id": 50001, "status": 5})
    assert put.status_code == 405


def test_calls_are_counted(autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    httpx.get(f"{url}/atservicesrest/V1.0/Tickets/50001", headers=HEADERS)
    httpx.post(f"{url}/atservicesrest/V1.0/Tickets/query", headers=HEADERS,
               json={"filter": [{"op": "eq", "field": "ticketNumber", "value": "T20261126.0001"}]})
    calls = httpx.get(f"{url}/_sandbox/calls").json()
    assert calls["total"] == 2
    assert calls["by_endpoint"] == {"GET tickets/{id}": 1, "POST tickets/query": 1}


def test_sweeper_requeues_stuck_work_only(db_url: str) -> None:
    stuck = add_event(db_url, "webform", "form.submitted", webform_body())
    fresh = add_event(db_url, "webform", "form.submitted", webform_body())
    leased = add_event(db_url, "webform", "form.submitted", webform_body())
    done = add_event(db_url, "webform", "form.submitted", webform_body())
    old = utcnow() - timedelta(minutes=10)
    with session_scope(db_url) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id).in_([stuck, done])).values(updated_at=old))
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == done).values(state=EventState.APPLIED))
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == leased).values(
            state=EventState.PROCESSING, lease_until=utcnow() - timedelta(seconds=5), updated_at=old))
    assert sorted(sweep(db_url)) == sorted([stuck, leased])
    assert fresh not in sweep(db_url)
    assert sweep(db_url) == []  # marked: not re-queued again at once

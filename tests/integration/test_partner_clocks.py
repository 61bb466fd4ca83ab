"""Issue 11 item 2: a partner time far in the future is clamped at intake and never blocks a ticket;
events on one ticket stamped in the same second are ordered by receipt. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from pipelines import store
from pipelines.clock import CLAMPED_HEADER
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, mc_body, webform_body
from tests.support import MC_SECRET, WEBFORM_SECRET, signed
from workers.http.ingress import create_app
from workers.settings import load_settings

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

SENT_FROM_MC, OUT_OF_SCOPE = 29682845, 29682846


@pytest.fixture
def client(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    monkeypatch.setenv("ATRELAY_WEBFORM_WEBHOOK_SECRET", WEBFORM_SECRET)
    monkeypatch.setenv("ATRELAY_MC_WEBHOOK_SECRET", MC_SECRET)
    with TestClient(create_app(load_settings(), enqueue=lambda _id: None)) as c:
        yield c


def _post(client: TestClient, path: str, body: bytes, secret: str) -> int:
    response = client.post(path, content=body, headers=signed(body, secret))
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def test_year_9999_is_clamped_and_the_next_event_still_applies(
    db_url: str, client: TestClient, autotask: tuple[str, SandboxState]
) -> None:
    url, sandbox = autotask
    before = datetime.now(UTC)
    far = _post(client, "/webhooks/webform", webform_body(50003, when="9999-12-31T23:59:59Z"), WEBFORM_SECRET)
    row = store.get_event(db_url, far)
    assert row is not None and row.occurred_at is not None
    assert before - timedelta(seconds=5) <= row.occurred_at <= datetime.now(UTC)  # the receipt time
    assert row.headers[CLAMPED_HEADER].startswith("9999-12-31T23:59:59")
    ctx = make_context(db_url, url)
    assert process_event(ctx, far).state == "applied"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = _post(client, "/webhooks/mission-control", mc_body("mc.escalated", 50003, when=now), MC_SECRET)
    assert process_event(ctx, later).state == "applied"  # not "stale" behind year 9999
    assert sandbox.tickets[50003]["status"] == SENT_FROM_MC


def test_a_slightly_fast_clock_is_kept_and_a_sender_cannot_forge_the_mark(
    db_url: str, client: TestClient
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=0)
    body = webform_body(50003, when=soon.strftime("%Y-%m-%dT%H:%M:%SZ"))
    headers = {**signed(body, WEBFORM_SECRET), CLAMPED_HEADER: "forged"}
    response = client.post("/webhooks/webform", content=body, headers=headers)
    row = store.get_event(db_url, int(response.json()["id"]))
    assert row is not None and row.occurred_at == soon  # within the 300 s allowance: kept as sent
    assert CLAMPED_HEADER not in row.headers


@pytest.mark.parametrize("order", ["received", "reversed"])
def test_same_second_events_on_a_ticket_settle_by_receipt(
    db_url: str, autotask: tuple[str, SandboxState], order: str
) -> None:
    url, sandbox = autotask
    when = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
    # Both bodies say 10:15:00Z: the partner's clock cannot order them, receipt does.
    first = add_event(db_url, "mission-control", "mc.escalated", mc_body("mc.escalated", 50003), when)
    second = add_event(db_url, "mission-control", "mc.out_of_scope", mc_body("mc.out_of_scope", 50003), when)
    ctx = make_context(db_url, url)
    runs = [first, second] if order == "received" else [second, first]
    outcomes = {event_id: process_event(ctx, event_id) for event_id in runs}
    # Whichever a worker ran first, the later receipt wins.
    assert sandbox.tickets[50003]["status"] == OUT_OF_SCOPE
    if order == "reversed":
        assert outcomes[first].state == "skipped" and (outcomes[first].reason or "").startswith("stale")

"""Issue 19.4 end to end: an Autotask callout dated 9999-12-31 must not block later changes on its ticket.

The ingress clamps the callout's ``EventTime`` to the receipt time and records Autotask's own time
(tests/integration/test_callout_intake.py). The observation run used to time the change by the body's
``EventTime``, so a genuine MC escalation afterwards
was "superseded ... at 9999-12-31". The run now uses the time the ingress recorded (clamped).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from pipelines import store
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import make_context, mc_body
from tests.support import AUTOTASK_HOOK_SECRET, MC_SECRET, autotask_signed, signed
from workers.http.ingress import create_app
from workers.settings import load_settings

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

SENT_FROM_MC = 29682845


@pytest.fixture
def client(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    monkeypatch.setenv("ATRELAY_MC_WEBHOOK_SECRET", MC_SECRET)
    monkeypatch.setenv("ATRELAY_AUTOTASK_WEBHOOK_SECRET", AUTOTASK_HOOK_SECRET)
    with TestClient(create_app(load_settings(), enqueue=lambda _id: None)) as c:
        yield c


def test_a_callout_dated_9999_does_not_supersede_a_later_escalation(
        db_url: str, client: TestClient, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    sandbox.tickets[50003]["status"] = 8  # a person set In Progress; Autotask's callout says so, dated 9999
    body = json.dumps({"Action": "Update", "Guid": "0f9e0c1a-9999", "EntityType": "Ticket", "Id": 50003,
                       "Fields": {"Status": 8}, "EventTime": "9999-12-31T23:59:59Z", "SequenceNumber": 1,
                       "PersonID": 29682885}).encode()
    callout = client.post("/webhooks/autotask/tickets", content=body, headers=autotask_signed(body)).json()["id"]
    ctx = make_context(db_url, url)
    process_event(ctx, callout)
    # A genuine escalation a little later (its time is whole seconds: two ahead, inside the allowed skew).
    when = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    mc = mc_body("mc.escalated", 50003, when=when)
    later = client.post("/webhooks/mission-control", content=mc, headers=signed(mc, MC_SECRET)).json()["id"]
    result = process_event(ctx, later)
    row = store.get_event(db_url, later)
    assert result.state == "applied", (result, row.reason if row else None)
    assert sandbox.tickets[50003]["status"] == SENT_FROM_MC

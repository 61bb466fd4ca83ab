"""Alerts around the real pipeline: status work never waits for the chat, the idle-escalation check
reads the ticket from the Autotask sandbox, and the dashboard lists what was told."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient

from connectors.autotask.sandbox import SandboxState
from pipelines import alerts
from pipelines.audit import TicketStatusChange
from pipelines.db import session_scope, utcnow
from pipelines.process import process_event
from tests.conftest import autotask_env
from tests.integration.helpers import add_event, make_context, mc_body, webform_body
from tests.integration.test_alerts import Receiver
from workers import alerts as worker_alerts
from workers.runtime import reset_runtime
from workers.settings import load_settings, reset_settings_cache

WEB_URL = "https://ww5.autotask.net/"
SENT_FROM_MC = 29682845


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def configured(sqlite_url: str, autotask: tuple[str, SandboxState], receiver: Receiver,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url, _ = autotask
    for name, value in {**autotask_env(url), "ATRELAY_DATABASE_URL": sqlite_url,
                        "ATRELAY_NOTIFY_URLS": f"json://127.0.0.1:{receiver.port}/alerts",
                        "ATRELAY_ESCALATION_IDLE_MINUTES": "60"}.items():
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    reset_runtime()
    yield sqlite_url
    reset_settings_cache()
    reset_runtime()


def test_status_work_goes_on_while_the_receiver_is_down(configured: str, autotask: tuple[str, SandboxState],
                                                         receiver: Receiver) -> None:
    url, sandbox = autotask
    db, settings = configured, load_settings()
    ctx = make_context(db, url)
    escalation = add_event(db, "mission-control", "mc.escalated", mc_body("mc.escalated", 50002))
    assert process_event(ctx, escalation).state == "applied"
    (made,) = alerts.record_escalations(db, web_url=WEB_URL)
    with pytest.raises(worker_alerts.AlertSendFailed):  # the chat is down: the alert waits ...
        worker_alerts.send_due(settings)
    form = add_event(db, "webform", "form.submitted", webform_body(50001))
    assert process_event(ctx, form).state == "applied"  # ... the status work does not
    assert sandbox.tickets[50001]["status"] == 29682844
    receiver.start()
    assert worker_alerts.send_due(settings) == 1
    assert [a.state for a in alerts.recent_alerts(db) if a.id == made] == ["sent"]


def test_an_escalation_left_without_an_owner_is_alerted_once_with_its_fields(
        configured: str, autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    url, _ = autotask
    db, settings = configured, load_settings()
    httpx.post(f"{url}/_sandbox/tickets/50002/status", json={"status": "Sent from MC", "as": "mission-control"}
               ).raise_for_status()
    with session_scope(db) as s:  # seen through Autotask's callout an hour and a bit ago
        s.add(TicketStatusChange(ticket_id=50002, from_status_id=1, to_status_id=SENT_FROM_MC,
                                 changed_at=utcnow() - timedelta(minutes=61), by_resource_id=30691780,
                                 via="callout"))
    made = worker_alerts._idle_escalations(settings, WEB_URL)
    assert len(made) == 1
    assert worker_alerts._idle_escalations(settings, WEB_URL) == []  # once per ticket
    receiver.start()
    assert worker_alerts.send_due(settings) == 1
    (msg,) = receiver.got
    assert msg["title"] == "Escalated ticket T20261126.0002 has no owner after 60 minutes"
    assert "Status: Sent from MC" in msg["message"] and "Ticket: T20261126.0002" in msg["message"]
    assert "TicketNumber=T20261126.0002" in msg["message"]


def test_the_dashboard_lists_alerts(ops_client: TestClient, sqlite_url: str) -> None:
    alerts.record_alert(sqlite_url, kind="dead_letter", key="dead_letter:1", title="Dead letter #1 (ticket-not-found)",
                        body="x")
    page = ops_client.get("/ops")
    assert page.status_code == 200
    assert 'id="alerts-table"' in page.text and "Dead letter #1 (ticket-not-found)" in page.text

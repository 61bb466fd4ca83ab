"""Alerts around the real pipeline: status work never waits for the chat; an escalation MC sets in
Autotask is told with the ticket's number, title, company and link, MC's own words quoted and escaped;
the idle-escalation check reads the ticket from the Autotask sandbox; the dashboard lists what was told,
what could not be delivered, and the open escalations."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from apprise import NotifyFormat
from apprise.conversion import convert_between
from apprise.plugins.slack import NotifySlack
from fastapi.testclient import TestClient

from pipelines import alerts, store
from pipelines.alert_text import from_fields, markdown
from pipelines.audit import EventState, TicketStatusChange
from pipelines.db import session_scope, utcnow
from pipelines.process import process_event
from sandboxes.autotask.data import SANDBOX_RESOURCES
from sandboxes.autotask.state import SandboxState
from tests.conftest import autotask_env
from tests.integration.helpers import Queue, add_event, make_context, mc_body, webform_body
from tests.integration.test_alerts import Receiver, _escalation
from workers.celery import alerts as worker_alerts
from workers.celery.runtime import reset_runtime
from workers.settings import load_settings, reset_settings_cache

WEB_URL = "https://ww5.autotask.net/"
SENT_FROM_MC = 29682845
#: What an attacker (or a careless partner) may write into MC's summary: a channel-wide ping, a mention,
#: a disguised link in Slack's own syntax and in markdown.
HOSTILE = "<!channel> @here URGENT <https://evil.example/x|click> [Re-login to Autotask now](https://evil.example/at-login)"


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
                        "ATRELAY_NOTIFY_URLS": receiver.url, "ATRELAY_ALERT_RETRY_SECONDS": "0",
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


def _callout(db: str, sandbox: SandboxState, ticket_id: int, person: int) -> int:
    """The ticket callout Autotask sends for the status the sandbox shows now (number included), as intake
    records it."""
    at = datetime.now(UTC)
    seq = uuid.uuid4().int % 10**9
    body = {"Action": "Update", "Guid": "alert-guid", "EntityType": "Ticket", "Id": ticket_id, "SequenceNumber": seq,
            "EventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "PersonID": person,
            "Fields": {"Status": sandbox.tickets[ticket_id]["status"]}}
    event_id, _ = store.insert_event(db, store.NewEvent(
        source="autotask", external_id=f"alert-guid:{ticket_id}:{seq}", event_type="autotask.ticket.changed",
        body=json.dumps(body).encode(), headers={}, ticket_id=ticket_id, occurred_at=at))
    return event_id


def test_an_escalation_mc_set_in_autotask_is_told_with_number_title_company_and_link(
        configured: str, autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    """Mission Control's escalation as it really arrives: its status set in Autotask, seen by a callout that
    carries only the ticket's id. The alert must still give its number, title, company and a link."""
    url, sandbox = autotask
    db = configured
    queue = Queue()
    ctx = make_context(db, url, enqueue=queue)
    sandbox.set_status(50003, SENT_FROM_MC, actor="mission-control")
    seen = process_event(ctx, _callout(db, sandbox, 50003, SANDBOX_RESOURCES["mission_control"]))
    derived = [event_id for event_id, _ in queue]
    assert derived, seen
    assert [process_event(ctx, e).state for e in derived] == ["applied"]
    receiver.start()
    assert worker_alerts.alerts_check_task() >= 1  # what beat runs every 30 s: record, then send
    (msg,) = [m for m in receiver.got if "Escalated by Mission Control" in m["title"]]
    assert msg["title"] == "Escalated by Mission Control: T20261126.0003"
    assert msg["type"] == "warning"
    body = msg["message"]
    for needle in ("T20261126.0003", "Outlook keeps asking for password", "Northwind Dental Group",
                   "TicketNumber=T20261126.0003", "Code=OpenTicketDetail", "What to do", "Assign a primary resource",
                   "the status it set in Autotask"):
        assert needle in body, needle
    assert "50003 ->" not in msg["title"]


def test_mcs_own_words_are_quoted_and_cannot_ping_or_disguise_a_link(
        configured: str, autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    url, _ = autotask
    db = configured
    ctx = make_context(db, url)
    body = json.dumps({"type": "mc.escalated", "timestamp": "2026-11-26T10:15:00Z", "data": {
        "ticket_id": 50002, "summary": f"Printer on fire.\n{HOSTILE}", "technician": "Alex"}}).encode()
    assert process_event(ctx, add_event(db, "mission-control", "mc.escalated", body, ticket_id=50002)).state == "applied"
    receiver.start()
    worker_alerts.alerts_check_task()
    (msg,) = [m for m in receiver.got if "Escalated by Mission Control" in m["title"]]
    text = msg["message"]
    assert "Mission Control wrote** (their words, quoted):\n> Printer on fire." in text
    assert "Printer offline in reception" in text and "Northwind Dental Group" in text  # the ticket, from Autotask
    # Quoted, never obeyed: no angle-bracket syntax, no markdown link, no live mention survives ...
    assert "<!channel>" not in text and "<https://evil" not in text and "@here" not in text
    # How a markdown target renders it (apprise is untyped).
    html = convert_between(NotifyFormat.MARKDOWN, NotifyFormat.HTML, text)  # type: ignore[no-untyped-call]
    assert 'href="https://evil' not in html and "Re-login to Autotask now" in html
    # ... and apprise's own Slack conversion (what Slack would receive) has no ping and no disguised link.
    slack = NotifySlack._commonmark_to_slack(text)  # type: ignore[no-untyped-call]
    assert "<!channel>" not in slack and "<!here>" not in slack
    assert "|Re-login to Autotask now>" not in slack and "<https://evil.example/x|click>" not in slack
    assert not NotifySlack._re_channel_support.search(slack) and not NotifySlack._re_user_id_support.search(slack)
    assert re.search(r"<http[^|>]*Code=OpenTicketDetail[^|>]*\|T20261126\.0002>", slack)  # the ticket's link is one
    (row,) = [a for a in alerts.recent_alerts(db) if a.kind == "mc_escalation"]
    # Plain text (e-mail, where nothing is markup): the words as written, each line quoted as MC's.
    assert "Mission Control wrote (their words, quoted):\n  > Printer on fire.\n  > <!channel> @here" in row.body


def _dead(db: str, *, ticket_id: int | None = None, number: str | None = None) -> int:
    """A dead letter as intake records it: a callout carries the ticket's id only, a partner its number."""
    event_id, _ = store.insert_event(db, store.NewEvent(
        source="autotask", external_id=f"dead:{uuid.uuid4().hex}", event_type="autotask.ticket.changed", body=b"{}",
        headers={}, ticket_id=ticket_id, ticket_number=number, occurred_at=utcnow(), state=EventState.DEAD,
        reason="rejected: Autotask refused the change"))
    return event_id


def test_a_dead_letter_is_told_with_its_tickets_number_title_company_and_link(
        configured: str, autotask: tuple[str, SandboxState], receiver: Receiver) -> None:
    """A dead letter about a ticket names it as an escalation's alert does (the same describer: number,
    title, company, link); a burst's digest names each of its tickets by number, linked."""
    url, _ = autotask
    db = configured
    one = _dead(db, ticket_id=50003)
    receiver.start()
    worker_alerts.alerts_check_task()
    (msg,) = [m for m in receiver.got if "Dead letter" in m["title"]]
    assert msg["title"] == f"Dead letter: event #{one} (autotask.ticket.changed) on ticket T20261126.0003"
    for needle in ("**Ticket** [T20261126.0003](", "Outlook keeps asking for password", "Northwind Dental Group",
                   f"{url}/Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail&TicketNumber=T20261126.0003",
                   "Autotask refused the change", f"`atrelay replay {one}`"):
        assert needle in msg["message"], needle
    assert [a.ticket_id for a in alerts.recent_alerts(db) if a.kind == "dead_letter"] == [50003]
    for ticket_id, number in ((None, "T20261126.0001"), (None, "T20261126.0002"), (None, "T20261126.0001"),
                              (50005, None)):
        _dead(db, ticket_id=ticket_id, number=number)
    worker_alerts.alerts_check_task()
    digest = alerts.recent_alerts(db)[0]
    assert (digest.kind, digest.title, digest.fields["count"]) == ("dead_letter", "4 dead letters", 4)
    link = f"{url}/Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail&TicketNumber="
    assert (f"Tickets: T20261126.0001 ({link}T20261126.0001), T20261126.0002 ({link}T20261126.0002), #50005"
            in digest.body)  # each ticket once
    stored = from_fields(digest.fields["message"])
    assert stored is not None and f"[T20261126.0002]({link}T20261126.0002)" in markdown(stored)


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
    assert worker_alerts._idle_escalations(settings, WEB_URL) == []  # once per escalation
    receiver.start()
    assert worker_alerts.send_due(settings) == 1
    (msg,) = receiver.got
    assert msg["title"] == "Escalated ticket T20261126.0002 has no owner after 60 minutes"
    assert msg["type"] == "warning"
    for needle in ("**Status** Sent from MC", "T20261126.0002", "Printer offline in reception", "Northwind Dental Group",
                   "TicketNumber=T20261126.0002", "Assign a primary resource now"):
        assert needle in msg["message"], needle


def test_the_dashboard_lists_alerts_failed_deliveries_and_open_escalations(
        ops_client: TestClient, sqlite_url: str) -> None:
    alerts.record_alert(sqlite_url, kind="dead_letter", key="dead_letter:1", title="Dead letter #1 (ticket-not-found)",
                        body="x")
    link = alerts.ticket_link(WEB_URL, "T20261126.0003")
    alerts.record_alert(sqlite_url, kind="mc_escalation", key="mc_escalation:9", ticket_id=50003,
                        title="Escalated by Mission Control: T20261126.0003", body="x",
                        fields={"link": link, "ticket_number": "T20261126.0003", "status": "Sent from MC"})
    settings = load_settings(database_url=sqlite_url, notify_urls="json://127.0.0.1:9/down", alert_retry_seconds=0,
                             alert_max_attempts=1)
    with pytest.raises(worker_alerts.AlertSendFailed):
        worker_alerts.send_due(settings)
    page = ops_client.get("/ops")
    assert page.status_code == 200
    assert 'id="alerts-table"' in page.text and "Dead letter #1 (ticket-not-found)" in page.text
    assert 'id="undelivered-table"' in page.text and "json://127.0.0.1:9" in page.text
    assert "could not be sent" in page.text  # in the verdict
    assert 'id="open-escalations"' in page.text and f'href="{str(link).replace("&", "&amp;")}"' in page.text
    assert "Needs attention" in page.text


def test_an_escalation_leaves_the_dashboards_open_list_once_its_ticket_moves_on(
        db_url: str, ops_on: Callable[..., AbstractContextManager[TestClient]]) -> None:
    def seen(status_id: int, by: int) -> None:  # a callout saw the ticket in this status
        store.observe_status(db_url, 50003, status_id, changed_at=utcnow(), by_resource_id=by, by_atrelay=False,
                             via="callout", event_id=None)

    seen(SENT_FROM_MC, SANDBOX_RESOURCES["mission_control"])
    _escalation(db_url, 50003, "T20261126.0003")
    assert len(alerts.record_escalations(db_url, web_url=WEB_URL)) == 1
    link = alerts.ticket_link(WEB_URL, "T20261126.0003")
    assert link is not None
    with ops_on() as client:
        page = client.get("/ops").text
        assert 'id="open-escalations"' in page and f'href="{link.replace("&", "&amp;")}"' in page
        seen(8, SANDBOX_RESOURCES["technician"])  # a technician took it on: In Progress
        page = client.get("/ops").text
        assert 'id="open-escalations"' not in page and "Open escalations" not in page
        assert "Escalated by Mission Control: T20261126.0003" in page  # still in the alerts table: it was told

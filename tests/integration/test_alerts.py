"""Alerts (issues 12 and 20): recorded once per fact, sent through apprise to local ``json://`` receivers,
each exactly once however many senders run, per URL (a partial failure re-sends only where it failed),
retried a bounded number of times with a growing pause, batched into a digest per kind."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from connectors.autotask.derived import SeenInAutotask
from pipelines import alert_sends, alerts, store
from pipelines.alert_text import TicketFacts
from pipelines.audit import AlertDelivery, EventState, InboundEvent, TicketStatusChange
from pipelines.db import session_scope, utcnow
from pipelines.schema import upgrade
from sandboxes.common.server import free_port
from workers.celery.alerts import AlertSendFailed, send_due
from workers.settings import Settings

WEB_URL = "https://ww5.autotask.net/"


class Receiver:
    """A ``json://`` target: keeps what it got; answers ``status`` after ``delay`` seconds."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.port = free_port()
        self.got: list[dict[str, Any]] = []
        self.status, self.delay = status, delay
        self.server: HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/alerts"

    def start(self) -> None:
        me = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                time.sleep(me.delay)
                me.got.append(body)
                self.send_response(me.status)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    return url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def _settings(db: str, *urls: str, **extra: Any) -> Settings:
    return Settings(database_url=db, notify_urls=" ".join(urls), **extra)


def _escalation(db: str, ticket: int, number: str) -> int:
    seen = SeenInAutotask(kind="status", ticket_id=ticket, ticket_number=number, changed_at=utcnow(),
                          by_resource_id=30691780, cause_event_id=1, status_id=29682845, status_label="Sent from MC")
    event_id, _ = store.insert_event(db, store.NewEvent(
        source="autotask", external_id=f"x:{ticket}:{utcnow().timestamp()}", event_type="mc.escalated",
        body=seen.encode(), headers={}, ticket_id=ticket, ticket_number=number, occurred_at=utcnow(),
        state=EventState.APPLIED))
    return event_id


def test_an_escalation_alert_reaches_a_json_receiver_and_is_retried_while_it_is_down(
        db: str, receiver: Receiver) -> None:
    _escalation(db, 50003, "T20261126.0003")
    (made,) = alerts.record_escalations(db, web_url=WEB_URL)
    assert alerts.record_escalations(db, web_url=WEB_URL) == []  # once per escalation
    settings = _settings(db, receiver.url, alert_retry_seconds=0)
    with pytest.raises(AlertSendFailed):  # the receiver is down: recorded, left pending
        send_due(settings)
    (row,) = alerts.recent_alerts(db)
    assert (row.id, row.state, row.attempts) == (made, "pending", 1) and row.last_error
    assert "127.0.0.1" in row.last_error and "json://" in row.last_error  # which URL (masked), and why
    receiver.start()
    assert send_due(settings) == 1
    (msg,) = receiver.got
    assert "T20261126.0003" in msg["title"] and "Escalated by Mission Control" in msg["title"]
    assert msg["type"] == "warning"  # an escalation is a warning
    assert "Mission Control escalated the ticket" in msg["message"] and "What to do" in msg["message"]
    assert f"{WEB_URL}Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail&TicketNumber=T20261126.0003" \
        in msg["message"]
    assert alerts.recent_alerts(db)[0].state == "sent"


def test_retries_pause_longer_each_time_and_end_in_a_recorded_failure(db: str) -> None:
    alerts.record_alert(db, kind="budget", key="budget:x", title="Budget", body="x", severity="warning")
    down = "json://127.0.0.1:9/alerts"  # nothing listens there
    settings = _settings(db, down, alert_retry_seconds=30, alert_max_attempts=3)
    with pytest.raises(AlertSendFailed):
        send_due(settings)
    assert send_due(settings) == 0  # the retry is not due yet: nothing is tried (no exception)
    tries = []
    for _ in range(2):  # make each retry due, as time would
        with session_scope(db) as s:
            d = s.exec(select(AlertDelivery)).one()
            tries.append((d.attempts, (d.next_try_at - utcnow()).total_seconds() if d.next_try_at else None))
            d.next_try_at = utcnow() - timedelta(seconds=1)
        with pytest.raises(AlertSendFailed):
            send_due(settings)
    assert tries[0][0] == 1 and 25 < (tries[0][1] or 0) <= 30  # first pause: 30 s
    assert tries[1][0] == 2 and 55 < (tries[1][1] or 0) <= 60  # then twice as long
    (row,) = alerts.recent_alerts(db)
    assert row.state == "failed" and row.attempts == 3 and "127.0.0.1:9" in (row.last_error or "")
    (key,) = _target_keys(db)
    assert alert_sends.due(db, "budget", alert_sends.Target(key, "", True), digest_seconds=0) == []  # never again
    assert send_due(settings) == 0
    assert [(a.id, d.state) for a, d in alert_sends.failed_deliveries(db)] == [(row.id, "failed")]


def _target_keys(db: str) -> list[str]:
    with session_scope(db) as s:
        return sorted({d.target for d in s.exec(select(AlertDelivery)).all()})


def test_a_partial_failure_resends_only_to_the_url_that_failed(db: str) -> None:
    good, bad = Receiver(), Receiver(status=500)
    good.start()
    bad.start()
    try:
        alerts.record_alert(db, kind="dead_letter", key="dead_letter:1", title="Dead letter #1", body="x")
        settings = _settings(db, good.url, bad.url, alert_retry_seconds=0, alert_max_attempts=3)
        for _ in range(5):  # more rounds than tries: the failing URL stops after 3
            with contextlib.suppress(AlertSendFailed):
                send_due(settings)
        assert len(good.got) == 1  # the working channel got it once, however often the other failed
        assert len(bad.got) == 3  # tried a bounded number of times
        (row,) = alerts.recent_alerts(db)
        assert row.state == "failed" and row.attempts == 3
        assert f"127.0.0.1:{bad.port}" in (row.last_error or "") and f"127.0.0.1:{good.port}" not in (row.last_error or "")
    finally:
        good.stop()
        bad.stop()


def test_four_senders_at_once_send_each_alert_once(db_url: str) -> None:
    slow = Receiver(delay=0.3)  # slow enough that all four senders read the pending alerts before one finishes
    slow.start()
    try:
        for kind in ("dead_letter", "budget", "webhook"):
            alerts.record_alert(db_url, kind=kind, key=f"{kind}:1", title=f"alert {kind}", body="x")
        settings = _settings(db_url, slow.url)
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def sender() -> None:
            barrier.wait()
            try:
                send_due(settings)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sender) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert errors == []
        titles = sorted(m["title"] for m in slow.got)
        assert titles == ["alert budget", "alert dead_letter", "alert webhook"], titles
        assert {a.state for a in alerts.recent_alerts(db_url)} == {"sent"}
        assert {a.attempts for a in alerts.recent_alerts(db_url)} == {1}
    finally:
        slow.stop()


def test_idle_escalations_are_alerted_per_escalation_and_bursts_become_one_digest(db: str, receiver: Receiver) -> None:
    with session_scope(db) as s:
        s.add(TicketStatusChange(ticket_id=50002, from_status_id=1, to_status_id=29682845,
                                 changed_at=utcnow() - timedelta(minutes=61), via="callout"))
        s.add(TicketStatusChange(ticket_id=50004, from_status_id=1, to_status_id=29682845,
                                 changed_at=utcnow() - timedelta(minutes=5), via="callout"))
    due = alerts.escalations_to_check(db, status_ids={29682845}, idle=timedelta(minutes=60))
    assert [t for t, _ in due] == [50002]
    ((ticket, change),) = due
    alerts.record_alert(db, kind="escalation_idle", key=alerts.idle_key(ticket, change), ticket_id=50002,
                        title="Escalated ticket T20261126.0002 has no owner after 60 minutes",
                        body="Status: Sent from MC\nTicket: T20261126.0002", fields={})
    assert alerts.escalations_to_check(db, status_ids={29682845}, idle=timedelta(minutes=60)) == []
    # The same ticket escalated again later (it was handled, and came back): a new escalation, alerted again.
    with session_scope(db) as s:
        s.add(TicketStatusChange(ticket_id=50002, from_status_id=8, to_status_id=29682845,
                                 changed_at=utcnow() - timedelta(minutes=62), via="callout"))
    again = alerts.escalations_to_check(db, status_ids={29682845}, idle=timedelta(minutes=60))
    assert [t for t, _ in again] == [50002] and again[0][1] != change
    receiver.start()
    settings = _settings(db, receiver.url)
    assert send_due(settings) == 1
    for n in range(3):
        alerts.record_alert(db, kind="dead_letter", key=f"dead_letter:{n}", title=f"Dead letter #{n}", body="x")
    assert send_due(settings) == 1
    titles = [m["title"] for m in receiver.got]
    assert titles[0].startswith("Escalated ticket T20261126.0002 has no owner")
    assert titles[1] == "atrelay: 3 alerts (dead_letter)"
    alerts.record_alert(db, kind="dead_letter", key="dead_letter:9", title="Dead letter #9", body="x")
    assert send_due(settings) == 0  # one message per kind per minute: it waits for the next digest


def test_a_lone_dead_letter_asks_autotask_for_its_ticket_once(db_url: str) -> None:
    """The ticket of a lone dead letter is described (as an escalation's is), read before the transaction that
    counts it; one already counted is not asked about again, one dead again (replayed, failed again) is."""
    asked: list[tuple[int | None, str | None]] = []

    def describe(ticket_id: int | None, number: str | None) -> TicketFacts:
        asked.append((ticket_id, number))
        return TicketFacts(ticket_id=ticket_id, number="T20261126.0003", title="Outlook keeps asking for password",
                           company="Northwind Dental Group", link=alerts.ticket_link(WEB_URL, "T20261126.0003"))

    event_id, _ = store.insert_event(db_url, store.NewEvent(
        source="autotask", external_id="dead-one", event_type="autotask.ticket.changed", body=b"{}", headers={},
        ticket_id=50003, occurred_at=utcnow(), state=EventState.DEAD, reason="rejected: no"))
    (made,) = alerts.record_dead_letters(db_url, web_url=WEB_URL, describe=describe)
    assert alerts.record_dead_letters(db_url, web_url=WEB_URL, describe=describe) == []
    assert asked == [(50003, None)]
    (row,) = alerts.recent_alerts(db_url)
    assert (row.id, row.ticket_id) == (made, 50003)
    assert "Ticket: T20261126.0003 - Outlook keeps asking for password" in row.body
    assert "Company: Northwind Dental Group" in row.body and "TicketNumber=T20261126.0003" in row.body
    with session_scope(db_url) as s:  # replayed and dead again: a new dead letter of the same event
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id).values(
            updated_at=utcnow() + timedelta(seconds=1)))
    assert len(alerts.record_dead_letters(db_url, web_url=WEB_URL, describe=describe)) == 1
    assert asked == [(50003, None)] * 2 and alerts.recent_alerts(db_url)[0].ticket_id == 50003


def test_every_dead_letter_is_counted_in_one_digest(db: str, receiver: Receiver) -> None:
    for n in range(250):  # more than the newest 200 the old check looked at
        event_id, _ = store.insert_event(db, store.NewEvent(
            source="webform", external_id=f"dead-{n}", event_type="form.submitted", body=b"{}", headers={},
            occurred_at=utcnow(), state=EventState.DEAD))
        assert event_id
    made = alerts.record_dead_letters(db)
    assert len(made) == 1 and alerts.record_dead_letters(db) == []  # one alert for the burst, then nothing new
    (row,) = alerts.recent_alerts(db)
    assert row.fields["count"] == 250 and row.title == "250 dead letters" and row.severity == "warning"
    assert "atrelay replay --dead" in row.body
    one, _ = store.insert_event(db, store.NewEvent(source="webform", external_id="dead-late", event_type="form.submitted",
                                                    body=b"{}", headers={}, occurred_at=utcnow(), state=EventState.DEAD))
    (late,) = alerts.record_dead_letters(db)
    assert alerts.recent_alerts(db)[0].fields["count"] == 1 and late != made[0]
    receiver.start()
    assert send_due(_settings(db, receiver.url)) == 1  # both of them, as one digest
    (msg,) = receiver.got
    assert "250 dead letters" in msg["message"] and f"Dead letter: event #{one}" in msg["message"]

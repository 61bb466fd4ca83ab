"""Alerts (issue 12): recorded once per fact, sent through apprise to a local ``json://`` receiver,
retried while the receiver is down, batched into a digest per kind."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from connectors.autotask.derived import SeenInAutotask
from connectors.common.sandbox_server import free_port
from pipelines import alerts, store
from pipelines.audit import EventState, TicketStatusChange
from pipelines.db import session_scope, utcnow
from pipelines.schema import upgrade
from workers.alerts import AlertSendFailed, send_due
from workers.settings import Settings

WEB_URL = "https://ww5.autotask.net/"


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.got: list[dict[str, Any]] = []
        self.server: HTTPServer | None = None

    def start(self) -> None:
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", self.port), Handler)
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


def _settings(db: str, receiver: Receiver) -> Settings:
    return Settings(database_url=db, notify_urls=f"json://127.0.0.1:{receiver.port}/alerts")


def _escalation(db: str, ticket: int, number: str) -> int:
    seen = SeenInAutotask(kind="status", ticket_id=ticket, ticket_number=number, changed_at=utcnow(),
                          by_resource_id=30691780, cause_event_id=1, status_id=29682845, status_label="Sent from MC")
    event_id, _ = store.insert_event(db, store.NewEvent(
        source="autotask", external_id=f"x:{ticket}", event_type="mc.escalated", body=seen.encode(), headers={},
        ticket_id=ticket, ticket_number=number, occurred_at=utcnow(), state=EventState.APPLIED))
    return event_id


def test_an_escalation_alert_reaches_a_json_receiver_and_is_retried_while_it_is_down(
        db: str, receiver: Receiver) -> None:
    _escalation(db, 50003, "T20261126.0003")
    (made,) = alerts.record_escalations(db, web_url=WEB_URL)
    assert alerts.record_escalations(db, web_url=WEB_URL) == []  # once per escalation
    settings = _settings(db, receiver)
    with pytest.raises(AlertSendFailed):  # the receiver is down: recorded, left pending
        send_due(settings)
    (row,) = alerts.recent_alerts(db)
    assert (row.id, row.state, row.attempts) == (made, "pending", 1) and row.last_error
    receiver.start()
    assert send_due(settings) == 1
    (msg,) = receiver.got
    assert "T20261126.0003" in msg["title"] and "Sent from MC" in msg["title"]
    assert "Mission Control escalated the ticket" in msg["message"]
    assert f"{WEB_URL}Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail&TicketNumber=T20261126.0003" \
        in msg["message"]
    assert alerts.recent_alerts(db)[0].state == "sent"


def test_idle_escalations_are_found_once_and_bursts_become_one_digest(db: str, receiver: Receiver) -> None:
    with session_scope(db) as s:
        s.add(TicketStatusChange(ticket_id=50002, from_status_id=1, to_status_id=29682845,
                                 changed_at=utcnow() - timedelta(minutes=61), via="callout"))
        s.add(TicketStatusChange(ticket_id=50004, from_status_id=1, to_status_id=29682845,
                                 changed_at=utcnow() - timedelta(minutes=5), via="callout"))
    due = alerts.escalations_to_check(db, status_ids={29682845}, idle=timedelta(minutes=60))
    assert [t for t, _ in due] == [50002]
    alerts.record_alert(db, kind="escalation_idle", key="escalation_idle:50002", ticket_id=50002,
                        title="Escalated ticket T20261126.0002 has no owner after 60 minutes",
                        body="Status: Sent from MC\nTicket: T20261126.0002", fields={})
    assert alerts.escalations_to_check(db, status_ids={29682845}, idle=timedelta(minutes=60)) == []
    receiver.start()
    settings = _settings(db, receiver)
    assert send_due(settings) == 1
    for n in range(3):
        alerts.record_alert(db, kind="dead_letter", key=f"dead_letter:{n}", title=f"Dead letter #{n}", body="x")
    assert send_due(settings) == 1
    titles = [m["title"] for m in receiver.got]
    assert titles[0].startswith("Escalated ticket T20261126.0002 has no owner")
    assert titles[1] == "atrelay: 3 alerts (dead_letter)"
    alerts.record_alert(db, kind="dead_letter", key="dead_letter:9", title="Dead letter #9", body="x")
    assert send_due(settings) == 0  # one message per kind per minute: it waits for the next digest

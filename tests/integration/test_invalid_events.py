"""Signed requests that fail validation are kept whole as ``invalid`` events (issue 11, item 5).

Kept, not run, listed (`atrelay events`, `atrelay dlq`, the dashboard), answered 422 as before, and
replayable: a replay re-checks the stored bytes with the code of the day. The "fix" is simulated
honestly: the ingress first runs with the ticket-number normalisation switched off (the code as it
was before this fix), keeps the event invalid, then the normalisation is switched back on (the fixed
release) and the replay runs the same stored bytes through the same ingress checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlmodel import col, func, select

from connectors.common import payloads
from pipelines import store
from pipelines.audit import EventState, InboundEvent, RejectedRequest
from pipelines.db import session_scope
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import make_context, webform_body
from tests.support import AUTOTASK_HOOK_SECRET, MC_SECRET, WEBFORM_SECRET, autotask_signed, signed
from workers.cli.reports import print_dead_letters, print_events
from workers.http.ingress import create_app
from workers.settings import load_settings

TOKEN = "an-admin-token-for-invalid-event-tests"


@pytest.fixture
def ingress(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, list[int], str]]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    monkeypatch.setenv("ATRELAY_WEBFORM_WEBHOOK_SECRET", WEBFORM_SECRET)
    monkeypatch.setenv("ATRELAY_MC_WEBHOOK_SECRET", MC_SECRET)
    monkeypatch.setenv("ATRELAY_AUTOTASK_WEBHOOK_SECRET", AUTOTASK_HOOK_SECRET)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", TOKEN)
    queue: list[int] = []
    with TestClient(create_app(load_settings(), enqueue=queue.append)) as client:
        yield client, queue, db_url


def _events(db: str) -> list[InboundEvent]:
    with session_scope(db) as s:
        return list(s.exec(select(InboundEvent).order_by(col(InboundEvent.id))).all())


def _text(fn: Any, db: str, **kw: Any) -> str:
    console = Console(record=True, width=400)
    fn(db, console, **kw)
    return console.export_text()


def _old_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingress as it was before the normalisation: ticket numbers checked as sent."""
    monkeypatch.setattr(payloads, "normalise_ticket_number", lambda value: value)


@pytest.mark.parametrize("number", [" T20261126.0001", "t20261126.0001", "T20261126.1", " t20261126.1 "])
def test_slightly_wrong_ticket_numbers_are_accepted_normalised(
    ingress: tuple[TestClient, list[int], str], number: str
) -> None:
    client, queue, db = ingress
    body = webform_body(number)
    response = client.post("/webhooks/webform", content=body, headers=signed(body, WEBFORM_SECRET))
    assert response.status_code == 202, response.text
    (row,) = _events(db)
    assert (row.ticket_number, row.state, row.body) == ("T20261126.0001", EventState.ACCEPTED, body)
    assert queue == [row.id]


def test_signed_body_that_fails_validation_is_kept_whole_and_listed(
    ingress: tuple[TestClient, list[int], str]
) -> None:
    client, queue, db = ingress
    body = webform_body("12345")  # not a ticket number in any spelling
    headers = signed(body, WEBFORM_SECRET, msg_id="msg_bad_number")
    response = client.post("/webhooks/webform", content=body, headers=headers)
    assert response.status_code == 422
    answer = response.json()
    assert answer["error"].startswith("data.ticket_number:") and answer["fields"][0]["field"] == "data.ticket_number"
    (row,) = _events(db)
    assert answer["id"] == row.id and answer["state"] == "invalid"
    assert (row.state, row.event_type, row.body, row.source) == ("invalid", "invalid", body, "webform")
    assert row.reason is not None and row.reason.startswith("data.ticket_number:")
    assert row.headers.get("webhook-id") == "msg_bad_number"
    assert queue == []  # never run
    # The partner retries a refused message: still one kept event.
    again = client.post("/webhooks/webform", content=body, headers=headers)
    assert again.status_code == 422 and again.json()["id"] == row.id and len(_events(db)) == 1
    # Listed where operators look.
    assert f"{row.id}" in _text(print_events, db, limit=10, source=None, state="invalid")
    dlq = _text(print_dead_letters, db, limit=10)
    assert "Dead letters (1)" in dlq and "invalid" in dlq and "data.ticket_number" in dlq
    page = client.get("/ops", headers={"authorization": f"Bearer {TOKEN}"}).text
    assert f'id="replay-{row.id}"' in page
    # Replayed with nothing fixed: it stays invalid, with the reason, and is not queued.
    queued, message = store.replay(db, row.id or 0)
    assert not queued and "still invalid: data.ticket_number" in message
    (same,) = _events(db)
    assert same.state == "invalid" and same.reason is not None and same.reason.startswith("still invalid")
    # Still refused at the HTTP level exactly as before.
    with session_scope(db) as s:
        codes = list(s.exec(select(RejectedRequest.status_code)).all())
    assert codes == [422, 422]


def test_unsigned_junk_is_not_kept(ingress: tuple[TestClient, list[int], str]) -> None:
    client, _queue, db = ingress
    body = b'{"type": "form.submitted", "data": {"ticket_number": "nonsense"}}'
    response = client.post("/webhooks/webform", content=body, headers={"webhook-id": "x", "content-type": "application/json"})
    assert response.status_code == 401
    assert _events(db) == []


def test_signed_malformed_json_is_refused_not_kept(ingress: tuple[TestClient, list[int], str]) -> None:
    """Not JSON at all is not a message of any shape: 400 and the rejections table, as before."""
    client, _queue, db = ingress
    body = b'{"type": "mc.escalated", "data": '
    response = client.post("/webhooks/mission-control", content=body, headers=signed(body, MC_SECRET))
    assert response.status_code == 400 and "state" not in response.json()
    assert _events(db) == []


def test_replay_after_the_fix_runs_the_event(
    ingress: tuple[TestClient, list[int], str], autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, queue, db = ingress
    url, sandbox = autotask
    with monkeypatch.context() as before_the_fix:
        _old_code(before_the_fix)
        body = webform_body(" t20261126.1")
        response = client.post("/webhooks/webform", content=body, headers=signed(body, WEBFORM_SECRET))
        assert response.status_code == 422, response.text
    (row,) = _events(db)
    assert row.state == "invalid" and row.ticket_number is None and queue == []
    # The fixed release is deployed; the operator replays what was kept.
    queued, message = store.replay(db, row.id or 0)
    assert queued, message
    (now,) = _events(db)
    assert (now.state, now.event_type, now.ticket_number, now.body) == (
        "accepted", "form.submitted", "T20261126.0001", body)
    assert now.external_id == row.headers["webhook-id"]  # a redelivery of the message is now a duplicate
    assert process_event(make_context(db, url), row.id or 0).state == "applied"
    assert sandbox.tickets[50001]["status"] != 1 and len(sandbox.notes) == 1
    redelivered = client.post("/webhooks/webform", content=body,
                              headers=signed(body, WEBFORM_SECRET, msg_id=row.headers["webhook-id"]))
    assert redelivered.status_code == 200 and redelivered.json()["status"] == "duplicate"


def test_replay_does_not_run_a_message_twice(
    ingress: tuple[TestClient, list[int], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The partner re-sent the message valid under the same webhook-id: the kept copy is not run too."""
    client, queue, db = ingress
    body = webform_body("T20261126.1")
    with monkeypatch.context() as before_the_fix:
        _old_code(before_the_fix)
        assert client.post("/webhooks/webform", content=body,
                           headers=signed(body, WEBFORM_SECRET, msg_id="msg_twice")).status_code == 422
    fixed = webform_body("T20261126.0001")
    accepted = client.post("/webhooks/webform", content=fixed, headers=signed(fixed, WEBFORM_SECRET, msg_id="msg_twice"))
    assert accepted.status_code == 202
    kept, valid = _events(db)
    assert (kept.state, valid.state) == ("invalid", "accepted") and queue == [valid.id]
    queued, message = store.replay(db, kept.id or 0)
    assert not queued and f"as event #{valid.id}" in message
    assert _events(db)[0].state == "invalid"


def test_signed_autotask_callout_with_a_bad_shape_is_kept(ingress: tuple[TestClient, list[int], str]) -> None:
    client, queue, db = ingress
    ticket = json.dumps({"Action": "Update", "Guid": "g-1", "EntityType": "Ticket", "Id": 50001,
                         "Fields": {"Status": 5}, "EventTime": "2026-11-26T10:00:00Z",
                         "SequenceNumber": 7, "PersonID": 29682885}).encode()
    # A ticket callout on the notes URL is well formed: recorded as ignored with the reason and answered
    # 2xx (issue 19.6: a 4xx would make Autotask retry it and count toward deactivating the webhook).
    wrong_url = client.post("/webhooks/autotask/notes", content=ticket, headers=autotask_signed(ticket))
    assert wrong_url.status_code == 202 and wrong_url.json()["status"] == "ignored"
    shapeless = json.dumps({"Action": "Update", "Id": "not a number"}).encode()
    bad = client.post("/webhooks/autotask/tickets", content=shapeless, headers=autotask_signed(shapeless))
    assert bad.status_code == 422 and bad.json()["fields"] and bad.json()["state"] == "invalid"
    unsigned = client.post("/webhooks/autotask/tickets", content=shapeless,
                           headers={"X-Hook-Signature": "sha1=AAAA", "Content-Type": "application/json"})
    assert unsigned.status_code == 401
    rows = _events(db)
    assert [(r.source, r.state, r.body) for r in rows] == [("autotask", "ignored", ticket),
                                                           ("autotask", "invalid", shapeless)]
    assert rows[0].reason is not None and "on the notes URL" in rows[0].reason
    assert queue == []
    # Replayed: the stored bytes still fail the shape check, so it stays invalid.
    queued, message = store.replay(db, rows[1].id or 0)
    assert not queued and "still invalid" in message
    with session_scope(db) as s:
        assert s.exec(select(func.count()).select_from(InboundEvent)
                      .where(InboundEvent.state == EventState.INVALID)).one() == 1

"""Autotask callouts at the ingress, on both audit databases (issues 19.4, 19.6 and 21.3-21.5).

Read however Autotask spells them; anything atrelay does not watch recorded ``ignored`` with its reason
and answered 2xx (so Autotask neither retries it nor counts it toward deactivating the webhook); times
clamped like partner times; one key per callout however escaped; stored without its signature, with
the form the signature covered recorded and counted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console
from sqlmodel import col, select

from connectors.autotask.callouts import parse_callout
from pipelines.audit import InboundEvent, RejectedRequest
from pipelines.db import session_scope
from tests.support import AUTOTASK_HOOK_SECRET
from workers.cli.reports import print_event
from workers.http.ingress import create_app
from workers.settings import load_settings

TICKETS, NOTES = "/webhooks/autotask/tickets", "/webhooks/autotask/notes"
ADMIN = "callout-intake-admin-token-0123456789"


@pytest.fixture
def ingress(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, list[int], str]]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    monkeypatch.setenv("ATRELAY_AUTOTASK_WEBHOOK_SECRET", AUTOTASK_HOOK_SECRET)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", ADMIN)
    queue: list[int] = []
    with TestClient(create_app(load_settings(), enqueue=queue.append)) as client:
        yield client, queue, db_url


def _signature(signed_bytes: bytes) -> str:
    digest = hmac.new(AUTOTASK_HOOK_SECRET.encode(), signed_bytes, hashlib.sha1).digest()
    return "sha1=" + base64.b64encode(digest).decode()


def _post(client: TestClient, path: str, body: bytes, signed_as: bytes | None = None,
          **headers: str) -> Any:
    sig = _signature(body if signed_as is None else signed_as)
    return client.post(path, content=body, headers={"X-Hook-Signature": sig, "Content-Type": "application/json",
                                                    **headers})


def _ticket(**members: Any) -> bytes:
    doc = {"Action": "Update", "Guid": "2b1e6d0c-0000-4000-8000-00000000a001", "EntityType": "Ticket",
           "Id": 50001, "Fields": {"Status": 5}, "EventTime": "2026-11-26T10:00:00Z", "SequenceNumber": 1,
           "PersonID": 29682885}
    doc.update(members)
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


def _events(db: str) -> list[InboundEvent]:
    with session_scope(db) as s:
        return list(s.exec(select(InboundEvent).order_by(col(InboundEvent.id))).all())


# ---- 21.3: however spelled --------------------------------------------------------------------------
@pytest.mark.parametrize("member", ["PersonId", "personid", "personID", "PERSONID"])
def test_the_person_is_read_however_spelled(ingress: tuple[TestClient, list[int], str], member: str) -> None:
    client, queue, db = ingress
    doc = json.loads(_ticket(PersonID=None))
    doc[member] = 29682885
    body = json.dumps(doc).encode()
    response = _post(client, TICKETS, body)
    assert response.status_code == 202 and response.json()["status"] == "accepted", response.text
    [event] = _events(db)
    assert event.state == "accepted" and queue == [event.id]
    assert parse_callout(event.body).person_id == 29682885  # what the run reads from the stored bytes


def test_every_top_level_member_is_read_case_insensitively(ingress: tuple[TestClient, list[int], str]) -> None:
    client, _, db = ingress
    body = json.dumps({"action": "Update", "GUID": "2b1e6d0c-0000-4000-8000-00000000a002", "entitytype": "ticket",
                       "ID": 50002, "fields": {"Status": 5}, "eventTime": "2026-11-26T10:00:00Z",
                       "sequenceNumber": 4, "personId": 7}).encode()
    assert _post(client, TICKETS, body).status_code == 202
    [event] = _events(db)
    payload = parse_callout(event.body)
    assert (payload.entity, payload.verb, payload.id, payload.person_id, payload.sequence_number) == (
        "ticket", "update", 50002, 7, 4)
    assert event.ticket_id == 50002 and event.external_id == "2b1e6d0c-0000-4000-8000-00000000a002:50002:4"


def test_plural_entity_names_are_the_same_entities(ingress: tuple[TestClient, list[int], str]) -> None:
    client, queue, db = ingress
    assert _post(client, TICKETS, _ticket(EntityType="Tickets")).json()["status"] == "accepted"
    note = json.dumps({"Action": "Create", "EntityType": "TicketNotes", "Id": 900031,
                       "Fields": {"TicketID": 50001, "Title": "x"}}).encode()
    assert _post(client, NOTES, note).json()["status"] == "accepted"
    assert [(e.state, e.external_id) for e in _events(db)][1] == ("accepted", "note:900031")
    assert len(queue) == 2


def test_a_member_given_twice_in_two_spellings_is_invalid(ingress: tuple[TestClient, list[int], str]) -> None:
    client, queue, db = ingress
    body = _ticket()[:-1] + b', "PersonId": 1}'
    response = _post(client, TICKETS, body)
    assert response.status_code == 422 and "PersonID given twice" in response.json()["error"]
    assert [e.state for e in _events(db)] == ["invalid"] and queue == []


def test_a_callout_without_a_person_is_accepted_with_none(ingress: tuple[TestClient, list[int], str]) -> None:
    client, queue, db = ingress
    assert _post(client, TICKETS, _ticket(PersonID=None)).status_code == 202
    [event] = _events(db)
    assert parse_callout(event.body).person_id is None and queue == [event.id]


# ---- 19.6 / 21.3: what atrelay does not watch is recorded, answered 2xx -------------------------------
@pytest.mark.parametrize(("path", "members", "why"), [
    (TICKETS, {"EntityType": "Contract"}, "EntityType 'Contract' is neither a ticket nor a ticket note"),
    (TICKETS, {"EntityType": "Company"}, "EntityType 'Company' is neither"),
    (TICKETS, {"EntityType": "TICKET "}, "EntityType 'TICKET ' is neither"),
    (TICKETS, {"EntityType": "TicketNote"}, "on the tickets URL, which takes ticket callouts only"),
    (NOTES, {"EntityType": "Ticket"}, "on the notes URL, which takes note callouts only"),
    (TICKETS, {"Action": "Frobnicate"}, "Action 'Frobnicate' is none of Create, Update, Delete"),
    (TICKETS, {"Action": "Delete"}, "a deleted ticket: no status to keep true"),
    (TICKETS, {"EntityType": "Tick\u0000et\n"}, "EntityType 'Tick\\x00et\\x0a' is neither"),
])
def test_what_atrelay_does_not_watch_is_recorded_ignored_with_2xx(
        ingress: tuple[TestClient, list[int], str], path: str, members: dict[str, str], why: str) -> None:
    client, queue, db = ingress
    body = _ticket(**members)
    response = _post(client, path, body)
    assert response.status_code == 202 and response.json()["status"] == "ignored", response.text
    assert why in response.json()["reason"]
    [event] = _events(db)
    assert event.state == "ignored" and event.reason is not None and why in event.reason
    assert event.body == body and queue == []  # recorded whole, never run
    again = _post(client, path, body)  # Autotask's redelivery: the same record
    assert again.status_code == 200 and again.json() == {"id": event.id, "status": "duplicate",
                                                         "reason": event.reason}
    assert len(_events(db)) == 1


# ---- 19.4: callout times clamped like partner times --------------------------------------------------
def test_a_callout_dated_far_ahead_is_clamped_and_the_clamp_recorded(
        ingress: tuple[TestClient, list[int], str]) -> None:
    client, _, db = ingress
    assert _post(client, TICKETS, _ticket(EventTime="9999-12-31T23:59:59Z")).status_code == 202
    assert _post(client, TICKETS, _ticket(EventTime="2026-11-26T10:00:00Z", SequenceNumber=2)).status_code == 202
    far, normal = _events(db)
    assert far.occurred_at is not None and far.occurred_at.year < 9999
    assert abs((far.occurred_at - far.received_at).total_seconds()) < 5
    assert far.headers["x-atrelay-clamped-from"].startswith("9999-12-31T23:59:59")
    assert normal.occurred_at is not None and normal.occurred_at.isoformat().startswith("2026-11-26T10:00:00")
    assert "x-atrelay-clamped-from" not in normal.headers


# ---- 19.6: one key per callout, however escaped ------------------------------------------------------
def test_an_escaped_and_an_unescaped_delivery_are_one_callout(ingress: tuple[TestClient, list[int], str]) -> None:
    """Without Guid and SequenceNumber the key is the body's digest: of its JSON value, not its bytes."""
    client, queue, db = ingress
    escaped = (b'{"Action":"Update","EntityType":"Ticket","Id":50001,'
               b'"Fields":{"Status":5,"Title":"R\\u0026D \\u002B \\u00E9"}}')
    plain = '{"Action":"Update","EntityType":"Ticket","Id":50001,"Fields":{"Status":5,"Title":"R&D + é"}}'.encode()
    first = _post(client, TICKETS, escaped)
    second = _post(client, TICKETS, plain, signed_as=escaped)  # as signed, but delivered unescaped
    assert first.status_code == 202 and second.status_code == 200, (first.text, second.text)
    assert second.json() == {"id": first.json()["id"], "status": "duplicate"}
    assert len(_events(db)) == 1 and len(queue) == 1


# ---- 21.4 / 21.5: the signature's form recorded and counted; the signature itself never stored ---------
def test_stored_headers_hold_no_signature_and_say_which_form_verified(
        ingress: tuple[TestClient, list[int], str]) -> None:
    client, _, db = ingress
    raw = _ticket(SequenceNumber=1)
    escaped = _ticket(SequenceNumber=2, Fields={"Title": "R\\u0026D"}).replace(b"\\\\u0026", b"\\u0026")
    plain = escaped.replace(b"\\u0026", b"&")
    forged = {"x-atrelay-signature": "escaped", "x-atrelay-clamped-from": "9999-12-31T00:00:00+00:00"}
    assert _post(client, TICKETS, raw, **forged).status_code == 202
    assert _post(client, TICKETS, plain, signed_as=escaped).status_code == 202
    first, second = _events(db)
    for event, signed_bytes, form in ((first, raw, "raw"), (second, escaped, "escaped")):
        assert event.headers["x-hook-signature"] == "(redacted)"
        assert _signature(signed_bytes).removeprefix("sha1=") not in json.dumps(event.headers)
        assert event.headers["x-atrelay-signature"] == form  # atrelay's own mark, not the sender's
        assert "x-atrelay-clamped-from" not in event.headers
    metrics = client.get("/metrics").text
    assert 'atrelay_autotask_callout_signatures_total{form="raw"} 1.0' in metrics
    assert 'atrelay_autotask_callout_signatures_total{form="escaped"} 1.0' in metrics
    # The event's story says it: on the dashboard and in `atrelay events show`.
    page = client.get(f"/ops/events/{second.id}", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert "signature verified over" in page and "escaped as Autotask" in page
    console = Console(record=True, width=300)
    assert print_event(db, console, first.id or 0)
    assert "signature verified over: the raw bytes, as delivered" in console.export_text()


# ---- 19.2: text a database cannot store, in an unsigned notice, never a 500 ----------------------------
@pytest.mark.parametrize("member", ["EntityType", "Guid"])
@pytest.mark.parametrize("value", ["Ticket\u0000", "\ud800", "a\nFAKE LINE"])
def test_an_unsigned_deactivation_notice_with_unstorable_text_is_recorded(
        ingress: tuple[TestClient, list[int], str], member: str, value: str) -> None:
    client, _, db = ingress
    notice = {"Action": "Deactivated", "Guid": "2b1e6d0c", "EntityType": "Ticket", "Id": 1}
    notice[member] = value
    body = json.dumps(notice).encode()  # \u0000 and \ud800 as JSON escapes, as a sender would write them
    response = client.post("/webhooks/autotask/deactivated", content=body,
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 202, response.text
    with session_scope(db) as s:
        [row] = s.exec(select(RejectedRequest)).all()
    assert row.reason.startswith("deactivation notice (unsigned) for ")
    assert "\x00" not in row.reason and "\n" not in row.reason and "\ud800" not in row.reason

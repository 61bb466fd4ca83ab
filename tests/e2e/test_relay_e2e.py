"""End to end over HTTP, through real Celery worker processes, on both deployments.

A signed partner request goes to a running ingress; a worker process applies it to the Autotask
sandbox; the audit tables show every step.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
from sqlmodel import col, select

from pipelines import store
from pipelines.audit import InboundEvent, OutboundAttempt, PipelineRun, RejectedRequest
from pipelines.db import session_scope
from tests.e2e.conftest import MC_DELAY_SECONDS
from tests.integration.helpers import mc_body, webform_body
from tests.stacks import Stack
from tests.support import MC_SECRET, WEBFORM_SECRET, WRONG_SECRET, sandbox_ticket, signed, wait_for

STATUS = {"Received Form Response": 29682844, "Sent from MC": 29682845, "Out of Scope": 29682846,
          "MC No Contact": 29682847, "Waiting Customer": 7}


def post(stack: Stack, path: str, body: bytes, secret: str) -> httpx.Response:
    return stack.post(path, body, secret)


def final(stack: Stack, event_id: int, timeout: float = 60) -> InboundEvent:
    return stack.final(event_id, timeout)


def test_webform_submission_end_to_end(stack: Stack) -> None:
    body = webform_body("T20261126.0001")
    response = post(stack, "/webhooks/webform", body, WEBFORM_SECRET)
    assert response.status_code == 202, response.text
    event_id = response.json()["id"]
    row = final(stack, event_id)
    assert (row.state, row.reason, row.ticket_id) == ("applied", None, 50001)
    view = sandbox_ticket(stack.sandbox_url, 50001)
    assert view["ticket"]["statusLabel"] == "Received Form Response"
    (note,) = view["notes"]
    assert "First name: Sam" in note["description"] and f"atrelay event #{event_id}" in note["description"]
    with session_scope(stack.db) as s:
        runs = list(s.exec(select(PipelineRun).where(PipelineRun.event_id == event_id)).all())
        attempts = list(s.exec(select(OutboundAttempt).where(OutboundAttempt.event_id == event_id)
                               .order_by(col(OutboundAttempt.id))).all())
    assert [(r.outcome, r.from_status, r.to_status) for r in runs] == [("applied", "New", "Received Form Response")]
    assert runs[0].worker and runs[0].worker.startswith("t") and "@" in runs[0].worker  # the node name
    paths = [(a.method, a.path.rsplit("/V1.0/", 1)[-1], a.status_code) for a in attempts]
    assert ("PATCH", "Tickets", 200) in paths and ("POST", "Tickets/50001/Notes", 200) in paths
    # The same delivery again is a duplicate and changes nothing.
    again = httpx.post(stack.ingress_url + "/webhooks/webform", content=body,
                       headers=signed(body, WEBFORM_SECRET, msg_id=row.external_id), timeout=10)
    assert again.status_code == 200 and again.json() == {"id": event_id, "status": "duplicate"}
    assert len(sandbox_ticket(stack.sandbox_url, 50001)["history"]) == 1


def test_wrong_secret_is_401_and_changes_nothing(stack: Stack) -> None:
    response = post(stack, "/webhooks/webform", webform_body("T20261126.0001"), WRONG_SECRET)
    assert response.status_code == 401
    assert "signature does not match" in response.json()["error"]
    with session_scope(stack.db) as s:
        assert s.exec(select(InboundEvent)).all() == []
        (rej,) = s.exec(select(RejectedRequest)).all()
    assert rej.status_code == 401 and rej.source == "webform"
    view = sandbox_ticket(stack.sandbox_url, 50001)
    assert view["ticket"]["status"] == 1 and view["notes"] == [] and view["history"] == []


def test_each_mission_control_type_reaches_its_status(dist: Stack) -> None:
    cases = [("mc.escalated", 50003, "Sent from MC"), ("mc.out_of_scope", 50005, "Out of Scope")]
    ids = []
    for kind, ticket, _ in cases:
        response = post(dist, "/webhooks/mission-control", mc_body(kind, ticket), MC_SECRET)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    for event_id, (_, ticket, status) in zip(ids, cases, strict=True):
        assert final(dist, event_id).state == "applied"
        view = sandbox_ticket(dist.sandbox_url, ticket)
        assert view["ticket"]["statusLabel"] == status
        (note,) = view["notes"]
        assert "MC technician: Alex" in note["description"] and "Contact attempts: 3" in note["description"]
    bad = post(dist, "/webhooks/mission-control", mc_body("mc.escalated", 50006), WEBFORM_SECRET)
    assert bad.status_code == 401
    assert sandbox_ticket(dist.sandbox_url, 50006)["history"] == []


def _children(db: str, cause: int) -> list[InboundEvent]:
    with session_scope(db) as s:
        return list(s.exec(select(InboundEvent).where(InboundEvent.caused_by_id == cause)).all())


def test_mc_no_contact_moves_on_to_waiting_customer(dist: Stack) -> None:
    response = post(dist, "/webhooks/mission-control", mc_body("mc.no_contact", "T20261126.0002"), MC_SECRET)
    cause = response.json()["id"]
    assert final(dist, cause).state == "applied"
    (child,) = wait_for(lambda: _children(dist.db, cause), what="the follow-up event")
    done = final(dist, child.id, timeout=MC_DELAY_SECONDS + 60)  # type: ignore[arg-type]
    assert (done.state, done.event_type, done.caused_by_id) == ("applied", "mc.no_contact.follow_up", cause)
    view = sandbox_ticket(dist.sandbox_url, 50002)
    assert view["ticket"]["statusLabel"] == "Waiting Customer"
    assert [(h["from"], h["to"]) for h in view["history"]] == [
        (1, STATUS["MC No Contact"]), (STATUS["MC No Contact"], STATUS["Waiting Customer"])]
    assert len(view["notes"]) == 2
    with session_scope(dist.db) as s:
        runs = {r.event_id: r for r in s.exec(select(PipelineRun)).all()}
    assert (runs[cause].from_status, runs[cause].to_status) == ("New", "MC No Contact")
    assert (runs[child.id].from_status, runs[child.id].to_status) == ("MC No Contact", "Waiting Customer")  # type: ignore[index]


def test_mc_follow_up_skipped_after_a_human_change(dist: Stack) -> None:
    response = post(dist, "/webhooks/mission-control", mc_body("mc.no_contact", 50002), MC_SECRET)
    cause = response.json()["id"]
    wait_for(lambda: sandbox_ticket(dist.sandbox_url, 50002)["ticket"]["status"] == STATUS["MC No Contact"],
             what="MC No Contact applied")
    # A technician picks the ticket up within the follow-up delay.
    httpx.post(f"{dist.sandbox_url}/_sandbox/tickets/50002/status", json={"status": "In Progress"})
    assert final(dist, cause).state == "applied"
    (child,) = wait_for(lambda: _children(dist.db, cause), what="the follow-up event")
    done = final(dist, child.id, timeout=MC_DELAY_SECONDS + 60)  # type: ignore[arg-type]
    assert (done.state, done.reason) == ("skipped", "status-changed")
    view = sandbox_ticket(dist.sandbox_url, 50002)
    assert view["ticket"]["statusLabel"] == "In Progress" and len(view["notes"]) == 1


def test_unknown_ticket_is_dead_and_visible(dist: Stack) -> None:
    response = post(dist, "/webhooks/webform", webform_body("T20200101.0099"), WEBFORM_SECRET)
    row = final(dist, response.json()["id"])
    assert row.state == "dead" and (row.reason or "").startswith("ticket-not-found")


def test_out_of_order_delivery_never_regresses(dist: Stack) -> None:
    """A late, older event is skipped as stale once a newer transition was applied."""
    newer = store.insert_event(dist.db, store.NewEvent(
        source="timezest", external_id="sreq_LATE01:scheduled", event_type="timezest.scheduled",
        body=json.dumps(_tz_request("sreq_LATE01", "scheduled", 50004, at=1795700000)).encode(), headers={},
        ticket_id=50004, occurred_at=datetime.fromtimestamp(1795700000, tz=UTC)))[0]
    dist.enqueue(newer)
    assert final(dist, newer).state == "applied"
    older = store.insert_event(dist.db, store.NewEvent(
        source="timezest", external_id="sreq_LATE01:sent", event_type="timezest.link_sent",
        body=json.dumps(_tz_request("sreq_LATE01", "sent", 50004, at=1795690000)).encode(), headers={},
        ticket_id=50004, occurred_at=datetime.fromtimestamp(1795690000, tz=UTC)))[0]
    dist.enqueue(older)
    row = final(dist, older)
    assert row.state == "skipped" and (row.reason or "").startswith("stale")
    assert sandbox_ticket(dist.sandbox_url, 50004)["ticket"]["statusLabel"] == "Scheduled"


def _tz_request(rid: str, status: str, ticket: int, at: int) -> dict[str, object]:
    return {"id": rid, "object": "scheduling_request", "status": status,
            "associated_entities": [{"type": "autotask/ticket", "id": ticket}],
            "end_user_name": "Jane Example", "end_user_email": "jane@example.com", "scheduled_agents": [],
            "scheduled_at": at if status == "scheduled" else None, "created_at": at - 100, "updated_at": at,
            "unknown_future_field": uuid.uuid4().hex}

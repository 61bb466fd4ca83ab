"""Right status in real sequences, end to end on both deployments (real workers, over HTTP)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.integration.helpers import mc_body, webform_body
from tests.stacks import Stack
from tests.support import MC_SECRET, WEBFORM_SECRET, sandbox_ticket, signed

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive


def atrelay_notes(stack: Stack, ticket: int) -> list[str]:
    return [n["description"] for n in sandbox_ticket(stack.sandbox_url, ticket)["notes"]
            if "[atrelay:event:" in n["description"]]


def test_a_late_mc_escalation_never_overwrites_a_technician(stack: Stack) -> None:
    """MC escalated two hours ago; the message arrives after a technician completed the ticket."""
    httpx.post(f"{stack.sandbox_url}/_sandbox/tickets/50002/status",
               json={"status": "Complete", "as": "technician"}).raise_for_status()
    when = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    response = stack.post("/webhooks/mission-control", mc_body("mc.escalated", 50002, when), MC_SECRET)
    assert response.status_code == 202, response.text
    row = stack.final(response.json()["id"])
    assert row.state == "skipped" and row.reason is not None and row.reason.startswith("superseded:"), row.reason
    assert sandbox_ticket(stack.sandbox_url, 50002)["ticket"]["statusLabel"] == "Complete"
    (note,) = atrelay_notes(stack, 50002)
    assert "NOT applied" in note and "User did not answer" in note


def test_a_second_form_submission_still_reaches_the_ticket(stack: Stack) -> None:
    """The status is already right after the first; the CORRECTION's answers still make one note."""
    first = stack.post("/webhooks/webform", webform_body(50001), WEBFORM_SECRET)
    assert stack.final(first.json()["id"]).state == "applied"
    body = json.loads(webform_body(50001, when="2026-11-26T09:45:00Z"))
    body["data"]["answers"] = {"CORRECTION": "start date is 2026-12-08"}
    second = stack.post("/webhooks/webform", json.dumps(body).encode(), WEBFORM_SECRET)
    row = stack.final(second.json()["id"])
    assert (row.state, row.reason) == ("applied", "already-set: note only")
    notes = atrelay_notes(stack, 50001)
    assert len(notes) == 2 and "CORRECTION: start date is 2026-12-08" in notes[1]
    # The very same delivery again (same webhook-id) is a true duplicate: nothing more is written.
    payload = json.dumps(body).encode()
    again = httpx.post(stack.ingress_url + "/webhooks/webform", content=payload,
                       headers=signed(payload, WEBFORM_SECRET, msg_id=row.external_id), timeout=10)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert len(atrelay_notes(stack, 50001)) == 2

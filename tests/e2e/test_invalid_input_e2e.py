"""Issue 11 item 5 end to end, on the embedded default and on Redis + PostgreSQL (real ingress and
workers): a ticket number in a slightly wrong form reaches its ticket, and a signed body that still
fails validation is kept as an ``invalid`` event instead of being lost."""

from __future__ import annotations

from tests.integration.helpers import webform_body
from tests.stacks import Stack
from tests.support import sandbox_ticket


def test_slightly_wrong_ticket_number_is_applied(stack: Stack) -> None:
    response = stack.post("/webhooks/webform", webform_body(" t20261126.1"))
    assert response.status_code == 202, response.text  # before the fix: 422, and nothing kept
    event = stack.final(response.json()["id"])
    assert (event.state, event.ticket_number) == ("applied", "T20261126.0001"), event.reason
    ticket = sandbox_ticket(stack.sandbox_url, 50001)
    assert ticket["ticket"]["statusLabel"] == "Received Form Response"


def test_signed_invalid_body_is_kept_not_run(stack: Stack) -> None:
    body = webform_body("ticket 50001, please")
    response = stack.post("/webhooks/webform", body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["fields"][0]["field"] == "data.ticket_number" and answer["state"] == "invalid"
    row = stack.final(answer["id"])
    assert (row.state, row.event_type, row.body) == ("invalid", "invalid", body)
    assert sandbox_ticket(stack.sandbox_url, 50001)["ticket"]["statusLabel"] != "Received Form Response"

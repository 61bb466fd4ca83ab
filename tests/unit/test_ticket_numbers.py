"""Ticket numbers in a slightly wrong form are read as the one ticket they can only mean (issue 11, item 5)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from connectors.common.payloads import TicketRef, normalise_ticket_number
from connectors.mission_control.parse import parse_payload as parse_mc
from connectors.webform.parse import parse_payload as parse_form


@pytest.mark.parametrize(("given", "read"), [
    ("T20261126.0001", "T20261126.0001"),
    (" T20261126.0001", "T20261126.0001"),   # pasted with a space
    ("T20261126.0001\n", "T20261126.0001"),  # a template's line end
    ("t20261126.0001", "T20261126.0001"),    # lower-case letter
    ("T20261126.1", "T20261126.0001"),       # sequence not padded
    ("T20261126.42", "T20261126.0042"),
    (" t20261126.1 ", "T20261126.0001"),
    ("T20261126.12345", "T20261126.12345"),  # a day past 9,999 tickets: already right
])
def test_unambiguous_spellings_are_normalised(given: str, read: str) -> None:
    assert normalise_ticket_number(given) == read
    assert TicketRef(ticket_number=given).ticket_number == read


@pytest.mark.parametrize("given", [
    "20261126.0001",     # no T: could be anything
    "T2026112.0001",     # a date of 7 digits
    "T20261126",         # no sequence
    "T20261126.",
    "T 20261126.0001",   # inner space
    "T20261126.0001x",
    "T\uff120261126.0001",  # a full-width digit
    "",
])
def test_anything_else_is_still_refused(given: str) -> None:
    with pytest.raises(ValidationError):
        TicketRef(ticket_number=given)


def test_both_partners_payloads_normalise() -> None:
    data = {"ticket_number": " t20261126.7", "form": "new-user"}
    form = {"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z", "data": data}
    mc = {"type": "mc.escalated", "timestamp": "2026-11-26T09:30:00Z", "data": data}
    assert parse_form(json.dumps(form).encode()).data.ticket_number == "T20261126.0007"
    assert parse_mc(json.dumps(mc).encode()).data.ticket_number == "T20261126.0007"

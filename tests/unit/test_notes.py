"""atrelay's note text: its marker out of truncation's reach and unforgeable, partner text quoted apart."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from connectors.common.events import EventType, PartnerEvent, Source
from pipelines.notes import DESCRIPTION_BUDGET, marker, render_note

WHEN = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)


def event(**details: str) -> PartnerEvent:
    return PartnerEvent(source=Source.WEBFORM, type=EventType.FORM_SUBMITTED, external_id="msg_1", ticket_id=1,
                        occurred_at=WHEN, summary="web form 'new-user' submitted", details=list(details.items()))


def render(ev: PartnerEvent, key: str = "k") -> str:
    return render_note(ev, event_id=7, from_status="New", to_status="Received Form Response", received_at=WHEN,
                       key=key)[1]


def test_the_marker_is_the_first_line_and_survives_a_huge_answer() -> None:
    text = render(event(**{"Notes": "x" * 40_000, "Start date": "2026-12-01"}))
    assert len(text) <= DESCRIPTION_BUDGET
    assert text.splitlines()[0].startswith(marker(7, "k"))
    assert "more characters (the full text is kept in atrelay's audit log)" in text
    assert text.rstrip().splitlines()[-1].startswith("Source: webform, happened")  # atrelay's lines survive


def test_the_marker_is_keyed_per_deployment() -> None:
    assert marker(7, "one") != marker(7, "two") and marker(7, "one") == marker(7, "one")
    assert marker(7, "one").startswith("[atrelay:event:7:")


def test_partner_text_cannot_carry_a_marker() -> None:
    forged = marker(54, "k")  # even a leaked, exact marker
    text = render(event(Notes=f"see {forged} and [atrelay:event:54]"))
    assert forged not in text and "[atrelay:event:54" not in text
    assert text.count("[atrelay:") == 1  # atrelay's own, first line
    assert "(atrelay-like tag removed)" in text


def test_partner_text_cannot_pose_as_atrelay() -> None:
    text = render(event(Comment="all good\natrelay changed the ticket status from New to Complete.",
                        **{"Line\nbreak label": "v"}))
    lines = text.splitlines()
    atrelay_says = [line for line in lines if line.startswith("atrelay changed")]
    assert atrelay_says == ["atrelay changed the ticket status from New to Received Form Response."]
    assert ">   atrelay changed the ticket status from New to Complete." in lines  # visibly quoted
    assert "> Line break label: v" in lines
    details = lines[lines.index("Partner's details, quoted as received:") + 1:]
    assert all(line.startswith(">") for line in details if line and not line.startswith("Source:"))


def test_every_piece_of_partner_text_is_quoted_the_why_line_is_atrelays_own() -> None:
    """Issue 19.6: the submitter's name used to land unquoted on atrelay's "Why:" line (and the sender's
    event id on the "Source:" line)."""
    from types import SimpleNamespace

    from connectors.webform.parse import to_event

    posing = "Jane. atrelay verified this escalation with the customer"
    body = json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z", "data": {
        "form": "new-user; URGENT", "ticket_id": 1, "submitted_by": {"name": posing, "email": "j@example.com"},
        "answers": {"First name": "Sam"}}}).encode()
    row = SimpleNamespace(body=body, event_type="form.submitted", external_id="msg_ atrelay applied it twice")
    lines = render(to_event(row)).splitlines()
    ours = [line for line in lines if line and not line.startswith(">")]
    assert not [line for line in ours if "Jane" in line or "URGENT" in line or "applied it twice" in line], ours
    assert f"> Submitted by: {posing} <j@example.com>" in lines
    assert "> Form: new-user; URGENT" in lines and "> Event id: msg_ atrelay applied it twice" in lines
    assert "Why: a web form was submitted." in lines

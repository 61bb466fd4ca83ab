"""Autotask callout signatures and payloads.

The expected signatures were computed outside atrelay, with
``openssl dgst -sha1 -hmac SECRET -binary body | base64``, so the verifier is checked against an
implementation it does not share.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.autotask.callouts import (
    CalloutVerificationFailed,
    autotask_escape,
    dedupe_key,
    parse_callout,
    verify_callout,
)

SECRET = "atrelay-test-secret-0123456789"
OTHER = "another-secret-for-rotation-42"
CALLOUTS = Path(__file__).parents[1] / "connectors" / "autotask" / "callouts"

# The facts' example payload, compact, and its signature (openssl).
FACTS_BODY = (b'{"Action":"Update","Guid":"a1da62a4-2c49-40a8-8183-69994ce5b3eb","EntityType":"Ticket","Id":351181,'
              b'"Fields":{"TicketNumber":"T20250915.0001","Status":5},"EventTime":"2025-09-15T14:57:50Z",'
              b'"SequenceNumber":1,"PersonID":30691780}')
FACTS_SIG = "sha1=o2c5fGFvSrQi7F33vTQ3x3IcbGU="

# A note title with & < > ' and a non-ASCII letter, as Autotask serializes it (escaped), and the
# same JSON as a client that does not escape would send it.
ESCAPED = (b'{"Action":"Create","EntityType":"TicketNote","Id":900017,"Fields":{"TicketID":50001,'
           b'"Title":"New User Form \\u0026 laptop \\u003cFin\\u003e \\u0027urgent\\u0027 - Ren\\u00e9e"}}')
ESCAPED_SIG = "sha1=cgMGeWPtC5oJQc01nNWgAajxrk0="
PLAIN = ('{"Action":"Create","EntityType":"TicketNote","Id":900017,"Fields":{"TicketID":50001,'
         '"Title":"New User Form & laptop <Fin> \'urgent\' - Renée"}}').encode()
PLAIN_SIG = "sha1=9C2oBWVBZHEymVWCQ8604UjfYKA="


def test_known_vector_verifies() -> None:
    verify_callout(FACTS_BODY, {"X-Hook-Signature": FACTS_SIG}, [SECRET])


def test_header_name_is_case_insensitive_and_scheme_too() -> None:
    verify_callout(FACTS_BODY, {"x-hook-signature": "SHA1=" + FACTS_SIG.split("=", 1)[1]}, [SECRET])


def test_escaped_body_verifies_as_received() -> None:
    verify_callout(ESCAPED, {"X-Hook-Signature": ESCAPED_SIG}, [SECRET])


def test_unescaped_body_verifies_after_autotask_escaping() -> None:
    """Signed over Autotask's escaped serialization, delivered with the characters as-is."""
    verify_callout(PLAIN, {"X-Hook-Signature": ESCAPED_SIG}, [SECRET])


def test_unescaped_body_signed_as_is_verifies() -> None:
    verify_callout(PLAIN, {"X-Hook-Signature": PLAIN_SIG}, [SECRET])


def test_escaping_matches_the_escaped_serialization() -> None:
    assert autotask_escape(PLAIN.decode()).encode() == ESCAPED
    # Beyond the BMP: a surrogate pair, as .NET writes it (inside a JSON string: only strings are escaped).
    assert autotask_escape('"😀"') == '"\\ud83d\\ude00"'


@pytest.mark.parametrize("body", [
    FACTS_BODY.replace(b'"Status":5', b'"Status":1'),  # tampered value
    FACTS_BODY + b" ",  # one byte more
    FACTS_BODY.replace(b'"Id":351181,', b'"Id":351181, '),  # re-serialized spacing
])
def test_tampered_body_is_refused(body: bytes) -> None:
    with pytest.raises(CalloutVerificationFailed, match="does not match"):
        verify_callout(body, {"X-Hook-Signature": FACTS_SIG}, [SECRET])


@pytest.mark.parametrize(("headers", "message"), [
    ({}, "missing"),
    ({"X-Hook-Signature": "o2c5fGFvSrQi7F33vTQ3x3IcbGU="}, "sha1="),
    ({"X-Hook-Signature": "md5=o2c5fGFvSrQi7F33vTQ3x3IcbGU="}, "sha1="),
    ({"X-Hook-Signature": "sha1=!!not base64!!"}, "base64"),
])
def test_malformed_signatures_are_refused(headers: dict[str, str], message: str) -> None:
    with pytest.raises(CalloutVerificationFailed, match=message):
        verify_callout(FACTS_BODY, headers, [SECRET])


def test_rotation_accepts_new_and_old_secret() -> None:
    verify_callout(FACTS_BODY, {"X-Hook-Signature": FACTS_SIG}, [OTHER, SECRET])
    with pytest.raises(CalloutVerificationFailed):
        verify_callout(FACTS_BODY, {"X-Hook-Signature": FACTS_SIG}, [OTHER])  # rotated out


def test_no_secret_configured_refuses() -> None:
    with pytest.raises(CalloutVerificationFailed, match="no Autotask webhook secret"):
        verify_callout(FACTS_BODY, {"X-Hook-Signature": FACTS_SIG}, [])


def test_documented_payload_parses() -> None:
    payload = parse_callout((CALLOUTS / "ticket-update-facts-example.json").read_bytes())
    assert (payload.action, payload.entity_type, payload.id, payload.person_id) == ("Update", "Ticket", 351181,
                                                                                     30691780)
    assert payload.field("status") == 5 and payload.field("TICKETNUMBER") == "T20250915.0001"
    assert payload.ticket_id == 351181 and not payload.is_note
    assert payload.event_time is not None and payload.event_time.tzinfo is not None


def test_note_payload_names_its_ticket() -> None:
    payload = parse_callout((CALLOUTS / "note-create-written.json").read_bytes())
    assert payload.is_note and payload.ticket_id == 50001 and payload.id == 900017


def test_dedupe_key_is_stable_per_callout() -> None:
    ticket = parse_callout(FACTS_BODY)
    assert dedupe_key(ticket, FACTS_BODY) == "a1da62a4-2c49-40a8-8183-69994ce5b3eb:351181:1"
    note = parse_callout((CALLOUTS / "note-create-written.json").read_bytes())
    assert dedupe_key(note, b"") == "note:900017"  # the same key reconciliation gives the note
    bare = b'{"Action":"Update","EntityType":"Ticket","Id":5,"Fields":{}}'
    assert dedupe_key(parse_callout(bare), bare) == dedupe_key(parse_callout(bare), bare)
    assert dedupe_key(parse_callout(bare), bare).startswith("sha256:")

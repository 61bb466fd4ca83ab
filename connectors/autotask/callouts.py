"""Autotask's own webhook callouts (ticket and ticket-note webhooks): verify and parse.

Signature (facts §8): ``X-Hook-Signature: sha1=<base64 HMAC-SHA1 of the body, keyed with the
webhook's secretKey>``. Autotask signs *its own* serialization, which writes ``& < > '`` and every
non-ASCII character as ``\\uXXXX`` escapes. A proxy or a test client may deliver the same JSON with
those characters unescaped, so a body verifies if its raw bytes do, or if the bytes do once that
escaping is applied to the raw text. The parsed JSON is never re-serialized to verify: key order,
spacing and number formats would differ, and a verifier that normalises can be fooled.

Payload: ``{"Action", "Guid", "EntityType", "Id", "Fields": {PascalCase: value}, "EventTime",
"SequenceNumber", "PersonID"}``. Which fields appear is not documented for certain, so ``Fields`` is a
hint: the pipeline re-reads what a rule needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SIGNATURE_HEADER",
    "CalloutPayload",
    "CalloutVerificationFailed",
    "autotask_escape",
    "dedupe_key",
    "parse_callout",
    "verify_callout",
]

SIGNATURE_HEADER = "x-hook-signature"
MAX_SECRET_CHARS = 64  # TicketWebhooks.secretKey is 64 characters at most
_ESCAPED = re.compile(r"[&<>'\u0080-\U0010ffff]")


class CalloutVerificationFailed(Exception):
    """The callout's signature is missing, malformed or does not match any configured secret."""


def _utf16_escapes(char: str, upper: bool) -> str:
    raw = char.encode("utf-16-be")
    units = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]
    return "".join(f"\\u{u:04X}" if upper else f"\\u{u:04x}" for u in units)


def autotask_escape(text: str, *, upper: bool = False) -> str:
    """``text`` with ``& < > '`` and non-ASCII characters as JSON ``\\uXXXX`` escapes.

    Outside JSON strings these characters cannot occur in valid JSON, so escaping the whole text is
    the same as escaping inside strings. Characters beyond the BMP become surrogate pairs, as .NET
    writes them. Hex case differs between .NET serializers, so both are tried.
    """
    return _ESCAPED.sub(lambda m: _utf16_escapes(m.group(0), upper), text)


def _candidates(body: bytes) -> list[bytes]:
    out = [body]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return out
    for upper in (False, True):
        escaped = autotask_escape(text, upper=upper).encode("ascii")
        if escaped not in out:
            out.append(escaped)
    return out


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify_callout(body: bytes, headers: Mapping[str, str], secrets: list[str]) -> None:
    """Raise :class:`CalloutVerificationFailed` unless one secret signed ``body`` (constant-time compare)."""
    if not secrets:
        raise CalloutVerificationFailed("no Autotask webhook secret is configured")
    given = _header(headers, SIGNATURE_HEADER)
    if not given:
        raise CalloutVerificationFailed("missing X-Hook-Signature header")
    scheme, sep, value = given.strip().partition("=")
    if not sep or scheme.strip().lower() != "sha1":
        raise CalloutVerificationFailed("X-Hook-Signature must look like 'sha1=<base64>'")
    try:
        expected = base64.b64decode(value.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise CalloutVerificationFailed("X-Hook-Signature is not valid base64") from None
    ok = False
    for candidate in _candidates(body):
        for secret in secrets:
            digest = hmac.new(secret.encode("utf-8"), candidate, hashlib.sha1).digest()
            ok |= hmac.compare_digest(digest, expected)  # no early exit: same work whatever matches
    if not ok:
        raise CalloutVerificationFailed("signature does not match")


class CalloutPayload(BaseModel):
    """One callout as Autotask posts it; unknown members are kept, absent ones tolerated."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    action: str = Field(alias="Action", max_length=32)
    guid: str | None = Field(default=None, alias="Guid", max_length=100)
    entity_type: str = Field(alias="EntityType", max_length=64)
    id: int = Field(alias="Id", gt=0, lt=2**53)
    fields: dict[str, Any] = Field(default_factory=dict, alias="Fields")
    event_time: datetime | None = Field(default=None, alias="EventTime")
    sequence_number: int | None = Field(default=None, alias="SequenceNumber", ge=0, lt=2**63)
    person_id: int | None = Field(default=None, alias="PersonID", lt=2**53)

    def field(self, name: str) -> Any:
        """A member of ``Fields`` by name, case-insensitively (PascalCase on the wire)."""
        wanted = name.lower()
        return next((v for k, v in self.fields.items() if k.lower() == wanted), None)

    @property
    def is_note(self) -> bool:
        return self.entity_type.lower() in ("ticketnote", "ticketnotes")

    @property
    def ticket_id(self) -> int | None:
        """The ticket concerned: the entity itself, or a note's ``TicketID``."""
        if not self.is_note:
            return self.id
        value = self.field("TicketID")
        return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None


def parse_callout(body: bytes) -> CalloutPayload:
    return CalloutPayload.model_validate_json(body)


def dedupe_key(payload: CalloutPayload, body: bytes) -> str:
    """One key per callout, however often Autotask delivers it.

    Notes are keyed by note id, so a note found by reconciliation and its late callout are one event.
    Ticket updates are keyed by (webhook GUID, ticket id, sequence number); without a sequence
    number, by the body's hash (the same body twice is the same callout).
    """
    if payload.is_note and payload.action.lower() == "create":
        return f"note:{payload.id}"
    if payload.guid and payload.sequence_number is not None:
        return f"{payload.guid}:{payload.id}:{payload.sequence_number}"
    return "sha256:" + hashlib.sha256(body).hexdigest()

"""Autotask's own callouts: ``/webhooks/autotask/{tickets,notes,deactivated}``.

Thin like the partner webhooks: cap the body, verify ``X-Hook-Signature`` over the raw bytes (or their
.NET escaping), check the shape, record, commit, enqueue, answer 202 (well inside Autotask's 10-second
timeout). A callout delivered twice is one event (200 "duplicate"). Every refusal is recorded with its
reason; a signed callout whose JSON fails the shape check is also kept whole as an ``invalid`` event
(pipelines/invalid.py); a signed callout about an entity or action atrelay does not watch (or sent to
the other URL) is recorded ``ignored`` with the reason and answered 202, so Autotask neither retries
it nor counts it toward deactivating the webhook. Which form the signature covered is recorded in
the event's headers (``x-atrelay-signature``); the signature itself is not.

The CPU work on a body (signature, JSON) runs off the event loop when the body is large
(workers/http/offload.py): a flood of large bogus-signature bodies must not delay the genuine callouts.

Deactivation notices cannot be authenticated like callouts (Autotask signs callouts, not deactivation
notices), so they are only recorded
(in the capped rejections table, so an unauthenticated flood cannot grow the database) and shown
by ``atrelay doctor`` and ``atrelay autotask webhooks status``; they never change any state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from connectors.autotask.callouts import (
    CalloutVerificationFailed,
    SignatureForm,
    dedupe_key,
    verify_callout,
)
from connectors.common.events import Observation, Source
from connectors.common.text import one_line
from pipelines import intake, store
from pipelines.audit import EventState
from pipelines.autotask_status import DEACTIVATION_SOURCE
from pipelines.clock import SIGNATURE_FORM_HEADER, own_headers
from pipelines.db import utcnow
from pipelines.invalid import INVALID_TYPE, CheckedCallout, InvalidBody, callout_key, check_callout, ignored_key
from workers.http.body import Refused, declared_size, read_body
from workers.http.offload import Offload
from workers.settings import Settings, webhook_secrets

__all__ = ["make_autotask_router"]

log = logging.getLogger("atrelay.ingress")


@dataclass(frozen=True)
class _Examined:
    """What the CPU work on one callout found: the signature's form, then the checks' result or fault."""

    form: SignatureForm
    checked: CheckedCallout | None = None
    key: str = ""  # the callout's dedupe key, when it passed the checks
    invalid: InvalidBody | None = None


def _examine(body: bytes, headers: Mapping[str, str], secrets: list[str], *, note: bool, received_at: datetime,
             max_skew_seconds: float) -> _Examined:
    """Signature, JSON, shape, time and entity of one callout (all the CPU work, so it can run off the
    event loop): :class:`Refused` when the signature fails; a signed body that fails the rest is
    returned with the precise reason."""
    try:
        form = verify_callout(body, headers, secrets)
    except CalloutVerificationFailed as exc:
        raise Refused(401, f"signature rejected: {exc}") from None
    try:
        checked = check_callout(body, note=note, received_at=received_at, max_skew_seconds=max_skew_seconds)
    except InvalidBody as bad:
        return _Examined(form, invalid=bad)
    return _Examined(form, checked, dedupe_key(checked.payload, body))


def _deactivation(body: bytes, headers: Mapping[str, str], secrets: list[str]) -> tuple[str, str]:
    """(signed or unsigned, what the notice names: entity and webhook GUID, shown escaped)."""
    try:
        verify_callout(body, headers, secrets)
        signed = "signed"
    except CalloutVerificationFailed:
        signed = "unsigned"
    what = "?"
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            # Unauthenticated text: escaped and cut, so NUL, a lone surrogate or a line break cannot
            # break the record (PostgreSQL refuses NUL) or forge a line where it is shown.
            what = f"{one_line(data.get('EntityType', '?'), 40)} webhook {one_line(data.get('Guid', '?'), 100)}"
    except (ValueError, RecursionError):
        pass
    return signed, what


def make_autotask_router(cfg: Settings, enqueue: Callable[[int], None],
                         group: intake.GroupIntake | None = None, offload: Offload | None = None) -> APIRouter:
    db = cfg.effective_database_url
    # The ingress passes its own, so callouts and partner webhooks share one group commit (and one
    # limit on large bodies examined off the event loop).
    accepted = group or intake.GroupIntake(db, enqueue)
    cpu = offload or Offload()
    router = APIRouter()
    cached: list[list[str]] = []

    def secrets() -> list[str]:
        if not cached:
            cached.append(webhook_secrets(cfg, "autotask")[0])
        return cached[0]

    async def refuse(request: Request, rej: Refused, source: str = "autotask",
                     kept: dict[str, Any] | None = None) -> JSONResponse:
        await run_in_threadpool(
            store.record_rejection, db, source=source, status_code=rej.status, reason=rej.reason,
            webhook_id=None, remote=request.client.host if request.client else None, body_size=declared_size(request),
            keep=cfg.rejections_keep,
        )
        return JSONResponse({"error": rej.reason, **rej.extra, **(kept or {})}, status_code=rej.status)

    async def accept(request: Request, *, note: bool) -> JSONResponse:
        received = utcnow()
        try:
            body = await read_body(request, cfg.max_body_bytes)
            seen = await cpu.run(len(body), lambda: _examine(
                body, request.headers, secrets(), note=note, received_at=received,
                max_skew_seconds=cfg.max_clock_skew_seconds))
        except Refused as rej:
            return await refuse(request, rej)
        marks = {SIGNATURE_FORM_HEADER: seen.form}
        kind = (Observation.NOTE_ADDED if note else Observation.TICKET_CHANGED).value
        if seen.invalid is not None:
            bad = seen.invalid
            if bad.status != 422:  # not JSON at all: refused and recorded only
                return await refuse(request, Refused(bad.status, bad.reason))
            # Signed by Autotask, so authenticated: JSON of the wrong shape is kept whole as an invalid
            # event (replayable after a fix, pipelines/invalid.py); Autotask still gets the 422.
            kept = store.NewEvent(
                source=Source.AUTOTASK.value, external_id=callout_key(body, note=note),
                event_type=INVALID_TYPE, body=body, headers=own_headers(request.headers, None, marks),
                state=EventState.INVALID, reason=bad.reason[:2000])
            kept_id, _ = await accepted.accept(kept)
            fields = {"fields": bad.fields} if bad.fields else None
            return await refuse(request, Refused(bad.status, bad.reason, fields),
                                kept={"id": kept_id, "state": "invalid"})
        checked = seen.checked
        assert checked is not None
        headers = own_headers(request.headers, checked.clamped_from, marks)
        if checked.ignored is not None:
            # An entity or action atrelay does not watch: recorded with the reason and answered 2xx, since
            # any other answer makes Autotask retry and count toward deactivating the webhook.
            new = store.NewEvent(
                source=Source.AUTOTASK.value, external_id=ignored_key(seen.key, note=note), event_type=kind,
                body=body, headers=headers, occurred_at=checked.occurred_at, state=EventState.IGNORED,
                reason=checked.ignored[:2000])
            event_id, created = await accepted.accept(new)
            log.info("autotask.callout.ignored", extra={"event_id": event_id, "reason": checked.ignored})
            return JSONResponse({"id": event_id, "status": "ignored" if created else "duplicate",
                                 "reason": checked.ignored}, status_code=202 if created else 200)
        new = store.NewEvent(
            source=Source.AUTOTASK.value, external_id=seen.key, event_type=kind, body=body, headers=headers,
            ticket_id=checked.payload.ticket_id, occurred_at=checked.occurred_at,
        )
        event_id, created = await accepted.accept(new)
        return JSONResponse({"id": event_id, "status": "accepted" if created else "duplicate"},
                            status_code=202 if created else 200)

    @router.post("/webhooks/autotask/tickets", status_code=202,
                 summary="Receive an Autotask ticket webhook callout (X-Hook-Signature)",
                 responses={200: {"description": "duplicate callout"}, 400: {}, 401: {}, 413: {}, 422: {}})
    async def autotask_tickets(request: Request) -> JSONResponse:
        return await accept(request, note=False)

    @router.post("/webhooks/autotask/notes", status_code=202,
                 summary="Receive an Autotask ticket-note webhook callout (X-Hook-Signature)",
                 responses={200: {"description": "duplicate callout"}, 400: {}, 401: {}, 413: {}, 422: {}})
    async def autotask_notes(request: Request) -> JSONResponse:
        return await accept(request, note=True)

    @router.post("/webhooks/autotask/deactivated", status_code=202,
                 summary="Autotask says a webhook was deactivated (recorded and shown; changes nothing)")
    async def autotask_deactivated(request: Request) -> JSONResponse:
        try:
            body = await read_body(request, cfg.max_body_bytes)
        except Refused as rej:
            return await refuse(request, rej, DEACTIVATION_SOURCE)
        signed, what = await cpu.run(len(body), lambda: _deactivation(body, request.headers, secrets()))
        digest = hashlib.sha256(body).hexdigest()[:16]
        reason = (f"deactivation notice ({signed}) for {what} at {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; "
                  "nothing changed: run `atrelay autotask webhooks status`")
        log.warning("autotask.webhook.deactivation_notice", extra={"signed": signed, "body_sha256": digest})
        await run_in_threadpool(
            store.record_rejection, db, source=DEACTIVATION_SOURCE, status_code=202, reason=reason,
            webhook_id=digest, remote=request.client.host if request.client else None, body_size=len(body),
            keep=cfg.rejections_keep,
        )
        return JSONResponse({"status": "recorded"}, status_code=202)

    return router

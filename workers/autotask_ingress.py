"""Autotask's own callouts: ``/webhooks/autotask/{tickets,notes,deactivated}``.

Thin like the partner webhooks: cap the body, verify ``X-Hook-Signature`` over the raw bytes, check
the shape, record, commit, enqueue, answer 202 (well inside Autotask's 10-second timeout). A callout
delivered twice is one event (200 "duplicate"). Every refusal is recorded with its reason; a signed
callout whose JSON fails the shape check is also kept whole as an ``invalid`` event (pipelines/invalid.py).

Deactivation notices cannot be authenticated like callouts (facts §8), so they are only recorded
(in the capped rejections table, so an unauthenticated flood cannot grow the database) and shown
by ``atrelay doctor`` and ``atrelay autotask webhooks status``; they never change any state.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from connectors.autotask.callouts import (
    CalloutPayload,
    CalloutVerificationFailed,
    dedupe_key,
    verify_callout,
)
from connectors.common.events import Observation, Source
from pipelines import intake, store
from pipelines.audit import EventState
from pipelines.autotask_status import DEACTIVATION_SOURCE
from pipelines.invalid import INVALID_TYPE, InvalidBody, callout_key, check_callout
from workers.http_body import Refused, declared_size, read_body
from workers.settings import Settings, webhook_secrets

__all__ = ["make_autotask_router"]

log = logging.getLogger("atrelay.ingress")


class _Invalid(Exception):
    """Signed, but the body fails the shape check: kept as an invalid event, then refused."""

    def __init__(self, bad: InvalidBody) -> None:
        super().__init__(bad.reason)
        self.bad = bad


def _validate(body: bytes, headers: Mapping[str, str], secrets: list[str], *, note: bool
              ) -> tuple[CalloutPayload, datetime | None]:
    """Signature, JSON, shape and entity of one callout: :class:`Refused` when the signature fails,
    :class:`_Invalid` (with the precise reason) when a signed body fails the rest."""
    try:
        verify_callout(body, headers, secrets)
    except CalloutVerificationFailed as exc:
        raise Refused(401, f"signature rejected: {exc}") from None
    try:
        return check_callout(body, note=note)
    except InvalidBody as bad:
        raise _Invalid(bad) from None


def make_autotask_router(cfg: Settings, enqueue: Callable[[int], None],
                         group: intake.GroupIntake | None = None) -> APIRouter:
    db = cfg.effective_database_url
    # The ingress passes its own, so callouts and partner webhooks share one group commit.
    accepted = group or intake.GroupIntake(db, enqueue)
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
        try:
            body = await read_body(request, cfg.max_body_bytes)
            payload, occurred = _validate(body, request.headers, secrets(), note=note)
        except Refused as rej:
            return await refuse(request, rej)
        except _Invalid as inv:
            if inv.bad.status != 422:  # not JSON at all: refused and recorded only
                return await refuse(request, Refused(inv.bad.status, inv.bad.reason))
            # Signed by Autotask, so authenticated: JSON of the wrong shape is kept whole as an invalid
            # event (replayable after a fix, pipelines/invalid.py); Autotask still gets the 422.
            kept = store.NewEvent(
                source=Source.AUTOTASK.value, external_id=callout_key(body, note=note),
                event_type=INVALID_TYPE, body=body, headers=dict(request.headers), state=EventState.INVALID,
                reason=inv.bad.reason[:2000])
            kept_id, _ = await accepted.accept(kept)
            return await refuse(request, Refused(inv.bad.status, inv.bad.reason,
                                                 {"fields": inv.bad.fields} if inv.bad.fields else None),
                                kept={"id": kept_id, "state": "invalid"})
        new = store.NewEvent(
            source=Source.AUTOTASK.value, external_id=dedupe_key(payload, body),
            event_type=(Observation.NOTE_ADDED if note else Observation.TICKET_CHANGED).value,
            body=body, headers=dict(request.headers), ticket_id=payload.ticket_id, occurred_at=occurred,
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
        try:
            verify_callout(body, request.headers, secrets())
            signed = "signed"
        except CalloutVerificationFailed:
            signed = "unsigned"
        what = "?"
        try:
            data = json.loads(body)
            if isinstance(data, dict):
                what = f"{str(data.get('EntityType', '?'))[:40]} webhook {str(data.get('Guid', '?'))[:100]}"
        except (ValueError, RecursionError):
            pass
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

"""The HTTP ingress: verify, record, enqueue after commit, answer 202. Nothing else happens here.

Answers: 202 ``{"id", "status": "accepted"}``; a ``webhook-id`` seen before: 200 ``"duplicate"``;
401 bad/missing signature or a timestamp over 5 minutes off; 400 malformed JSON; 422 wrong shape
(naming the field); 413 body over the limit. Every refusal is recorded with its reason in
``rejected_requests``, which is capped so unauthenticated floods cannot grow the database.
"""

from __future__ import annotations

import gc
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.concurrency import run_in_threadpool

from connectors.common.events import Source
from connectors.common.standard_webhooks import REQUIRED_HEADERS, VerificationFailed
from connectors.common.text import one_line
from pipelines import intake, invalid, store
from pipelines.audit import EventState
from pipelines.clock import own_headers
from pipelines.db import utcnow
from pipelines.registry import WEBHOOKS, WebhookConnector
from pipelines.schema import SchemaOutOfDate, check_schema
from workers.celery.watchdog import Watchdog
from workers.http.api_docs import make_docs_router
from workers.http.autotask_ingress import make_autotask_router
from workers.http.body import Refused, check_declared_size, declared_size, read_body
from workers.http.guard import NoFraming, Refusal, RequestGuard, source_of
from workers.http.metrics import AuditCollector
from workers.http.offload import Offload
from workers.http.ops import make_router
from workers.settings import Settings, get_settings, webhook_secrets
from workers.status import check_broker, liveness, picklists_fresh, picklists_loaded_at

__all__ = ["create_app"]

log = logging.getLogger("atrelay.ingress")
INGRESS_THREADS = 8
#: The audit column's width; a longer id could not be stored, so it is refused up front.
MAX_WEBHOOK_ID = 200


def _default_enqueue(event_id: int) -> None:
    from workers.celery.queue import enqueue_event

    enqueue_event(event_id)


def _default_enqueue_many(event_ids: Sequence[int]) -> None:
    from workers.celery.queue import enqueue_many

    enqueue_many(event_ids)


def _lifespan(cfg: Settings, watch: bool) -> Callable[[FastAPI], Any]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Each request's database insert and enqueue run on a worker thread. A few threads keep the
        # database busy; forty (anyio's default) mostly fight over the GIL and stretch tail latency.
        anyio.to_thread.current_default_thread_limiter().total_tokens = INGRESS_THREADS
        # The ingress beats too, and checks liveness: when every worker (and the beat) is stopped, it is
        # the process left to say so (workers/celery/watchdog.py).
        dog = Watchdog(cfg, "ingress").start() if watch else None
        # Everything loaded at start-up lives as long as the process: out of the collector's sight, a
        # full collection walks only what requests allocate, so it pauses requests for less time.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if dog is not None:
                await run_in_threadpool(dog.stop)

    return lifespan


def create_app(settings: Settings | None = None, enqueue: Callable[[int], None] | None = None, *,
               watchdog: bool | None = None) -> FastAPI:
    """The ingress app. ``watchdog`` (default: on when ``enqueue`` is the real queue, i.e. a deployed
    ingress rather than a test's app) runs the heartbeat and liveness alerts in this process."""
    cfg = settings or get_settings()
    db = cfg.effective_database_url
    do_enqueue = enqueue if enqueue is not None else _default_enqueue
    # Partner webhooks and Autotask callouts share one group commit (and so one intake path).
    group = intake.GroupIntake(db, do_enqueue, _default_enqueue_many if enqueue is None else None)
    offload = Offload()  # one limit on large bodies examined off the event loop, for every webhook route
    secrets: dict[Source, list[str]] = {}

    def secrets_for(conn: WebhookConnector) -> list[str]:
        """The sender's secrets, read once (generated into var/dev-secrets.json when none is set)."""
        if conn.source not in secrets:
            secrets[conn.source] = webhook_secrets(cfg, conn.source.value)[0]
        return secrets[conn.source]

    app = FastAPI(title="atrelay ingress", version="0.1.0", docs_url=None, redoc_url=None,
                  lifespan=_lifespan(cfg, enqueue is None if watchdog is None else watchdog))

    async def _accept(conn: WebhookConnector, request: Request) -> tuple[int, int, str]:
        check_declared_size(request, cfg.max_body_bytes)
        if len(request.headers.get("webhook-id", "")) > MAX_WEBHOOK_ID:
            raise Refused(400, f"webhook-id longer than {MAX_WEBHOOK_ID} characters")
        body = await read_body(request, cfg.max_body_bytes)
        received = utcnow()

        def examine() -> tuple[str, invalid.Valid | invalid.InvalidBody]:
            """The CPU work (signature, JSON, shape): inline for a small body, else off the event loop."""
            try:
                webhook_id = conn.verify(body, request.headers, secrets_for(conn))
            except VerificationFailed as exc:
                raise Refused(401, f"signature rejected: {exc}") from None
            try:
                checked = invalid.check_webhook(conn, body, webhook_id, received, cfg.max_clock_skew_seconds)
            except invalid.InvalidBody as bad:
                return webhook_id, bad
            return webhook_id, checked

        webhook_id, valid = await offload.run(len(body), examine)
        if isinstance(valid, invalid.InvalidBody):
            bad = valid
            if bad.status != 422:  # not JSON at all: refused and recorded, as any malformed request
                raise Refused(bad.status, bad.reason) from None
            # Signed JSON of the wrong shape is authenticated data: kept whole as an invalid event
            # (replayable after a fix), and the sender still gets the 422 with the fields at fault.
            kept = store.NewEvent(
                source=conn.source.value, external_id=invalid.webhook_key(webhook_id),
                event_type=invalid.INVALID_TYPE, body=body, headers=own_headers(request.headers, None),
                state=EventState.INVALID, reason=bad.reason[:2000])
            kept_id, _ = await group.accept(kept)
            extra: dict[str, Any] = {"fields": bad.fields} if bad.fields else {}
            raise Refused(bad.status, bad.reason, {**extra, "id": kept_id, "state": "invalid"}) from None
        new = store.NewEvent(
            source=conn.source.value, external_id=webhook_id, event_type=valid.event_type,
            body=body, headers=own_headers(request.headers, valid.clamped_from), ticket_id=valid.ticket_id,
            ticket_number=valid.ticket_number, occurred_at=valid.occurred_at,
        )

        event_id, created = await group.accept(new)
        return (202, event_id, "accepted") if created else (200, event_id, "duplicate")

    def _route(conn: WebhookConnector) -> Callable[[Request], Any]:
        async def receive(request: Request) -> JSONResponse:
            try:
                status, event_id, outcome = await _accept(conn, request)
            except Refused as rej:
                await run_in_threadpool(
                    store.record_rejection, db, source=conn.source.value, status_code=rej.status,
                    reason=rej.reason, webhook_id=request.headers.get("webhook-id"),
                    remote=request.client.host if request.client else None,
                    body_size=declared_size(request),
                    keep=cfg.rejections_keep,
                )
                return JSONResponse({"error": rej.reason, **rej.extra}, status_code=rej.status)
            return JSONResponse({"id": event_id, "status": outcome}, status_code=status)

        receive.__name__ = f"receive_{conn.source.value.replace('-', '_')}"
        return receive

    for conn in WEBHOOKS.values():
        app.add_api_route(
            conn.path, _route(conn), methods=["POST"], status_code=202,
            summary=f"Receive a signed {conn.source.value} event (Standard Webhooks)",
            responses={200: {"description": "duplicate webhook-id"}, 400: {}, 401: {}, 413: {}, 422: {}},
        )

    def _admin(request: Request) -> None:
        """Constant-time check of ``Authorization: Bearer <ATRELAY_ADMIN_TOKEN>``."""
        token = cfg.admin_token.get_secret_value() if cfg.admin_token else ""
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        ok = bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), token.encode())
        if not ok:
            detail = "admin token required" if token else "admin API disabled: ATRELAY_ADMIN_TOKEN is not set"
            raise HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})

    @app.post("/api/events/{event_id}/replay", summary="Re-drive a dead letter (admin)")
    async def replay_event(event_id: int, request: Request) -> JSONResponse:
        _admin(request)
        if not 0 < event_id < 2**31:  # the id column's range: anything outside cannot exist
            return JSONResponse({"id": event_id, "status": "not-replayed", "error": f"no event #{event_id}"},
                                status_code=404)
        queued, message = await run_in_threadpool(store.replay, db, event_id)
        if not queued:
            status = 404 if message.startswith("no event") else 409
            return JSONResponse({"id": event_id, "status": "not-replayed", "error": message}, status_code=status)
        try:
            await run_in_threadpool(do_enqueue, event_id)
        except Exception:  # recorded as accepted: the sweeper re-queues it
            log.exception("ingress.enqueue_failed", extra={"event_id": event_id})
        return JSONResponse({"id": event_id, "status": "accepted", "message": message}, status_code=202)

    def openapi() -> dict[str, Any]:
        """The generated schema plus what FastAPI cannot see: each webhook's body and signature headers.

        The body is read raw (the signature covers the exact bytes), so it is not a FastAPI parameter.
        """
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for conn in WEBHOOKS.values():
            name = conn.model.__name__
            body = conn.model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[name] = body
            operation = schema["paths"][conn.path]["post"]
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}}
            operation["parameters"] = [
                {"name": h, "in": "header", "required": True, "schema": {"type": "string"},
                 "description": "Standard Webhooks"} for h in REQUIRED_HEADERS]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    # Our own script-free page, not FastAPI's Swagger UI from a CDN (see workers/http/api_docs.py).
    app.include_router(make_docs_router(app.openapi))

    app.include_router(make_router(cfg, do_enqueue))
    app.include_router(make_autotask_router(cfg, do_enqueue, group=group, offload=offload))

    async def record_refusal(r: Refusal) -> None:
        # The request was refused before any check of its values: its webhook-id is shown escaped.
        wid = r.headers.get("webhook-id")
        await run_in_threadpool(
            store.record_rejection, db, source=source_of(r.path), status_code=r.status, reason=r.reason,
            webhook_id=one_line(wid, 200) if wid else None, remote=one_line(r.remote, 64) if r.remote else None,
            body_size=r.size,
            keep=cfg.rejections_keep)

    # Outermost: every route, present and future, gets the size and duplicate-header limits ...
    app.add_middleware(RequestGuard, max_body_bytes=cfg.max_body_bytes, record=record_refusal)
    # ... and no answer may be framed by another page (the dashboard's buttons, first of all). Outside
    # even Starlette's error middleware (always the outermost of app.add_middleware's), so a 500 from an
    # unhandled exception carries the headers too.
    build_stack = app.build_middleware_stack
    app.build_middleware_stack = lambda: NoFraming(build_stack())  # type: ignore[method-assign]
    registry = CollectorRegistry()
    registry.register(AuditCollector(cfg))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(scope: str = "pipeline") -> JSONResponse:
        """Will an event accepted now be applied? Database at the right schema, broker reachable, a worker
        alive and ready, a beat alive, no event waiting too long, no poll overdue, picklists loaded.

        ``?scope=intake`` asks only whether this ingress can accept and keep events (database, broker):
        for a load balancer that should keep sending partners' webhooks here while workers are down
        (they are kept and applied once a worker runs). 503 names components only.
        """
        intake_only = scope == "intake"

        def check() -> dict[str, str]:
            # Anyone can ask (no sign-in): the answer names components only. Hosts, ports and exception
            # text go to the log, where operators look and the public does not.
            problems: dict[str, str] = {}
            try:
                check_schema(db)
            except SchemaOutOfDate as exc:
                problems["database"] = "schema out of date"
                log.warning("readyz.database", extra={"detail": str(exc)})
            except Exception as exc:
                problems["database"] = "unavailable"
                log.warning("readyz.database", extra={"detail": type(exc).__name__})
            broker = check_broker(cfg)
            if broker:
                problems["broker"] = "unreachable"
                log.warning("readyz.broker", extra={"detail": broker})
            if intake_only or "database" in problems:
                return problems
            problems.update(liveness(cfg).problems)
            if not picklists_fresh(cfg, picklists_loaded_at(db)):
                problems["picklists"] = "not loaded recently (is a worker running?)"
            return problems

        problems = await run_in_threadpool(check)
        if problems:
            return JSONResponse({"status": "not-ready", "problems": problems}, status_code=503)
        return JSONResponse({"status": "ready"})

    return app

"""The ops dashboard (`/ops`): server-rendered, no JavaScript build, behind ATRELAY_ADMIN_TOKEN.

Sign-in sets an HttpOnly, SameSite=Strict cookie holding an HMAC of the token (never the token);
``Authorization: Bearer`` works too. Replays are POSTs, so a link cannot trigger one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import col, select
from starlette.concurrency import run_in_threadpool

from connectors.common.events import Source
from pipelines import store
from pipelines.audit import EventState, InboundEvent
from pipelines.db import session_scope
from workers.settings import Settings
from workers.status import health

__all__ = ["make_router"]

COOKIE = "atrelay_ops"
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def make_router(settings: Settings, enqueue: Callable[[int], None]) -> APIRouter:
    router = APIRouter(prefix="/ops", include_in_schema=False)
    db = settings.effective_database_url
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    session_value = hmac.new(token.encode(), b"atrelay-ops-session", hashlib.sha256).hexdigest() if token else ""

    def authorised(request: Request) -> bool:
        if not token:
            return False
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), session_value.encode()):
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("msg", request.query_params.get("msg"))
        return templates.TemplateResponse(request, name, {"ts": _ts, **context}, status_code=status)

    def login_page(request: Request, failed: bool = False) -> HTMLResponse:
        return render(request, "login.html", 401, disabled=not token, failed=failed)

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return login_page(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        # A one-field urlencoded form: parsed here rather than pulling in python-multipart.
        form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return login_page(request, failed=bool(token))
        response = RedirectResponse("/ops", status_code=303)
        response.set_cookie(COOKIE, session_value, httponly=True, samesite="strict", max_age=12 * 3600)
        return response

    @router.get("", response_class=HTMLResponse)
    async def index(request: Request, source: str = "", state: str = "", ticket: str = "") -> Response:
        if not authorised(request):
            return login_page(request)

        def gather() -> dict[str, Any]:
            with session_scope(db) as s:
                q = select(InboundEvent).order_by(col(InboundEvent.id).desc()).limit(100)
                if source:
                    q = q.where(InboundEvent.source == source)
                if state:
                    q = q.where(InboundEvent.state == state)
                if ticket.strip():
                    t = ticket.strip()
                    q = q.where((col(InboundEvent.ticket_number) == t) | (
                        col(InboundEvent.ticket_id) == int(t) if t.isdigit() else col(InboundEvent.id) < 0))
                events = list(s.exec(q).all())
                dead = list(s.exec(select(InboundEvent).where(InboundEvent.state == EventState.DEAD)
                                   .order_by(col(InboundEvent.id).desc()).limit(50)).all())
                parked = list(s.exec(select(InboundEvent)
                                     .where(col(InboundEvent.state).in_([EventState.PARKED, EventState.RETRYING]))
                                     .order_by(col(InboundEvent.not_before)).limit(50)).all())
            return {"events": events, "dead": dead, "parked": parked, "health": health(settings)}

        data = await run_in_threadpool(gather)
        return render(request, "index.html", sources=[s.value for s in Source], states=[s.value for s in EventState],
                      filters={"source": source, "state": state, "ticket": ticket}, **data)

    @router.get("/events/{event_id}", response_class=HTMLResponse)
    async def event(request: Request, event_id: int) -> Response:
        if not authorised(request):
            return login_page(request)

        def gather() -> dict[str, Any] | None:
            story = store.event_story(db, event_id)
            if story is None:
                return None
            e = story.event
            try:
                body = json.dumps(json.loads(e.body), indent=2)
            except ValueError:
                body = e.body.decode("utf-8", "replace")
            return {"e": e, "runs": story.runs, "attempts": story.attempts, "children": story.children, "body": body,
                    "headers": json.dumps(e.headers, indent=2), "replayable": e.state in store.REPLAYABLE}

        data = await run_in_threadpool(gather)
        if data is None:
            return render(request, "login.html", 404, disabled=False, failed=False, msg=f"no event #{event_id}")
        return render(request, "event.html", **data)

    @router.post("/events/{event_id}/replay")
    async def replay(request: Request, event_id: int) -> Response:
        if not authorised(request):
            return login_page(request)
        queued, message = await run_in_threadpool(store.replay, db, event_id)
        if queued:
            try:
                await run_in_threadpool(enqueue, event_id)
            except Exception:  # recorded as accepted: the sweeper re-queues it
                message += " (broker unavailable: the sweeper will queue it)"
        return RedirectResponse(f"/ops/events/{event_id}?msg={quote(message)}", status_code=303)

    return router

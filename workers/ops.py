"""The ops dashboard (`/ops`): server-rendered, no JavaScript build, behind ATRELAY_ADMIN_TOKEN.

Sign-in sets an HttpOnly, SameSite=Strict cookie (``Secure`` over HTTPS) naming a session that
expires after ``ATRELAY_OPS_SESSION_MINUTES`` and ends at sign-out; it is signed with a key derived
from the token (never the token itself). ``Authorization: Bearer`` works too. Every state-changing
form carries a CSRF token bound to the session, and a cross-origin ``Origin`` is refused: SameSite
alone lets a page on another port of the same host post as the signed-in admin. Failed sign-ins are
logged and rate-limited per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
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
from workers.dead_letters import explain_event
from workers.settings import Settings
from workers.status import health
from workers.verdict import autotask_failing, verdict

__all__ = ["make_router"]

COOKIE = "atrelay_ops"
log = logging.getLogger("atrelay.ops")
#: Failed sign-ins allowed per client address in LOGIN_WINDOW seconds; then 429 until the window passes.
LOGIN_FAILURES = 10
LOGIN_WINDOW = 60.0
#: Ids fit the audit tables' integer columns (int4 on PostgreSQL); anything larger cannot exist.
MAX_ID = 2**31 - 1


class _LoginLimiter:
    """Failed sign-ins per client address in a sliding window; bounded so a spray cannot grow it."""

    def __init__(self, limit: int, window: float, max_clients: int = 10_000) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._fails: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._fails.get(client, []) if now - t < self.window]
            if recent:
                self._fails[client] = recent
            else:
                self._fails.pop(client, None)
            return len(recent) >= self.limit

    def failed(self, client: str) -> None:
        with self._lock:
            self._fails.setdefault(client, []).append(time.monotonic())
            self._fails.move_to_end(client)
            while len(self._fails) > self.max_clients:
                self._fails.popitem(last=False)


def _as_id(value: str) -> int | None:
    """A ticket or event id typed by a person: ASCII digits within the column's range, else None."""
    v = value.strip()
    if not (v.isascii() and v.isdigit()) or len(v) > 10 or int(v) > MAX_ID:
        return None
    return int(v)
templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))


def _ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def make_router(settings: Settings, enqueue: Callable[[int], None]) -> APIRouter:
    router = APIRouter(prefix="/ops", include_in_schema=False)
    db = settings.effective_database_url
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    key = hmac.new(token.encode(), b"atrelay-ops-session-key", hashlib.sha256).digest() if token else b""
    lifetime = settings.ops_session_minutes * 60
    ended: OrderedDict[str, float] = OrderedDict()  # sessions signed out, until they would have expired
    limiter = _LoginLimiter(LOGIN_FAILURES, LOGIN_WINDOW)

    def _sign(payload: str) -> str:
        return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()

    def new_session() -> str:
        sid = secrets.token_urlsafe(18)
        payload = f"{sid}.{int(time.time()) + lifetime}"
        return f"{payload}.{_sign(payload)}"

    def session_id(request: Request) -> str | None:
        """The id of a valid, unexpired, not signed-out session cookie, else None."""
        cookie = request.cookies.get(COOKIE, "")
        payload, _, mac = cookie.rpartition(".")
        sid, _, expires = payload.partition(".")
        if not (token and sid and expires.isascii() and expires.isdigit() and mac):
            return None
        if not hmac.compare_digest(mac.encode(), _sign(payload).encode()) or int(expires) < time.time():
            return None
        return None if sid in ended else sid

    def csrf_for(request: Request) -> str:
        sid = session_id(request)
        return _sign(f"csrf.{sid}") if sid else ""

    def authorised(request: Request) -> bool:
        if not token:
            return False
        if session_id(request) is not None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    def bearer(request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    def same_origin(request: Request) -> bool:
        """A browser names the page's origin on a POST; it must be this dashboard's own."""
        origin = request.headers.get("origin")
        if origin is None:  # not sent by every client; the CSRF token still has to match
            return True
        return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"

    def form_of(raw: bytes) -> dict[str, str]:
        # Small urlencoded forms, parsed here rather than pulling in python-multipart. The body was
        # already bounded by the ingress's RequestGuard before this reads it.
        return {k: v[0] for k, v in parse_qs(raw[:4096].decode("utf-8", "replace")).items()}

    def csrf_ok(request: Request, form: dict[str, str]) -> bool:
        """A bearer-token client is no browser (no ambient credential); a cookie session needs the token."""
        if bearer(request):
            return True
        expected = csrf_for(request)
        return bool(expected) and same_origin(request) and hmac.compare_digest(
            form.get("csrf", "").encode(), expected.encode())

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("msg", request.query_params.get("msg"))
        context.setdefault("csrf", csrf_for(request))
        return templates.TemplateResponse(request, name, {"ts": _ts, **context}, status_code=status)

    def login_page(request: Request, failed: bool = False) -> HTMLResponse:
        return render(request, "login.html", 401, disabled=not token, failed=failed)

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request) -> HTMLResponse:
        return login_page(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        if limiter.blocked(client):
            log.warning("ops.login.rate_limited", extra={"remote": client})
            limited = render(request, "login.html", 429, disabled=False, failed=False,
                             msg=f"Too many failed sign-ins: wait {LOGIN_WINDOW:.0f} s.")
            limited.headers["Retry-After"] = str(int(LOGIN_WINDOW))
            return limited
        given = form_of(await request.body()).get("token", "")
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            if token:
                limiter.failed(client)
                log.warning("ops.login.failed", extra={"remote": client})  # never the value given
            return login_page(request, failed=bool(token))
        log.info("ops.login.succeeded", extra={"remote": client})
        response = RedirectResponse("/ops", status_code=303)
        response.set_cookie(COOKIE, new_session(), httponly=True, samesite="strict", max_age=lifetime,
                            secure=request.url.scheme == "https")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        sid = session_id(request)
        if sid is not None and csrf_ok(request, form_of(await request.body())):
            now = time.time()
            ended[sid] = now + lifetime
            while ended and (len(ended) > 10_000 or next(iter(ended.values())) < now):
                ended.popitem(last=False)
        response = RedirectResponse("/ops/login", status_code=303)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict", secure=request.url.scheme == "https")
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
                    t, tid = ticket.strip()[:64], _as_id(ticket)
                    on_ticket = (col(InboundEvent.ticket_number) == t) | (
                        col(InboundEvent.ticket_id) == tid if tid is not None else col(InboundEvent.id) < 0)
                    # Derived events (the follow-up of an MC No Contact) may carry only the ticket id the
                    # first event resolved to: include the children of the matching events.
                    parents = select(InboundEvent.id).where(on_ticket)
                    q = q.where(on_ticket | col(InboundEvent.caused_by_id).in_(parents))
                events = list(s.exec(q).all())
                # Invalid events (signed bodies that failed validation) wait for a fix and a replay too.
                dead = list(s.exec(select(InboundEvent)
                                   .where(col(InboundEvent.state).in_([EventState.DEAD, EventState.INVALID]))
                                   .order_by(col(InboundEvent.id).desc()).limit(50)).all())
                parked = list(s.exec(select(InboundEvent)
                                     .where(col(InboundEvent.state).in_([EventState.PARKED, EventState.RETRYING]))
                                     .order_by(col(InboundEvent.not_before)).limit(50)).all())
                explained = {e.id: explain_event(s, e) for e in dead}
            from pipelines.autotask_status import autotask_intake

            now = health(settings)
            intake = autotask_intake(db)
            failing = autotask_failing(db)
            from pipelines.alerts import recent_alerts

            return {"events": events, "dead": dead, "explained": explained, "parked": parked, "health": now,
                    "intake": intake, "alerts": recent_alerts(db, limit=20),
                    "autotask_failing": failing, "verdict": verdict(settings, now, intake, failing)}

        data = await run_in_threadpool(gather)
        return render(request, "index.html", sources=[s.value for s in Source], states=[s.value for s in EventState],
                      filters={"source": source, "state": state, "ticket": ticket}, **data)

    @router.get("/events/{event_id}", response_class=HTMLResponse)
    async def event(request: Request, event_id: int) -> Response:
        if not authorised(request):
            return login_page(request)
        if event_id > MAX_ID:
            return render(request, "login.html", 404, disabled=False, failed=False, msg=f"no event #{event_id}")

        def gather() -> dict[str, Any] | None:
            story = store.event_story(db, event_id)
            if story is None:
                return None
            e = story.event
            try:
                body = json.dumps(json.loads(e.body), indent=2)
            except ValueError:
                body = e.body.decode("utf-8", "replace")
            explained = None
            if e.state in (EventState.DEAD, EventState.INVALID):
                with session_scope(db) as s:
                    explained = explain_event(s, e)
            effect = store.get_effect(db, event_id)
            return {"e": e, "runs": story.runs, "attempts": story.attempts, "children": story.children, "body": body,
                    "headers": json.dumps(e.headers, indent=2), "explained": explained,
                    "replayable": e.state in store.REPLAYABLE and (explained is None or explained.replay_helps),
                    "note_id": effect.note_id if effect else None, "note_text": effect.note_text if effect else None}

        data = await run_in_threadpool(gather)
        if data is None:
            return render(request, "login.html", 404, disabled=False, failed=False, msg=f"no event #{event_id}")
        return render(request, "event.html", **data)

    @router.post("/events/{event_id}/replay")
    async def replay(request: Request, event_id: int) -> Response:
        if not authorised(request):
            return login_page(request)
        if not csrf_ok(request, form_of(await request.body())):
            log.warning("ops.csrf_refused", extra={"event_id": event_id})
            return render(request, "login.html", 403, disabled=False, failed=False,
                          msg="Refused: the form is stale or came from another page. Reload and try again.")
        if event_id > MAX_ID:
            return RedirectResponse(f"/ops?msg={quote(f'no event #{event_id}')}", status_code=303)
        queued, message = await run_in_threadpool(store.replay, db, event_id)
        if queued:
            try:
                await run_in_threadpool(enqueue, event_id)
            except Exception:  # recorded as accepted: the sweeper re-queues it
                message += " (broker unavailable: the sweeper will queue it)"
        return RedirectResponse(f"/ops/events/{event_id}?msg={quote(message)}", status_code=303)

    return router

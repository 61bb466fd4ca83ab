"""The ingress defends itself: bounded headers, bounded bodies, slow clients cut, no ambiguous headers.

The compose file publishes the ingress directly (no proxy in front), so these limits live in the
process and apply to every route, including ones added later:

- :class:`GuardedHttpToolsProtocol` (uvicorn's httptools protocol, extended): the request line and
  headers are counted as they are parsed and refused with 431 past ``ATRELAY_MAX_HEADER_BYTES`` or
  :data:`MAX_HEADER_COUNT`; a request whose headers and body have not fully arrived within
  ``ATRELAY_REQUEST_TIMEOUT_SECONDS`` of its first byte (or of the connection opening) gets 408 and
  the connection is closed.
- :class:`RequestGuard` (ASGI middleware): refuses a missing-or-malformed, duplicated or too large
  ``Content-Length`` before a byte of the body is read, reads at most ``ATRELAY_MAX_BODY_BYTES`` of
  any body (chunked ones too) before the route sees it, refuses duplicated Standard Webhooks
  headers (one copy could be verified while another is stored) and NUL anywhere in the path, the
  query or a header (PostgreSQL cannot store it: 400, never a 500 further in).

Every refusal is recorded in ``rejected_requests``, the protocol's own (431, 408) too.

uvicorn's ``limit_concurrency`` (``ATRELAY_MAX_CONNECTIONS``) caps open connections: past it, requests
get 503 instead of the process growing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from connectors.common.text import one_line
from workers.settings import get_settings

__all__ = [
    "BODY_METHODS",
    "MAX_HEADER_COUNT",
    "SINGLE_HEADERS",
    "GuardedHttpToolsProtocol",
    "NoFraming",
    "Refusal",
    "RejectionRecorder",
    "RequestGuard",
    "source_of",
]

log = logging.getLogger("atrelay.ingress")

#: More headers than any partner sends; browsers send about 20.
MAX_HEADER_COUNT = 100
#: Headers that must appear at most once: a second copy makes "which one was checked" ambiguous.
SINGLE_HEADERS = frozenset({b"content-length", b"webhook-id", b"webhook-timestamp", b"webhook-signature",
                            b"x-hook-signature", b"transfer-encoding"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Refusal:
    """A request refused before any route saw it, as handed to the recorder."""

    path: str
    status: int
    reason: str
    headers: dict[str, str]
    remote: str | None
    size: int  # the body size the client declared or sent so far


RejectionRecorder = Callable[[Refusal], Awaitable[None]]

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def source_of(path: str) -> str:
    """The rejection record's source for a refused path: the partner for webhooks, else "http"."""
    if not path.startswith("/webhooks/"):
        return "http"
    return one_line(path.removeprefix("/webhooks/"), 32)[:32]


class _ProtocolRefusals:
    """Refusals the protocol makes (431, 408) before any app code runs, recorded like every other one.

    The protocol's callbacks cannot wait for the database, so the records are written on one thread of
    their own, in order. Under a flood the backlog is bounded: past :attr:`MAX_BACKLOG` waiting writes a
    refusal is counted and logged instead (a flood of them is in the log, and each costs the sender a
    connection and the bytes that earned it).
    """

    MAX_BACKLOG = 1000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._backlog = 0
        self.dropped = 0

    def submit(self, refusal: Refusal) -> None:
        with self._lock:
            if self._backlog >= self.MAX_BACKLOG:
                self.dropped += 1
                if self.dropped % 100 == 1:
                    log.warning("ingress.refusals_not_recorded", extra={"dropped": self.dropped})
                return
            self._backlog += 1
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atrelay-refusals")
            executor = self._executor
        executor.submit(self._write, refusal)

    def _write(self, r: Refusal) -> None:
        from pipelines import store  # the database layer, only once a refusal is to be written

        try:
            cfg = get_settings()
            store.record_rejection(cfg.effective_database_url, source=source_of(r.path), status_code=r.status,
                                   reason=r.reason, webhook_id=None, remote=r.remote, body_size=r.size,
                                   keep=cfg.rejections_keep)
        except Exception:
            log.exception("ingress.rejection_not_recorded")
        finally:
            with self._lock:
                self._backlog -= 1


#: One per process: every connection's protocol refusals share the recording thread.
PROTOCOL_REFUSALS = _ProtocolRefusals()


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header budget and a deadline for each request to arrive.

    Named by import string in ``uvicorn.run(http=...)``, so it also works in spawned worker processes;
    the limits come from the settings each process reads.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = get_settings()
        self._max_header_bytes = cfg.max_header_bytes
        self._timeout = cfg.request_timeout_seconds
        self._header_bytes = 0
        self._header_count = 0
        self._refusal: tuple[int, str] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        # httptools buffers a header's value until it is complete, so a single endless header never
        # reaches on_header: the raw bytes received while headers are pending are counted as well.
        self._in_headers = True
        self._raw_header_bytes = 0
        self._headers_completed = 0  # how many requests' headers this connection has finished
        self._path = ""  # the request's path (as far as it has arrived), for the refusal record

    # ---- the deadline: from the connection (or the request's first byte) to the body's last byte ----
    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self._timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.warning("ingress.request_timeout", extra={"remote": self.client[0] if self.client else None})
        # The app has not answered yet only if it never started a response; otherwise just hang up.
        if self.cycle is None or not self.cycle.response_started:
            self._write_refusal(408, f"request not received within {self._timeout:g} s")
            self._record(408, f"request not received within {self._timeout:g} s")
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a client that connects and sends nothing is cut too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0
        self._path = ""
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._raw_header_bytes = 0
        self._headers_completed += 1
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_headers = True
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        pending, completed = self._in_headers, self._headers_completed
        super().data_received(data)
        # Only a read in which no request's headers were completed is all header bytes: one that also
        # carried a whole request (headers, body and the end of the message, as curl and httpx send a
        # small POST in one write) leaves ``_in_headers`` set again for the next request, and counting
        # it refused valid webhooks of 33-130 KB with 431. The bytes of a next request's headers that
        # share such a read are counted by on_url/on_header once complete, and an endless header by
        # the reads after it. One read is at most asyncio's buffer (256 KiB), so a connection holds at
        # most that over the limit.
        if pending and self._in_headers and completed == self._headers_completed and not self.transport.is_closing():
            self._raw_header_bytes += len(data)
            if self._raw_header_bytes > self._max_header_bytes:
                self._refusal = (431, f"request line and headers over {self._max_header_bytes} bytes")
                self.send_400_response("")

    def timeout_keep_alive_handler(self) -> None:
        self._disarm()
        super().timeout_keep_alive_handler()

    # ---- the header budget ------------------------------------------------------------------------
    def on_url(self, url: bytes) -> None:
        self._count(len(url), 0)
        if len(self._path) < 200:
            self._path += url.split(b"?", 1)[0][:200].decode("latin-1")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        # httptools may deliver one header in several pieces; each piece counts its bytes.
        self._count(len(name) + len(value), 1)
        super().on_header(name, value)

    def _count(self, size: int, headers: int) -> None:
        self._header_bytes += size
        self._header_count += headers
        if self._header_bytes > self._max_header_bytes:
            self._refusal = (431, f"request line and headers over {self._max_header_bytes} bytes")
        elif self._header_count > MAX_HEADER_COUNT:
            self._refusal = (431, f"more than {MAX_HEADER_COUNT} headers")
        if self._refusal:
            # Raised inside the parser's callback: httptools stops parsing and uvicorn's data_received
            # answers through send_400_response, which sends this refusal instead.
            raise ValueError(self._refusal[1])

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:  # httptools could not parse the request (NUL in a header, a bad line...)
            self._disarm()
            super().send_400_response(msg)
            self._record(400, f"malformed HTTP request: {msg}")
            return
        self._disarm()
        log.warning("ingress.headers_refused", extra={"reason": self._refusal[1]})
        self._write_refusal(*self._refusal)
        self._record(*self._refusal)
        self.transport.close()

    def _record(self, status: int, reason: str) -> None:
        PROTOCOL_REFUSALS.submit(Refusal(self._path if self._path.startswith("/") else "", status, reason, {},
                                         self.client[0] if self.client else None, 0))

    def _write_refusal(self, status: int, reason: str) -> None:
        body = json.dumps({"error": reason}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )


def _nul_in(scope: Scope) -> str | None:
    """Where a request carries NUL, which PostgreSQL text and JSON columns refuse, else None.

    Checked once for every route, so no header (a webhook-id, a cookie, a forwarded address) and no query
    parameter (a dashboard filter) can reach the audit database with it and turn a refusal into a 500.
    """
    if "\x00" in scope["path"]:
        return "NUL character in the path"
    query: bytes = scope.get("query_string", b"")
    if b"\x00" in query or b"%00" in query:
        return "NUL character in the query string"
    for name, value in scope["headers"]:
        if b"\x00" in value or b"\x00" in name:
            return f"NUL character in the {one_line(name.decode('latin-1'), 40)} header"
    return None


class RequestGuard:
    """ASGI middleware: no ambiguous or oversized request reaches a route, and no body is read unbounded."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, record: RejectionRecorder | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        unstorable = _nul_in(scope)
        if unstorable is not None:
            await self._refuse(scope, send, 400, unstorable, 0)
            return
        seen: set[bytes] = set()
        for name, _ in headers:
            if name in SINGLE_HEADERS:
                if name in seen:
                    await self._refuse(scope, send, 400, f"duplicated {name.decode()} header", 0)
                    return
                seen.add(name)
        declared = next((v for n, v in headers if n == b"content-length"), None)
        size = 0
        if declared is not None:
            # isdigit() accepts '²' and other non-ASCII digits; only ASCII digits are a length.
            if not (declared.isascii() and declared.isdigit()) or len(declared) > 19:
                status = 413 if declared.isascii() and declared.isdigit() else 400
                await self._refuse(scope, send, status, "invalid or oversized Content-Length", 0)
                return
            size = int(declared)
            if size > self.max_body_bytes:
                await self._refuse(scope, send, 413, f"body larger than {self.max_body_bytes} bytes", size)
                return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        # Read the body here, bounded, so no route (dashboard forms included) can read an unbounded one.
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_body_bytes:
                await self._refuse(scope, send, 413, f"body larger than {self.max_body_bytes} bytes", total)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, reason: str, size: int) -> None:
        if self.record is not None:
            headers = {n.decode("latin-1"): v.decode("latin-1") for n, v in scope["headers"]}
            client = scope.get("client")
            try:
                await self.record(Refusal(scope["path"], status, reason, headers, client[0] if client else None, size))
            except Exception:  # the refusal is answered even if it cannot be recorded
                log.exception("ingress.rejection_not_recorded")
        body = json.dumps({"error": reason}).encode()
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class NoFraming:
    """ASGI middleware: no response may be shown inside another page's frame.

    A same-site page framed the dashboard's Replay button with the admin signed in and overlaid it
    (clickjacking). ``X-Frame-Options: DENY`` for older browsers, CSP ``frame-ancestors 'none'`` for the
    rest; a response that sets its own CSP (the API docs page) keeps it and has ``frame-ancestors``
    added when it lacks one. The ingress wraps its whole middleware stack with it, Starlette's error
    middleware included, so a 500 from an unhandled exception carries them too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def framed(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() != b"x-frame-options"]
                headers.append((b"x-frame-options", b"DENY"))
                csp = [i for i, (n, _) in enumerate(headers) if n.lower() == b"content-security-policy"]
                if not csp:
                    headers.append((b"content-security-policy", b"frame-ancestors 'none'"))
                for i in csp:
                    name, value = headers[i]
                    if b"frame-ancestors" not in value:
                        headers[i] = (name, value + b"; frame-ancestors 'none'")
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, framed)

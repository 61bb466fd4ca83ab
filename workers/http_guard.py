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
  any body (chunked ones too) before the route sees it, and refuses duplicated Standard Webhooks
  headers (one copy could be verified while another is stored). Every refusal is recorded.

uvicorn's ``limit_concurrency`` (``ATRELAY_MAX_CONNECTIONS``) caps open connections: past it, requests
get 503 instead of the process growing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from workers.settings import get_settings

__all__ = [
    "BODY_METHODS",
    "MAX_HEADER_COUNT",
    "SINGLE_HEADERS",
    "GuardedHttpToolsProtocol",
    "Refusal",
    "RejectionRecorder",
    "RequestGuard",
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
        self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._raw_header_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_headers = True
        super().on_message_complete()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        pending = self._in_headers
        super().data_received(data)
        # One read is at most asyncio's buffer (256 KiB), so a connection holds at most that over the limit.
        if pending and self._in_headers and not self.transport.is_closing():
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
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._disarm()
        log.warning("ingress.headers_refused", extra={"reason": self._refusal[1]})
        self._write_refusal(*self._refusal)
        self.transport.close()

    def _write_refusal(self, status: int, reason: str) -> None:
        body = json.dumps({"error": reason}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )


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

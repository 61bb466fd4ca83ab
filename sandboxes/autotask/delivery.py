"""Webhook callout delivery for the Autotask sandbox: Autotask's JSON escaping, the signature, the queue.

Written from Autotask's webhook documentation ("Secret key payload verification"), independently of atrelay's
verifier on purpose: a test whose
sender and receiver share code cannot catch a wrong escape or a wrong key.

* Body: compact JSON where, inside strings, ``" & < > ' ` +`` and every non-ASCII character are
  written as ``\\uXXXX`` (upper-case hex, UTF-16 code units), as Autotask's .NET serializer does.
  The signature covers exactly these bytes.
* Signature: ``X-Hook-Signature: sha1=<base64(HMAC-SHA1(secretKey, body))>``.
* Delivery (D-wherr): one ordered queue per webhook, so a failing endpoint holds up that webhook's
  later callouts; any 2xx is delivered; 10 s timeout; a failure is retried after ``retry_seconds``
  (30 s in Autotask) and the callout is dropped into the error log after ``max_attempts`` (5). After
  ``deactivate_after`` (25) consecutive failed *attempts* the outbox calls ``on_exhausted`` and the
  webhook is deactivated. Whether Autotask counts failed attempts or failed callouts toward the 25
  is not documented; attempts is the assumption here (so 5 callouts that each fail 5 times
  deactivate it).
* ``drop_next``: the next N callouts are lost without a trace at the receiver (their
  ``SequenceNumber`` is still used up), to exercise reconciliation.

Each webhook gets a daemon "lane" thread, started on its first callout; it owns an ``httpx.Client``
and never touches the event loop, so delivery works the same when the app runs under uvicorn in a
thread (``ThreadedServer``) or in a process. ``reset()`` retires every lane, ``stop()`` joins them.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

__all__ = ["Callout", "DeliverySettings", "Outbox", "autotask_json", "hook_signature"]

_ESCAPED = frozenset("\"&<>'`+")
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif ch in _ESCAPED or ord(ch) < 0x20 or ord(ch) > 0x7E:
            data = ch.encode("utf-16-be")  # characters beyond the BMP become a surrogate pair
            out.extend(f"\\u{int.from_bytes(data[i:i + 2], 'big'):04X}" for i in range(0, len(data), 2))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{_string(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_encode(v) for v in value) + "]"
    raise TypeError(f"cannot serialize {type(value).__name__}")


def autotask_json(payload: Any) -> bytes:
    """The body as Autotask writes it (see the module docstring): pure ASCII, escapes inside strings."""
    return _encode(payload).encode("ascii")


def hook_signature(secret: str, body: bytes) -> str:
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha1).digest()
    return "sha1=" + base64.b64encode(digest).decode("ascii")


def _utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class DeliverySettings:
    retry_seconds: float = 30.0
    max_attempts: int = 5
    deactivate_after: int = 25
    timeout_seconds: float = 10.0


@dataclass
class Callout:
    webhook_id: int
    url: str
    secret: str
    sequence: int
    payload: dict[str, Any]
    body: bytes
    attempts: int = 0
    next_at: float = 0.0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Counters:
    delivered: int = 0
    failed: int = 0  # callouts given up after max_attempts
    dropped: int = 0  # callouts lost on purpose (drop_next)
    discarded: int = 0  # queued callouts thrown away because the webhook was deactivated or deleted
    attempts_failed: int = 0
    consecutive_failures: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Outbox:
    """Per-webhook ordered delivery with retries; thread-safe (handlers enqueue, lanes deliver)."""

    def __init__(self, on_exhausted: Callable[[int], None] | None = None) -> None:
        self.on_exhausted = on_exhausted
        self._cv = threading.Condition()
        self._stopping = False
        self._generation = 0
        self._lanes: dict[int, threading.Thread] = {}
        self._notices_in_flight = 0
        self.reset()

    # ---- producer side --------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every queue, counter and log; running lanes see the new generation and exit."""
        with self._cv:
            self._generation += 1
            self.settings = DeliverySettings()
            self._lanes = {}
            self._queues: dict[int, collections.deque[Callout]] = {}
            self._counters: dict[int, _Counters] = collections.defaultdict(_Counters)
            self.drop_next = 0
            self.error_log: list[dict[str, Any]] = []
            self.lost: list[dict[str, Any]] = []
            self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
            self.notices: list[dict[str, Any]] = []
            self._cv.notify_all()

    def enqueue(self, webhook_id: int, url: str, secret: str, sequence: int, payload: dict[str, Any]) -> None:
        body = autotask_json(payload)
        with self._cv:
            if self.drop_next > 0:
                self.drop_next -= 1
                self._counters[webhook_id].dropped += 1
                self.lost.append({"webhookID": webhook_id, "sequenceNumber": sequence, "payload": body.decode()})
                return
            queue = self._queues.setdefault(webhook_id, collections.deque())
            queue.append(Callout(webhook_id, url, secret, sequence, payload, body, next_at=time.monotonic()))
            if webhook_id not in self._lanes and not self._stopping:
                lane = threading.Thread(target=self._lane, args=(webhook_id, self._generation), daemon=True,
                                        name=f"sandbox-webhook-{webhook_id}")
                self._lanes[webhook_id] = lane
                lane.start()
            self._cv.notify_all()

    def discard(self, webhook_id: int) -> None:
        with self._cv:
            queue = self._queues.pop(webhook_id, None)
            self._counters[webhook_id].discarded += len(queue or ())
            self._cv.notify_all()

    def notify(self, url: str, payload: dict[str, Any]) -> None:
        """POST an unsigned notice (deactivation) once, in the background; the outcome is only recorded."""
        body = autotask_json(payload)
        with self._cv:
            self._notices_in_flight += 1
            generation = self._generation

        def send() -> None:
            record: dict[str, Any] = {"url": url, "payload": body.decode(), "at": _utc()}
            try:
                with httpx.Client(timeout=self.settings.timeout_seconds) as client:
                    record["status"] = client.post(
                        url, content=body, headers={"Content-Type": "application/json"}).status_code
            except httpx.HTTPError as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            with self._cv:
                self._notices_in_flight -= 1
                if generation == self._generation:
                    self.notices.append(record)
                self._cv.notify_all()

        threading.Thread(target=send, daemon=True, name="sandbox-webhook-notice").start()

    # ---- observation ----------------------------------------------------------------------
    def pending(self, webhook_id: int | None = None) -> int:
        with self._cv:
            if webhook_id is not None:
                return len(self._queues.get(webhook_id) or ())
            return sum(len(q) for q in self._queues.values()) + self._notices_in_flight

    def counters(self, webhook_id: int) -> dict[str, int]:
        with self._cv:
            return {**self._counters[webhook_id].as_dict(), "pending": len(self._queues.get(webhook_id) or ())}

    def totals(self) -> dict[str, int]:
        with self._cv:
            keys = _Counters().as_dict().keys()
            total = {k: sum(getattr(c, k) for c in self._counters.values()) for k in keys}
            total.pop("consecutive_failures")
            return {**total, "pending": sum(len(q) for q in self._queues.values()) + self._notices_in_flight}

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is queued or in flight (retries waiting count as pending)."""
        with self._cv:
            return self._cv.wait_for(
                lambda: not any(self._queues.values()) and self._notices_in_flight == 0, timeout=timeout)

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            lanes = list(self._lanes.values())
            self._cv.notify_all()
        for lane in lanes:
            lane.join(timeout=self.settings.timeout_seconds + 1)

    # ---- the lane ---------------------------------------------------------------------------
    def _next(self, webhook_id: int, generation: int) -> Callout | None:
        """Block until this webhook's head callout is due; None when the lane must exit."""
        with self._cv:
            while True:
                if self._stopping or generation != self._generation:
                    return None
                queue = self._queues.get(webhook_id)
                if not queue:
                    self._cv.wait(1.0)
                    continue
                wait = queue[0].next_at - time.monotonic()
                if wait <= 0:
                    queue[0].attempts += 1
                    return queue[0]
                self._cv.wait(wait)

    def _lane(self, webhook_id: int, generation: int) -> None:
        with httpx.Client() as client:
            while (item := self._next(webhook_id, generation)) is not None:
                error = self._post(client, item)
                if self._settle(item, error, generation) and self.on_exhausted is not None:
                    self.on_exhausted(webhook_id)

    def _post(self, client: httpx.Client, item: Callout) -> str | None:
        headers = {"Content-Type": "application/json", "X-Hook-Signature": hook_signature(item.secret, item.body)}
        try:
            response = client.post(item.url, content=item.body, headers=headers,
                                   timeout=self.settings.timeout_seconds)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"

    def _settle(self, item: Callout, error: str | None, generation: int) -> bool:
        """Record one attempt's outcome; True when the webhook just reached its failure limit."""
        with self._cv:
            queue = self._queues.get(item.webhook_id)
            if generation != self._generation or not queue or queue[0] is not item:
                return False  # reset, deleted or deactivated while the request was out
            counters = self._counters[item.webhook_id]
            self.recent.append({"webhookID": item.webhook_id, "sequenceNumber": item.sequence,
                                "attempt": item.attempts, "error": error, "at": _utc()})
            exhausted = False
            if error is None:
                queue.popleft()
                counters.delivered += 1
                counters.consecutive_failures = 0
            else:
                item.errors.append(error)
                counters.attempts_failed += 1
                counters.consecutive_failures += 1
                if item.attempts >= self.settings.max_attempts:
                    queue.popleft()
                    counters.failed += 1
                    self.error_log.append({
                        "webhookID": item.webhook_id, "sequenceNumber": item.sequence,
                        "payload": item.body.decode(), "errorMessage": error, "attempts": item.attempts,
                        "at": _utc()})
                else:
                    item.next_at = time.monotonic() + self.settings.retry_seconds
                if counters.consecutive_failures >= self.settings.deactivate_after:
                    counters.consecutive_failures = 0
                    exhausted = True
            self._cv.notify_all()
            return exhausted

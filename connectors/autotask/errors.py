"""Every way an Autotask call can fail, as one tree, built by one function.

::

    AutotaskError
    ├── PermanentError            retrying cannot help; dead-letter with the reason
    │   ├── TicketNotFound        200 {"item": null}, or a ticket-number query with no match
    │   ├── AuthError             401 / 403
    │   └── RejectedError         500 with errors[] (validation, business rule), other 4xx
    └── RetryableError            back off and try again
        ├── RateLimited           429, or the hourly request threshold
        ├── ThreadThresholdExceeded   "thread threshold" / Itgenatr005, whatever the HTTP status
        ├── LockContention        500 whose errors[] speak of a lock, deadlock or timeout
        ├── ServiceUnavailable    502 / 503 / 504, or 500 without an errors[] body
        └── TransportError        timeouts and connection errors (no response at all)

Autotask answers most failed operations with HTTP 500 and ``{"errors": [...]}``; those are usually
deterministic validation errors, so a 500 is only retried when its text says it is transient.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from connectors.common.http import parse_retry_after

__all__ = [
    "AuthError",
    "AutotaskError",
    "LockContention",
    "PermanentError",
    "RateLimited",
    "RejectedError",
    "RetryableError",
    "ServiceUnavailable",
    "ThreadThresholdExceeded",
    "TicketNotFound",
    "TransportError",
    "from_response",
    "from_transport_error",
    "may_have_been_applied",
    "parse_retry_after",
]

_THREAD_MARKERS = ("thread threshold", "itgenatr005")
_RATE_MARKERS = ("request threshold", "rate limit", "threshold exceeded", "requests per hour")
_LOCK_MARKERS = ("deadlock", "lock", "timeout expired", "timed out", "try again")
_EXCERPT = 500


class AutotaskError(Exception):
    """Base of the tree. ``code`` is a stable short name used as the audit reason."""

    retryable: bool = False
    code: str = "autotask-error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        errors: list[str] | None = None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.errors = errors or []
        self.method = method
        self.path = path

    @property
    def reason(self) -> str:
        """One line for the audit log: the code and what Autotask said."""
        detail = "; ".join(self.errors) or str(self)
        return f"{self.code}: {detail}"[:_EXCERPT]


class PermanentError(AutotaskError):
    code = "autotask-rejected"


class TicketNotFound(PermanentError):
    code = "ticket-not-found"


class AuthError(PermanentError):
    code = "autotask-auth"


class RejectedError(PermanentError):
    code = "autotask-rejected"


class RetryableError(AutotaskError):
    retryable = True
    code = "autotask-unavailable"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    code = "autotask-rate-limited"


class ThreadThresholdExceeded(RetryableError):
    code = "autotask-thread-threshold"


class LockContention(RetryableError):
    code = "autotask-lock"


class ServiceUnavailable(RetryableError):
    code = "autotask-unavailable"


class TransportError(RetryableError):
    """No response. ``sent`` is False only when the request surely never reached Autotask."""

    code = "autotask-transport"

    def __init__(self, message: str, *, sent: bool = True, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.sent = sent


def _errors_of(body: Any) -> list[str] | None:
    """The ``errors[]`` list as strings; entries may be strings or ``{"message": ...}`` objects."""
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return None
    out: list[str] = []
    for item in body["errors"]:
        if isinstance(item, dict):
            out.append(str(item.get("message") or item))
        else:
            out.append(str(item))
    return out


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return None


def from_response(response: httpx.Response) -> AutotaskError | None:
    """Classify one HTTP response. ``None`` means success."""
    status = response.status_code
    method, path = response.request.method, response.request.url.path
    body = _json(response)
    errors = _errors_of(body)
    text = " ".join(errors or [response.text[:_EXCERPT]]).lower()
    kw: dict[str, Any] = {"status_code": status, "errors": errors, "method": method, "path": path}
    retry_after = parse_retry_after(response.headers.get("Retry-After"))

    # The thread-threshold error is recognised by its text whatever status carries it.
    if status >= 400 and any(m in text for m in _THREAD_MARKERS):
        return ThreadThresholdExceeded("Autotask thread threshold exceeded", retry_after=retry_after, **kw)
    if status == 200:
        if isinstance(body, dict) and "item" in body and body["item"] is None:
            return TicketNotFound(f"{method} {path}: no such record (item is null)", **kw)
        return None
    if 200 < status < 300:
        return None
    if status in (401, 403):
        return AuthError(f"Autotask refused the credentials (HTTP {status})", **kw)
    if status == 429 or (status >= 400 and any(m in text for m in _RATE_MARKERS)):
        return RateLimited(f"Autotask rate limit (HTTP {status})", retry_after=retry_after, **kw)
    if status in (502, 503, 504):
        return ServiceUnavailable(f"Autotask unavailable (HTTP {status})", retry_after=retry_after, **kw)
    if status >= 500:
        if errors is None:
            return ServiceUnavailable(f"Autotask HTTP {status} without errors[]", retry_after=retry_after, **kw)
        if any(m in text for m in _LOCK_MARKERS):
            return LockContention("Autotask reported lock contention", retry_after=retry_after, **kw)
        return RejectedError(f"Autotask rejected {method} {path}", **kw)
    return RejectedError(f"Autotask answered HTTP {status} to {method} {path}", **kw)


def from_transport_error(exc: httpx.HTTPError, method: str, path: str) -> TransportError:
    """No answer: the message names the host asked and the error, so "cannot reach Autotask" says where
    and why (a wrong zone, DNS, a firewall) without a traceback."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed to connect"
    # Only a refused or unmade connection proves Autotask never saw the request.
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    try:
        host = exc.request.url.host
    except RuntimeError:  # an error raised before the request existed
        host = ""
    detail = " ".join(str(exc).split())[:200]
    where = f" on {host}" if host else ""
    return TransportError(f"{method} {path}{where} {kind}: {type(exc).__name__}" + (f": {detail}" if detail else ""),
                          method=method, path=path, sent=sent)


def may_have_been_applied(error: AutotaskError) -> bool:
    """True when a failed write might still have happened (no answer, or a gateway error)."""
    if isinstance(error, TransportError):
        return error.sent
    return isinstance(error, ServiceUnavailable)

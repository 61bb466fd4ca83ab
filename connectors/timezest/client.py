"""TimeZest REST client: Bearer auth, cursor paging via ``next_page``, 429 with Retry-After, and a
client-side limit of 180 requests per rolling minute (TimeZest's documented-by-community limit)."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from connectors.common.http import parse_retry_after
from connectors.timezest.parse import SchedulingRequest

__all__ = ["RateLimiter", "TimezestAuthError", "TimezestClient", "TimezestError", "TimezestUnavailable"]


class TimezestError(Exception):
    """TimeZest refused or failed a request."""

    retryable = False


class TimezestAuthError(TimezestError):
    """401/403: the API key is missing, invalid, or lacks permission."""


class TimezestUnavailable(TimezestError):
    """429, 5xx, timeouts: try again later."""

    retryable = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimiter:
    """At most ``limit`` calls in any ``window`` seconds; waits (never fails) when full."""

    def __init__(self, limit: int = 170, window: float = 60.0, sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit, self.window, self._sleep = limit, window, sleep
        self._calls: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._calls and self._calls[0] <= now - self.window:
                    self._calls.popleft()
                if len(self._calls) < self.limit:
                    self._calls.append(now)
                    return
                wait = self._calls[0] + self.window - now
            self._sleep(max(wait, 0.01))


class TimezestClient:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float = 20.0,
        transport: httpx.BaseTransport | None = None,
        limiter: RateLimiter | None = None,
        max_attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._base = base_url.rstrip("/") + "/"
        self._http = httpx.Client(
            timeout=timeout, transport=transport,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        )
        self._limiter = limiter or RateLimiter(sleep=sleep)
        self._max_attempts = max_attempts
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TimezestUnavailable) and exc.retry_after is not None:
            return min(exc.retry_after, 60.0)
        return float(wait_random_exponential(multiplier=0.5, max=8)(state))

    def _get_once(self, url: str, params: dict[str, str] | None) -> Any:
        self._limiter.acquire()
        try:
            response = self._http.get(url, params=params)
        except httpx.HTTPError as exc:
            raise TimezestUnavailable(f"TimeZest unreachable: {type(exc).__name__}") from exc
        if response.status_code in (401, 403):
            raise TimezestAuthError(f"TimeZest refused the API key (HTTP {response.status_code}): "
                                    f"{response.text[:200]}")
        if response.status_code == 429 or response.status_code >= 500:
            raise TimezestUnavailable(f"TimeZest HTTP {response.status_code}",
                                      parse_retry_after(response.headers.get("Retry-After")))
        if response.status_code >= 400:
            raise TimezestError(f"TimeZest HTTP {response.status_code}: {response.text[:200]}")
        return response.json()

    def _get(self, url: str, params: dict[str, str] | None = None) -> Any:
        retrying = Retrying(stop=stop_after_attempt(self._max_attempts), wait=self._wait,
                            retry=retry_if_exception_type(TimezestUnavailable), reraise=True, sleep=self._sleep)
        return retrying(self._get_once, url, params)

    def _next_url(self, next_page: str) -> str:
        # Seen in the wild: next_page as a bare query string rather than an absolute URL.
        if next_page.startswith(("http://", "https://")):
            return next_page
        if next_page.startswith("?"):
            return self._base + "scheduling_requests" + next_page
        return str(httpx.URL(self._base).join(next_page))

    def scheduling_requests(self, *, tql: str | None = None, max_pages: int = 500) -> Iterator[SchedulingRequest]:
        """Every scheduling request, newest first, following ``next_page`` (20 per page)."""
        url: str | None = self._base + "scheduling_requests"
        params = {"filter": tql} if tql else None
        for _ in range(max_pages):
            if url is None:
                return
            page = self._get(url, params)
            params = None  # next_page carries the filter and cursor already
            for item in page.get("data") or []:
                yield SchedulingRequest.model_validate(item)
            nxt = page.get("next_page")
            url = self._next_url(nxt) if nxt else None

    def scheduling_request(self, request_id: str) -> SchedulingRequest:
        return SchedulingRequest.model_validate(self._get(self._base + f"scheduling_requests/{request_id}"))

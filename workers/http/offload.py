"""CPU work on a request's body, kept off the event loop when it is large.

Verifying a signature, parsing JSON and validating it cost time in proportion to the body. For the
bodies partners really send (a few KB) that is well under a millisecond, cheaper than a hop to a
thread, so it stays inline. A body over :data:`INLINE_BYTES` (anyone may send 256 KiB with a bogus
signature) is handled on a worker thread, at most :data:`THREADS` at a time: while it is, the event
loop keeps answering everyone else (health checks, small genuine callouts), and a flood of large
bodies queues behind itself instead of in front of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

__all__ = ["INLINE_BYTES", "THREADS", "Offload"]

#: Bodies up to this size are handled on the event loop (about 0.1-0.3 ms of CPU at most).
INLINE_BYTES = 32 * 1024
#: Large bodies handled at once, each on its own thread (one per core of a small host).
THREADS = 2

T = TypeVar("T")


class Offload:
    """Runs ``fn`` inline for a small body, else on a thread under a limiter of :data:`THREADS`."""

    def __init__(self, inline_bytes: int = INLINE_BYTES, threads: int = THREADS) -> None:
        self.inline_bytes, self.threads = inline_bytes, threads
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    def _limiter_for_this_loop(self) -> anyio.CapacityLimiter:
        # A limiter belongs to one event loop; a test client may run a new loop per block of requests.
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._loop is not loop:
            self._loop, self._limiter = loop, anyio.CapacityLimiter(self.threads)
        return self._limiter

    async def run(self, size: int, fn: Callable[[], T]) -> T:
        if size <= self.inline_bytes:
            return fn()
        return await anyio.to_thread.run_sync(fn, limiter=self._limiter_for_this_loop())

"""Dashboard sign-in throttle: failures slow their client address down, exponentially; never a lockout.

The old limit answered 429 to everyone behind an address after 10 failures, the right token included:
whoever shared the address (or spoofed it) could keep the admin out. Here each client address gets
:data:`FREE` attempts, then every further attempt waits its turn, ``BASE * 2**k`` seconds after the
previous one (at most :data:`MAX_DELAY`), and only then is the token checked; a success starts the
address afresh. Guessing is slowed to one
try per turn per address, and the right token always gets in at its turn: the throttle delays, it does
not refuse. Attempts from one address wait in line, so parallel connections do not multiply the tries;
the line is short (:data:`MAX_WAITING` per address, :data:`MAX_SLEEPERS` in all, at most
:data:`MAX_WAIT` seconds ahead): past it an attempt is answered 429 "wait N s" without being checked,
so a flood cannot hold the process's connections.

The address is the one the connection comes from, or the one a proxy in ``ATRELAY_TRUSTED_PROXIES``
names (uvicorn's ``forwarded_allow_ips``): an ``X-Forwarded-For`` from anyone else is not believed.
A full line refuses every attempt in it, the right token too, so a browser that signed in before
presents a signed device cookie and waits in a line of its own, keyed by the device (workers/http/ops.py):
guesses from others behind its address cannot fill that line, and the same rules slow it.
State is per process and bounded (:data:`MAX_CLIENTS` addresses, forgotten after :data:`FORGET` s).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["BASE", "FREE", "MAX_DELAY", "MAX_WAIT", "MAX_WAITING", "SignInThrottle", "TooMany", "delay_after"]

#: Attempts an address may make (without a success) before its attempts wait.
FREE = 5
#: The first wait, in seconds; doubled with each further failure ...
BASE = 0.25
#: ... up to this (a try every 30 s: about 120 an hour from one address).
MAX_DELAY = 30.0
#: Attempts may wait in line this far ahead, and this many per address, this many in the process.
MAX_WAIT = 60.0
MAX_WAITING = 4
MAX_SLEEPERS = 64
#: An address without a failure for this long starts afresh.
FORGET = 900.0
MAX_CLIENTS = 10_000


def delay_after(attempts: int) -> float:
    """How long an address waits for its next turn after ``attempts`` attempts without a success."""
    if attempts <= FREE:
        return 0.0
    return min(BASE * 2.0 ** (attempts - FREE - 1), MAX_DELAY)


class TooMany(Exception):
    """The line for this address (or the process) is full: try again in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Address:
    # Attempts since the last success: counted when an attempt takes its turn, not when it fails, so
    # guesses sent all at once cannot all be checked before the first failure is counted.
    attempts: int = 0
    last_attempt: float = 0.0
    next_turn: float = 0.0
    waiting: int = 0


class SignInThrottle:
    def __init__(self) -> None:
        self._clients: OrderedDict[str, _Address] = OrderedDict()
        self._lock = threading.Lock()
        self._sleepers = 0

    def _address(self, client: str, now: float) -> _Address:
        entry = self._clients.get(client)
        if entry is not None and entry.waiting == 0 and now - entry.last_attempt > FORGET:
            entry = None
        if entry is None:
            entry = self._clients[client] = _Address()
        self._clients.move_to_end(client)
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        return entry

    async def turn(self, client: str) -> float:
        """Wait for this address's turn to have a sign-in checked; return the seconds waited.

        Raises :class:`TooMany` when the line is full (the attempt is not checked at all).
        """
        now = time.monotonic()
        with self._lock:
            entry = self._address(client, now)
            at = max(now, entry.next_turn)
            wait = at - now
            if wait > 0 and (wait > MAX_WAIT or entry.waiting >= MAX_WAITING or self._sleepers >= MAX_SLEEPERS):
                raise TooMany(max(1, math.ceil(wait)))
            entry.attempts += 1
            entry.last_attempt = now
            entry.next_turn = at + delay_after(entry.attempts)
            entry.waiting += 1
            self._sleepers += 1 if wait > 0 else 0
        try:
            if wait > 0:
                await asyncio.sleep(wait)
        finally:
            with self._lock:
                entry.waiting -= 1
                self._sleepers -= 1 if wait > 0 else 0
        return wait

    def failed(self, client: str) -> None:
        """A checked attempt was wrong: the next one waits a full delay from now (the check took time)."""
        now = time.monotonic()
        with self._lock:
            entry = self._address(client, now)
            entry.last_attempt = now
            entry.next_turn = max(entry.next_turn, now + delay_after(entry.attempts))

    def succeeded(self, client: str) -> None:
        with self._lock:
            entry = self._clients.get(client)
            if entry is not None and entry.waiting == 0:
                del self._clients[client]
            elif entry is not None:  # others from this address still wait their turn: they keep it
                entry.attempts, entry.next_turn = 0, 0.0

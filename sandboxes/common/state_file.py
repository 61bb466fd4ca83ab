"""A sandbox's state kept in one JSON file, so a restarted sandbox still has what the audit DB remembers.

The audit database outlives `atrelay run`; a sandbox that forgot its tickets, notes and webhooks on
restart would contradict it, and one that handed out the same ids again would make atrelay meet an id
it already knows on a different record. So the sandbox processes (`atrelay sandbox ...`, which
`atrelay run` starts) load this file at start, save it shortly after each change and on shutdown.
Tests that build a state in-process never touch a file.

Robust on purpose: writes go to a temporary file that is renamed over the old one (a crash leaves the
old or the new file, never half of one), created 0600 (the state holds webhook secrets); a file that
cannot be read back is reported, moved aside and the sandbox starts from its seed data.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FORMAT_VERSION", "IdSequence", "PersistOnChange", "StateFile"]

#: Bumped when the layout changes incompatibly; a file of another version is moved aside, not misread.
FORMAT_VERSION = 1


class IdSequence:
    """``itertools.count`` whose next value can be read without consuming it, so it can be saved."""

    def __init__(self, start: int) -> None:
        self._next = start
        self._lock = threading.Lock()  # webhook ids are drawn on delivery threads too

    def __iter__(self) -> IdSequence:
        return self

    def __next__(self) -> int:
        with self._lock:
            value = self._next
            self._next += 1
            return value

    @property
    def peek(self) -> int:
        """The value the next ``next()`` returns."""
        return self._next


class StateFile:
    """One JSON document at ``path``; ``report`` receives one line per problem (never an exception)."""

    def __init__(self, path: Path, report: Callable[[str], None]) -> None:
        self.path = path
        self.report = report

    def load_into(self, restore: Callable[[dict[str, Any]], None], reset: Callable[[], None]) -> bool:
        """Restore the saved state; False (seed data kept) when there is none or it is unusable."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        except OSError as exc:
            self.report(f"cannot read sandbox state {self.path}: {exc}; starting from the seed data")
            return False
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
                raise ValueError(f"not a version-{FORMAT_VERSION} sandbox state")
            restore(data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reset()  # a half-applied restore must not survive
            self._move_aside(f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _move_aside(self, why: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            self.report(f"sandbox state {self.path} is unusable ({why}) and could not be moved aside ({exc}); "
                        "starting from the seed data")
            return
        self.report(f"sandbox state {self.path} is unusable ({why}); moved to {aside.name}, "
                    "starting from the seed data")

    def save(self, data: dict[str, Any]) -> None:
        """Write atomically (temp file + rename), 0600 whatever the umask."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        payload = json.dumps({**data, "version": FORMAT_VERSION}, separators=(",", ":")).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


class PersistOnChange:
    """ASGI wrapper: after a request that may change state, save within ``delay`` seconds, and at shutdown.

    Saves run on the event loop (``call_later``), so no request handler mutates the state while it
    is dumped; a burst of writes costs one save. Reads (GET, HEAD and ``.../query`` POSTs, which the
    reconciliation poll sends often) schedule nothing.
    """

    def __init__(self, app: ASGIApp, save: Callable[[], None], report: Callable[[str], None],
                 delay: float = 0.3) -> None:
        self.app = app
        self.save = save
        self.report = report
        self.delay = delay
        self._pending = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS") \
                    and not str(scope["path"]).lower().rstrip("/").endswith("/query") and not self._pending:
                self._pending = True
                asyncio.get_running_loop().call_later(self.delay, self._run)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # The last save happens here, not after ``uvicorn.run`` returns: uvicorn re-raises the SIGTERM
        # it caught once the server has stopped, which ends the process before any code after it runs.
        # Answered here so the sandbox apps' own start-up/shutdown hooks keep running as before (not at all).
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._run()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _run(self) -> None:
        self._pending = False
        try:
            self.save()
        except OSError as exc:  # a full disk must not take the sandbox down; the next change retries
            self.report(f"cannot save sandbox state: {exc}")

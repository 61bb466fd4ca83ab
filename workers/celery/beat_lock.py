"""Only one beat schedules at a time, however many are started (a second one waits as standby).

The leader holds a lock with a short expiry and renews it; if it dies the lock expires and a standby
takes over within ``ATRELAY_BEAT_LOCK_SECONDS``. Redis in distributed mode; a file lock in the var
folder otherwise (the embedded mode runs on one machine).
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import IO

from workers.settings import Settings

__all__ = ["BeatLock"]

log = logging.getLogger("atrelay.beat")


class BeatLock:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ttl = settings.beat_lock_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._file: IO[str] | None = None
        self._redis = None
        if settings.effective_broker_url.startswith(("redis://", "rediss://")):
            import redis

            self._redis = redis.Redis.from_url(settings.effective_broker_url)

    def _try(self) -> bool:
        if self._redis is not None:
            return bool(self._redis.set("atrelay:beat-lock", self.owner, nx=True, ex=self.ttl))
        path = Path(self.settings.var_path) / "beat.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def acquire(self) -> None:
        """Block until this process is the leader (logging once that it waits as standby)."""
        announced = False
        while not self._try():
            if not announced:
                log.warning("beat.standby", extra={"owner": self.owner, "ttl": self.ttl})
                announced = True
            time.sleep(max(1.0, self.ttl / 3))
        log.info("beat.leader", extra={"owner": self.owner})
        if self._redis is not None:
            threading.Thread(target=self._renew, daemon=True, name="beat-lock").start()

    # Renew our lock; if the key is gone (Redis restarted without persistence, or it expired while
    # Redis was away) nobody leads, so take it back. Only another owner's key means we lost it.
    _RENEW = """
    local holder = redis.call('GET', KEYS[1])
    if holder == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
    if not holder then
      if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
    end
    return 0
    """

    def _renew(self) -> None:
        assert self._redis is not None
        renew = self._redis.register_script(self._RENEW)
        while True:
            time.sleep(self.ttl / 3)
            try:
                held = renew(keys=["atrelay:beat-lock"], args=[self.owner, self.ttl])
            except Exception:
                held = 1  # Redis briefly away: keep going; the expiry protects the other side
            if not held:
                log.error("beat.lock_lost", extra={"owner": self.owner})
                os._exit(3)  # another beat leads now; a supervisor restarts us as standby

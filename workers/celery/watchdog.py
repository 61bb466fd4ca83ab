"""Each atrelay process's heartbeat, and the liveness checks every process makes.

Every worker, beat and ingress process runs one :class:`Watchdog` thread. Each
``ATRELAY_HEARTBEAT_SECONDS`` it records the process's heartbeat (``pipelines.heartbeats``), then checks
liveness (``pipelines.liveness``: no worker, no beat, stuck events, overdue polls), records an alert for
each change, and sends the alerts that are due (``workers.celery.alerts.send_due``, claimed per kind, so
several processes never send one twice). So whichever process is still alive tells: the ingress says
"no worker alive" (and names a missing beat) when every worker is stopped, a worker names a dead beat.

A worker's heartbeat also carries whether it can work: while Autotask refuses its credentials (or
cannot be reached) it is not ready, and it checks again every ``max(30 s, 3 heartbeats)``; once it
works, the events held meanwhile are released at once (``pipelines.holds``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from celery.signals import beat_init, worker_ready, worker_shutdown

from workers.settings import Settings, get_settings

__all__ = ["Watchdog", "process_version"]

log = logging.getLogger("atrelay.watchdog")


def process_version() -> str:
    try:
        return version("atrelay")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


class Watchdog:
    """Heartbeat, liveness checks and alert sending for one process, on a daemon thread."""

    def __init__(self, settings: Settings, role: str, *, check: bool = True) -> None:
        self.settings, self.role, self.check = settings, role, check
        self.db = settings.effective_database_url
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.id = f"{role}:{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.interval = settings.heartbeat_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        self._problem: str | None = None
        self._next_probe = 0.0
        self._ticks = 0

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Watchdog:
        if self.role == "worker":
            from workers.celery.startup import startup_problem

            self._problem = startup_problem()
            self._next_probe = time.monotonic() + self._probe_every()
        self._thread = threading.Thread(target=self._run, name=f"watchdog-{self.role}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and say so (a process stopped on purpose is not alive from now on)."""
        from pipelines.heartbeats import mark_stopped

        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            mark_stopped(self.db, self.id)
        except Exception:  # the database may be what is going away
            log.warning("watchdog.stop_not_recorded", exc_info=True)

    def _run(self) -> None:
        was_ready: bool | None = None
        while True:
            try:
                ready = self.tick()
                if self.role == "worker" and ready and was_ready is not True:
                    self._release_held()
                was_ready = ready
            except Exception:  # a database hiccup: the next beat tries again
                log.warning("watchdog.tick_failed", extra={"role": self.role}, exc_info=True)
            if self._stop.wait(self.interval):
                return

    # ---- one beat -------------------------------------------------------------------------------
    def _probe_every(self) -> float:
        return max(30.0, 3 * self.interval)

    def tick(self) -> bool:
        """Beat, then (after one heartbeat timeout of grace) check liveness and send what is due."""
        from pipelines.heartbeats import beat, forget_old

        if self.role == "worker" and self._problem is not None and time.monotonic() >= self._next_probe:
            self._probe()
        ready = self._problem is None
        beat(self.db, process_id=self.id, role=self.role, host=self.host, pid=self.pid, version=process_version(),
             ready=ready, problem=self._problem)
        self._ticks += 1
        if self._ticks % 360 == 1:
            forget_old(self.db)
        # A process that just started has not yet heard from the others: no alarm until it could have.
        if self.check and time.monotonic() - self._started >= self.settings.heartbeat_timeout_seconds:
            self.assess_and_alert()
        return ready

    def assess_and_alert(self) -> None:
        from pipelines.liveness import raise_alerts
        from workers.celery.alerts import send_pending
        from workers.status import liveness

        made = raise_alerts(self.db, liveness(self.settings))
        if made:
            log.warning("watchdog.alerts_recorded", extra={"role": self.role, "alert_ids": made})
        send_pending(self.settings)

    def _probe(self) -> None:
        from workers.celery.startup import probe_autotask, set_startup_problem

        self._next_probe = time.monotonic() + self._probe_every()
        problem = probe_autotask(self.settings)
        if problem is None:
            log.info("watchdog.autotask_ok", extra={"was": self._problem})
        self._problem = problem
        set_startup_problem(problem)

    def _release_held(self) -> None:
        from pipelines.holds import release_credential_holds
        from workers.celery.queue import enqueue_event

        ids = release_credential_holds(self.db)
        for event_id in ids:
            enqueue_event(event_id)
        if ids:
            log.warning("watchdog.held_events_released", extra={"count": len(ids), "event_ids": ids[:20]})


_current: dict[str, Watchdog] = {}


def _worker_started(**_kwargs: Any) -> None:
    _current["worker"] = Watchdog(get_settings(), "worker").start()


def _worker_stopping(**_kwargs: Any) -> None:
    dog = _current.pop("worker", None)
    if dog is not None:
        dog.stop()


def _beat_started(**_kwargs: Any) -> None:
    # The embedded beat is a child forked from the worker: it must not share the parent's connections,
    # and the parent's watchdog thread does not exist here.
    from pipelines.db import forget_engines_after_fork

    forget_engines_after_fork()
    _current.pop("worker", None)
    _current["beat"] = Watchdog(get_settings(), "beat").start()
    if threading.current_thread() is threading.main_thread():
        # A beat stopped on purpose says so, as a worker does on worker_shutdown (Celery has no signal for
        # a beat's end): else it looks alive for a heartbeat timeout after Ctrl-C or `systemctl stop`. The
        # embedded beat is a child process that SIGTERM/SIGINT would end at once, with no cleanup at all.
        signal.signal(signal.SIGTERM, _beat_stopping)
        signal.signal(signal.SIGINT, _beat_stopping)


def _beat_stopping(_signum: int, _frame: object) -> None:
    # Ctrl-C's SIGINT is followed at once by the worker's SIGTERM to its embedded beat: a second signal
    # must not interrupt the first one's record of the stop.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    dog = _current.pop("beat", None)
    if dog is not None:
        dog.stop()
    raise SystemExit(0)  # Celery's beat loop ends on it and saves its schedule file


# Strong references: the handlers are module functions, but say so rather than rely on it.
worker_ready.connect(_worker_started, weak=False)
worker_shutdown.connect(_worker_stopping, weak=False)
beat_init.connect(_beat_started, weak=False)

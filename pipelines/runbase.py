"""What every pipeline run shares: how it ends, how it retries, its attempt log and its ticket lease."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from connectors.autotask.client import Attempt
from connectors.autotask.errors import AuthError, PermanentError, RetryableError
from connectors.autotask.picklists import UnknownPicklistValue
from pipelines import store
from pipelines.audit import EventState, InboundEvent
from pipelines.context import Context
from pipelines.db import utcnow
from pipelines.retry import backoff_seconds, plan_retry

__all__ = ["Heartbeat", "Result", "RunBase"]

log = logging.getLogger("atrelay.pipeline")


@dataclass(frozen=True)
class Result:
    """How a run ended. ``retry_in`` asks the caller to enqueue the event again after that many seconds."""

    state: str
    reason: str | None = None
    retry_in: float | None = None
    derived: list[int] = field(default_factory=list)
    #: (ticket id, status id, when) the run left the ticket in, as atrelay knew it then: a follow-up
    #: run right after it needs no read, unless atrelay has heard of the ticket since.
    left: tuple[int, int, datetime] | None = None


class Heartbeat:
    """Renews a run's event lease (and its ticket lease) while the run works, from a daemon thread.

    A run may take minutes (governor waits, timeouts); without renewal its lease would run out and
    the sweeper would hand the live event to a second worker. ``lost`` is set once a renewal finds
    that another run owns the event; the run then writes nothing more.
    """

    def __init__(self, db: str, event_id: int, owner: str, lease_seconds: float) -> None:
        self.db, self.event_id, self.owner, self.lease_seconds = db, event_id, owner, lease_seconds
        self.ticket_id: int | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{event_id}", daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        interval = max(0.5, self.lease_seconds / 3)
        while not self._stop.wait(interval):
            try:
                if not store.renew_lease(self.db, self.event_id, self.owner, self.lease_seconds, self.ticket_id):
                    self.lost.set()
                    log.warning("pipeline.lease.lost", extra={"event_id": self.event_id})
                    return
            except Exception:  # a database hiccup: try again next beat; the lease still has 2/3 left
                log.warning("pipeline.lease.renew_failed", extra={"event_id": self.event_id}, exc_info=True)


class RunBase:
    """What every run shares: its endings, the retry plan, the attempt log and the ticket lease."""

    def __init__(self, ctx: Context, row: InboundEvent, run_id: int, owner: str | None = None) -> None:
        assert row.id is not None
        self.ctx, self.row, self.run_id, self.event_id = ctx, row, run_id, row.id
        self.owner = owner
        self.heartbeat = Heartbeat(ctx.db, row.id, owner, ctx.lease_seconds) if owner else None
        self._leased_ticket: int | None = None
        # Shadow mode (pipelines.shadow): None until a write point asks; "" = writes go to Autotask, else
        # why they were recorded instead ("mode" or "accepted"). The run's reason then says so.
        self.shadow_held: str | None = None

    @property
    def leased_ticket(self) -> int | None:
        return self._leased_ticket

    @leased_ticket.setter
    def leased_ticket(self, ticket_id: int | None) -> None:
        self._leased_ticket = ticket_id
        if self.heartbeat is not None:
            self.heartbeat.ticket_id = ticket_id

    def guard(self) -> None:
        """Called right before every Autotask write: a run that lost its event's lease, or its ticket's,
        writes nothing more."""
        if self.owner is None:
            return
        if (self.heartbeat is not None and self.heartbeat.lost.is_set()) or not store.owns(
                self.ctx.db, self.event_id, self.owner, self.leased_ticket):
            raise store.LeaseLost(f"event #{self.event_id}: lease lost before a write")

    def run(self) -> Result:
        """Execute with the lease renewed throughout; a lost lease ends the run quietly."""
        if self.heartbeat is not None:
            self.heartbeat.start()
        try:
            return self.execute()
        except store.LeaseLost as exc:
            log.warning("pipeline.run.lease_lost", extra={"event_id": self.event_id, "error": str(exc)})
            return Result("lease-lost", str(exc))
        except Exception as exc:
            # A bug, or data the database refuses: retried a few times (it may be passing), then a dead
            # letter that names the exception, never a run the sweeper repeats for ever.
            log.exception("pipeline.run.crashed", extra={"event_id": self.event_id})
            return self._crashed(exc)
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()

    def execute(self) -> Result:
        raise NotImplementedError

    # ---- endings ----------------------------------------------------------------------------
    def _finish(self, state: EventState, outcome: str, reason: str | None = None, **kw: object) -> Result:
        if self.shadow_held:  # nothing reached Autotask: every screen showing this reason says so
            reason = f"shadow: nothing written ({reason or 'would apply'})"
        derived_id = store.finish_run(
            self.ctx.db, event_id=self.event_id, run_id=self.run_id, state=state, outcome=outcome,
            reason=reason, owner=self.owner, **kw,  # type: ignore[arg-type]
        )
        return Result(state.value, reason, derived=[derived_id] if derived_id else [])

    def _crashed(self, exc: Exception) -> Result:
        summary = f"{type(exc).__name__}: {exc}"
        crash = store.record_crash(self.ctx.db, event_id=self.event_id, run_id=self.run_id, owner=self.owner,
                                   summary=summary, max_crashes=self.ctx.max_crashes)
        if crash.dead or crash.retry_in is None:
            return Result(EventState.DEAD.value if crash.dead else "lease-lost", crash.reason)
        return Result(EventState.RETRYING.value, crash.reason, retry_in=crash.retry_in)

    def _retry_or_dead(self, exc: RetryableError) -> Result:
        now = utcnow()
        plan = plan_retry(attempts=self.row.attempts, retry_after=exc.retry_after,
                          horizon_from=self.row.horizon_from or self.row.received_at,
                          horizon_hours=self.ctx.retry_horizon_hours, now=now)
        if plan.kind == "dead":
            return self._finish(EventState.DEAD, "dead",
                                f"retries-exhausted after {self.row.attempts} attempts: {exc.reason}")
        state = EventState.RETRYING if plan.kind == "short" else EventState.PARKED
        self._finish(state, "retry", exc.reason, not_before=now + plan.not_before)
        return Result(state.value, exc.reason, retry_in=plan.delay if plan.kind == "short" else None)

    def _hold_for_credentials(self, exc: AuthError) -> Result:
        """Autotask refused atrelay's own credentials: no fault of the event, and every event would fail
        alike until they are fixed. Held as ``retrying`` (never dead) with a growing pause of at least a
        minute; a worker that finds the credentials working releases them all (pipelines.holds). The
        horizon still applies."""
        now = utcnow()
        plan = plan_retry(attempts=self.row.attempts, retry_after=max(60.0, backoff_seconds(self.row.attempts)),
                          horizon_from=self.row.horizon_from or self.row.received_at,
                          horizon_hours=self.ctx.retry_horizon_hours, now=now)
        if plan.kind == "dead":
            return self._finish(EventState.DEAD, "dead",
                                f"retries-exhausted after {self.row.attempts} attempts: {exc.reason}")
        reason = f"{exc.reason}; held until Autotask accepts atrelay's credentials (`atrelay doctor` says which)"
        self._finish(EventState.RETRYING, "retry", reason, not_before=now + plan.not_before)
        return Result(EventState.RETRYING.value, reason)

    def talk_to_autotask(self, work: Callable[[], Result], decision: str) -> Result:
        """Run ``work`` with every Autotask call audited; classify what fails (the one error policy).

        Permanent errors and unknown statuses dead-letter the event with the reason, except a refusal of
        atrelay's credentials (401/403), which holds it; retryable ones are retried or parked. The ticket
        lease, if one was taken, is released whatever happens.
        """
        self.ctx.client.set_attempt_hook(self._record_attempt)
        try:
            return work()
        except AuthError as exc:
            return self._hold_for_credentials(exc)
        except PermanentError as exc:
            return self._finish(EventState.DEAD, "dead", exc.reason, decision=decision)
        except UnknownPicklistValue as exc:
            return self._finish(EventState.DEAD, "dead", f"unknown-status: {exc}", decision=decision)
        except RetryableError as exc:
            return self._retry_or_dead(exc)
        finally:
            self.ctx.client.set_attempt_hook(None)
            if self.leased_ticket is not None:
                # Only while this run holds it: a run that lost its lease must not free the new owner's.
                store.release_ticket(self.ctx.db, self.leased_ticket, self.event_id, owner=self.owner)
                self.leased_ticket = None

    def _record_attempt(self, attempt: Attempt) -> None:
        store.record_attempt(self.ctx.db, self.event_id, self.run_id, attempt)

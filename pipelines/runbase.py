"""What every pipeline run shares: how it ends, how it retries, its attempt log and its ticket lease."""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.autotask.client import Attempt
from connectors.autotask.errors import RetryableError
from pipelines import store
from pipelines.audit import EventState, InboundEvent
from pipelines.context import Context
from pipelines.db import utcnow
from pipelines.retry import plan_retry

__all__ = ["Result", "RunBase"]


@dataclass(frozen=True)
class Result:
    """How a run ended. ``retry_in`` asks the caller to enqueue the event again after that many seconds."""

    state: str
    reason: str | None = None
    retry_in: float | None = None
    derived: list[int] = field(default_factory=list)


class RunBase:
    """What every run shares: its endings, the retry plan, the attempt log and the ticket lease."""

    def __init__(self, ctx: Context, row: InboundEvent, run_id: int) -> None:
        assert row.id is not None
        self.ctx, self.row, self.run_id, self.event_id = ctx, row, run_id, row.id
        self.leased_ticket: int | None = None

    # ---- endings ----------------------------------------------------------------------------
    def _finish(self, state: EventState, outcome: str, reason: str | None = None, **kw: object) -> Result:
        derived_id = store.finish_run(
            self.ctx.db, event_id=self.event_id, run_id=self.run_id, state=state, outcome=outcome,
            reason=reason, **kw,  # type: ignore[arg-type]
        )
        return Result(state.value, reason, derived=[derived_id] if derived_id else [])

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

    def _record_attempt(self, attempt: Attempt) -> None:
        store.record_attempt(self.ctx.db, self.event_id, self.run_id, attempt)

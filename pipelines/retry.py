"""The retry policy, in one place: short retries on the broker, then parked in the database.

A short retry waits at most ``SHORT_RETRY_MAX`` seconds as a broker countdown, far below Redis's
visibility timeout, so the broker never redelivers early. Longer waits are *parked*: the event row
holds ``not_before`` and the beat sweeper re-enqueues it when due. The database, not the broker, is
the record of what is owed; past the horizon an event is dead-lettered with its last reason.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["SHORT_RETRY_MAX", "RetryPlan", "backoff_seconds", "plan_retry"]

SHORT_RETRY_MAX = 30.0
_SHORT = (5.0, 15.0, 30.0)  # attempts 1-3, on the broker
_PARKED_BASE, _PARKED_CAP = 120.0, 3600.0  # then 2 min, 4, 8, ... capped at an hour


def backoff_seconds(attempt: int) -> float:
    """Delay before the next try after ``attempt`` failed tries, with ±20 % jitter."""
    if attempt <= len(_SHORT):
        base = _SHORT[max(attempt, 1) - 1]
        return min(SHORT_RETRY_MAX, base * random.uniform(0.8, 1.2))
    base = min(_PARKED_CAP, _PARKED_BASE * 2 ** (attempt - len(_SHORT) - 1))
    return float(base * random.uniform(0.8, 1.2))


@dataclass(frozen=True)
class RetryPlan:
    kind: str  # "short" (broker countdown), "parked" (sweeper), or "dead" (past the horizon)
    delay: float = 0.0

    @property
    def not_before(self) -> timedelta:
        return timedelta(seconds=self.delay)


def plan_retry(
    *, attempts: int, retry_after: float | None, horizon_from: datetime, horizon_hours: int, now: datetime
) -> RetryPlan:
    delay = retry_after if retry_after is not None else backoff_seconds(attempts)
    if now + timedelta(seconds=delay) >= horizon_from + timedelta(hours=horizon_hours):
        return RetryPlan("dead")
    return RetryPlan("short" if delay <= SHORT_RETRY_MAX else "parked", delay)

"""The retry schedule: short retries on the broker, then parked with a capped exponential, then dead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipelines.retry import SHORT_RETRY_MAX, backoff_seconds, plan_retry

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def test_first_three_retries_are_short() -> None:
    for attempt, base in ((1, 5), (2, 15), (3, 30)):
        for _ in range(50):
            delay = backoff_seconds(attempt)
            assert 0.8 * base <= delay <= min(SHORT_RETRY_MAX, 1.2 * base)


def test_later_retries_grow_and_are_capped() -> None:
    assert 96 <= backoff_seconds(4) <= 144
    assert 192 <= backoff_seconds(5) <= 288
    for _ in range(50):
        assert backoff_seconds(30) <= 3600 * 1.2


def test_plans() -> None:
    kw = {"horizon_from": NOW, "horizon_hours": 72, "now": NOW}
    assert plan_retry(attempts=1, retry_after=None, **kw).kind == "short"  # type: ignore[arg-type]
    assert plan_retry(attempts=5, retry_after=None, **kw).kind == "parked"  # type: ignore[arg-type]
    honoured = plan_retry(attempts=1, retry_after=600, **kw)  # type: ignore[arg-type]
    assert (honoured.kind, honoured.delay) == ("parked", 600)
    late = plan_retry(attempts=9, retry_after=None, horizon_from=NOW - timedelta(hours=71, minutes=59),
                      horizon_hours=72, now=NOW)
    assert late.kind == "dead"

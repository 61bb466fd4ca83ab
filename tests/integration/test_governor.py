"""The quota governor on both backends: Redis (distributed) and the audit database (embedded)."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.governor import DbGovernor, QuotaExhausted, RedisGovernor, SlotBusy, _Base


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def make_governor(request: pytest.FixtureRequest) -> object:
    def make(**kw: object) -> _Base:
        if request.param == "redis":
            url = request.getfixturevalue("redis_url")
            return RedisGovernor(url, prefix=f"atrelay:test:{uuid.uuid4().hex}", **kw)  # type: ignore[arg-type]
        db = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
        return DbGovernor(db, **kw)  # type: ignore[arg-type]

    return make


def peak_in_flight(govs: list[_Base], *, calls: int, threads: int) -> int:
    """``calls`` slow calls on ``threads`` threads, taking turns over ``govs``: the most in flight at once."""
    lock, current, peak = threading.Lock(), {"n": 0}, {"n": 0}

    def work(i: int) -> None:
        with govs[i % len(govs)].slot("tickets"):
            with lock:
                current["n"] += 1
                peak["n"] = max(peak["n"], current["n"])
            time.sleep(0.05)
            with lock:
                current["n"] -= 1

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(calls)))
    return peak["n"]


def test_at_most_max_in_flight_per_endpoint(make_governor: object) -> None:
    gov = make_governor(max_in_flight=3, hourly_budget=1000)  # type: ignore[operator]
    assert peak_in_flight([gov], calls=16, threads=8) == 3
    assert gov.usage().used_last_hour == 16


@pytest.mark.parametrize("backend", ["redis", "sqlite", "postgresql"])
def test_the_limit_holds_across_processes(backend: str, request: pytest.FixtureRequest) -> None:
    """Three governors on one backend, as three worker processes have (each its own in-process lane of
    max_in_flight permits, so no one lane can keep the peak down): four threads each, and at most
    max_in_flight calls are ever in flight together. The backend alone decides that."""
    if backend == "redis":
        prefix = f"atrelay:test:{uuid.uuid4().hex}"
        url = request.getfixturevalue("redis_url")
        govs: list[_Base] = [RedisGovernor(url, prefix=prefix, max_in_flight=3, hourly_budget=1000, wait_timeout=30)
                             for _ in range(3)]
    else:
        db = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
        govs = [DbGovernor(db, max_in_flight=3, hourly_budget=1000, wait_timeout=30) for _ in range(3)]
    assert peak_in_flight(govs, calls=36, threads=12) == 3
    assert govs[0].usage().used_last_hour == 36


def test_endpoints_have_separate_slots(make_governor: object) -> None:
    gov = make_governor(max_in_flight=1, hourly_budget=1000, wait_timeout=0.2)  # type: ignore[operator]
    with gov.slot("tickets"), gov.slot("ticketnotes"):
        assert gov.usage().in_flight == {"tickets": 1, "ticketnotes": 1}
        with pytest.raises(SlotBusy), gov.slot("tickets"):
            pass


def test_spent_budget_parks_with_the_wait(make_governor: object) -> None:
    gov = make_governor(max_in_flight=3, hourly_budget=5)  # type: ignore[operator]
    for _ in range(5):
        with gov.slot("tickets"):
            pass
    with pytest.raises(QuotaExhausted) as exc, gov.slot("tickets"):
        pass
    assert exc.value.retryable and exc.value.retry_after is not None and 3500 < exc.value.retry_after <= 3600
    assert exc.value.reason.startswith("autotask-quota")


def test_a_dead_holders_slot_expires(make_governor: object) -> None:
    gov = make_governor(max_in_flight=1, hourly_budget=100, slot_ttl=0.3, wait_timeout=5)  # type: ignore[operator]
    assert gov._try("tickets", "killed-worker")[0] == "ok"  # acquired, never released
    started = time.monotonic()
    with gov.slot("tickets"):
        pass
    assert time.monotonic() - started >= 0.2


def test_tenant_pressure_paces_then_parks(make_governor: object) -> None:
    sleeps: list[float] = []
    gov = make_governor(max_in_flight=3, hourly_budget=100, sleep=sleeps.append)  # type: ignore[operator]
    gov.record_tenant(8_000, 10_000)
    with gov.slot("tickets"):
        pass
    assert 1.0 in sleeps
    gov.record_tenant(9_500, 10_000)
    with pytest.raises(QuotaExhausted, match="9500/10000"), gov.slot("tickets"):
        pass
    assert gov.usage().tenant_count == 9_500

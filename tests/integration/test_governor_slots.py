"""Governor slots are owned and renewed (issue 24): a live holder keeps its slot past the TTL, a dead
holder's slot frees itself within it, on every backend."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy.exc import OperationalError

from pipelines.governor import DbGovernor, QuotaExhausted, RedisGovernor, SlotBusy, _Base, fast_margin


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def make_governor(request: pytest.FixtureRequest) -> object:
    prefix = f"atrelay:test:{uuid.uuid4().hex}"

    def make(**kw: object) -> _Base:
        if request.param == "redis":
            url = request.getfixturevalue("redis_url")
            kw.setdefault("prefix", prefix)  # one prefix per test: the governors of two processes share it
            return RedisGovernor(url, **kw)  # type: ignore[arg-type]
        db = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
        return DbGovernor(db, **kw)  # type: ignore[arg-type]

    return make


def test_a_live_holder_keeps_its_slot_past_the_ttl(make_governor: object) -> None:
    """A call slower than the TTL (a 30 s timeout against a 10 s TTL): its slot is renewed, nobody takes it."""
    gov = make_governor(max_in_flight=1, hourly_budget=100, slot_ttl=0.6, wait_timeout=0.2)  # type: ignore[operator]
    # Another worker process: the same Redis keys, or the same database.
    other = make_governor(max_in_flight=1, hourly_budget=100, slot_ttl=0.6, wait_timeout=0.2)  # type: ignore[operator]
    held = threading.Event()
    done = threading.Event()

    def slow_call() -> None:
        with gov.slot("tickets"):
            held.set()
            done.wait(5)

    worker = threading.Thread(target=slow_call)
    worker.start()
    held.wait(5)
    time.sleep(1.5)  # two and a half TTLs: without renewal the slot would have expired
    with pytest.raises(SlotBusy), other.slot("tickets"):
        pass
    done.set()
    worker.join()
    with other.slot("tickets"):  # released by its holder: free at once
        pass


def test_a_dead_holders_slot_frees_itself_within_the_ttl(make_governor: object) -> None:
    """A holder killed mid-call renews nothing: its slot is free again one TTL later, not minutes later."""
    gov = make_governor(max_in_flight=1, hourly_budget=100, slot_ttl=0.5, wait_timeout=3)  # type: ignore[operator]
    assert gov._try("tickets", "killed-worker")[0] == "ok"  # acquired by a process that then died
    started = time.monotonic()
    with gov.slot("tickets"):
        pass
    assert 0.3 <= time.monotonic() - started < 2.0


@pytest.fixture(params=["sqlite", "postgresql"])
def db_governor(request: pytest.FixtureRequest) -> object:
    db = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    return lambda **kw: DbGovernor(db, **kw)


def _holders(gov: DbGovernor, n: int, calls: int, seconds: float) -> tuple[list[BaseException], int]:
    """``n`` threads making ``calls`` calls each through ``gov``; the errors they met and the peak in flight."""
    lock, current, peak, errors = threading.Lock(), [0], [0], []

    def work() -> None:
        for _ in range(calls):
            try:
                with gov.slot("tickets"):
                    with lock:
                        current[0] += 1
                        peak[0] = max(peak[0], current[0])
                    time.sleep(seconds)
                    with lock:
                        current[0] -= 1
            except Exception as exc:  # collected for the assertions
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread waiting for a slot never got an answer"
    return errors, peak[0]


def test_a_slot_handed_to_a_waiting_thread_counts_its_request_and_keeps_the_limit(db_governor: object) -> None:
    """Six threads, two slots: every call after the first two is a handover (the slot row changes owner),
    each counted against the hourly budget, never more than two at once, nothing left held after."""
    gov = db_governor(max_in_flight=2, hourly_budget=1000)  # type: ignore[operator]
    errors, peak = _holders(gov, 6, 5, 0.02)
    assert errors == [] and peak == 2
    usage = gov.usage()
    assert usage.used_last_hour == 30 and usage.in_flight.get("tickets", 0) == 0


def test_the_budget_is_checked_at_a_handover(db_governor: object) -> None:
    """The budget runs out while threads wait in line: the handover refuses the call like an acquire
    would (QuotaExhausted), and no more calls than the budget are made."""
    gov = db_governor(max_in_flight=1, hourly_budget=7)  # type: ignore[operator]
    errors, peak = _holders(gov, 4, 3, 0.02)
    assert peak == 1 and gov.usage().used_last_hour == 7
    assert len(errors) == 5 and all(isinstance(e, QuotaExhausted) for e in errors)
    assert gov.usage().in_flight.get("tickets", 0) == 0


def test_a_failed_handover_loses_no_permit_and_strands_no_waiter(db_governor: object,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The database fails as a holder hands its slot over (and as it frees it): the waiting thread is
    still answered, takes a slot the usual way once the row has expired, and later calls still run."""
    # A budget too small for a handover without the database (fast_margin): every handover writes.
    gov = db_governor(max_in_flight=1, hourly_budget=50, slot_ttl=0.3, wait_timeout=5)  # type: ignore[operator]
    failures = {"n": 2}
    real_hand_over, real_free = gov._hand_over, gov._free

    def flaky(name: str, real: Callable[..., object]) -> Callable[..., object]:
        def call(*a: object) -> object:
            if failures["n"] > 0:
                failures["n"] -= 1
                raise OperationalError(f"{name}: database is locked", None, Exception("locked"))
            return real(*a)
        return call

    monkeypatch.setattr(gov, "_hand_over", flaky("hand over", real_hand_over))
    monkeypatch.setattr(gov, "_free", flaky("free", real_free))
    errors, peak = _holders(gov, 2, 2, 0.05)
    assert peak == 1
    assert [type(e) for e in errors] == [OperationalError]  # the holder whose release failed is told
    with gov.slot("tickets"):  # and the lane still admits: no permit was lost
        pass


def test_handovers_without_the_database_never_overspend_the_budget(db_governor: object) -> None:
    """Handovers count their requests in memory while the budget has room to spare, and go to the database
    once the margin is reached: exactly the budget is spent, and every request is written."""
    gov = db_governor(max_in_flight=2, hourly_budget=160)  # type: ignore[operator]
    assert fast_margin(160) == 100  # so the first ~60 handovers may skip the database, the rest may not
    answers: list[bool] = []
    fast_room = gov._fast_room

    def spy(budget: int) -> bool:
        answers.append(fast_room(budget))
        return answers[-1]

    gov._fast_room = spy
    errors, peak = _holders(gov, 5, 40, 0.002)
    assert True in answers and False in answers  # both kinds of handover happened
    assert peak == 2 and gov.usage().used_last_hour == 160
    assert len(errors) == 5 * 40 - 160 and all(isinstance(e, QuotaExhausted) for e in errors)

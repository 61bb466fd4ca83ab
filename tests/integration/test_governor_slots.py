"""Governor slots are owned and renewed (issue 24): a live holder keeps its slot past the TTL, a dead
holder's slot frees itself within it, on every backend."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from pipelines.governor import DbGovernor, RedisGovernor, SlotBusy, _Base


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

"""Exactly once past the lease: renewed while a run works, checked before every write and on finish,
judged by the database's clock (and Redis's, for the governor) rather than each machine's."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlmodel import col

from pipelines import db as db_module
from pipelines import store
from pipelines.audit import EventState, InboundEvent, PipelineRun
from pipelines.db import session_scope
from pipelines.governor import RedisGovernor
from pipelines.process import process_event
from pipelines.sweeper import sweep
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, webform_body


def expire_lease(db: str, event_id: int) -> None:
    with session_scope(db) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id)
                  .values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))


def test_a_run_that_lost_its_lease_writes_nothing_more(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """The probe: another worker claims the event while the first is between its PATCH and its note.
    The first writes no note and does not finish the event; the new owner writes the one note."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    original = ctx.client.set_ticket_status
    taken: dict[str, Any] = {}

    def patch_then_lose_the_lease(ticket_id: int, status: int) -> int:
        result = original(ticket_id, status)
        expire_lease(db_url, event_id)  # the run outlived its lease ...
        taken["claim"] = store.claim_event(db_url, event_id, 30)  # ... and the sweeper gave it to another run
        return result

    ctx.client.set_ticket_status = patch_then_lose_the_lease  # type: ignore[method-assign]
    first = process_event(ctx, event_id)
    assert first.state == "lease-lost"
    assert sandbox.notes == {}  # no note from the run that lost its lease
    row = store.get_event(db_url, event_id)
    assert row is not None and row.state == EventState.PROCESSING and row.lease_owner == taken["claim"].owner
    ctx.client.set_ticket_status = original  # type: ignore[method-assign]
    expire_lease(db_url, event_id)  # the second claimant died too; a third run finishes the event
    assert process_event(ctx, event_id).state == "applied"
    assert len(sandbox.notes) == 1 and sandbox.calls["PATCH tickets"] == 1


def test_finish_is_refused_to_a_run_without_the_lease(db_url: str) -> None:
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    first = store.claim_event(db_url, event_id, 30)
    run = store.start_run(db_url, event_id, None, "w1")
    expire_lease(db_url, event_id)
    second = store.claim_event(db_url, event_id, 30)
    assert second.owner and second.owner != first.owner
    with pytest.raises(store.LeaseLost):
        store.finish_run(db_url, event_id=event_id, run_id=run, state=EventState.APPLIED, outcome="applied",
                         owner=first.owner)
    row = store.get_event(db_url, event_id)
    assert row is not None and (row.state, row.lease_owner) == (EventState.PROCESSING, second.owner)
    with session_scope(db_url) as s:
        closed = s.get(PipelineRun, run)
        assert closed is not None and closed.outcome == "lease-lost"


def test_a_long_run_keeps_its_lease_and_is_never_swept(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """Every Autotask call takes longer than the whole lease; the heartbeat keeps the run's event."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, lease_seconds=1.5)
    sandbox.latency_ms = 1200
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    done: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: done.setdefault("result", process_event(ctx, event_id)))
    worker.start()
    while (row := store.get_event(db_url, event_id)) is not None and row.state != EventState.PROCESSING:
        time.sleep(0.01)  # an accepted event not yet run is rightly owed; watch from the claim on
    swept: list[int] = []
    while worker.is_alive():
        swept += sweep(db_url, stale_after=timedelta(seconds=0))
        time.sleep(0.2)
    worker.join()
    assert done["result"].state == "applied"
    assert event_id not in swept
    assert len(sandbox.notes) == 1


def test_a_host_whose_clock_runs_ahead_does_not_expire_live_leases(pg_url: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Host A (right clock) holds the lease; host B's clock is two minutes fast. B must see it as held."""
    event_id = add_event(pg_url, "webform", "form.submitted", webform_body())
    a = store.claim_event(pg_url, event_id, 20)
    assert a.owner is not None
    ahead = timedelta(minutes=2)
    real_utcnow, real_time = db_module.utcnow, time.time
    monkeypatch.setattr(db_module, "utcnow", lambda: real_utcnow() + ahead)
    monkeypatch.setattr(db_module.time, "time", lambda: real_time() + ahead.total_seconds())
    # B measures its offset to the database afresh, into a cache of its own: the skewed measurement
    # must not outlive this test (monkeypatch puts the real cache back).
    monkeypatch.setattr(db_module, "_clock_offsets", {})
    b = store.claim_event(pg_url, event_id, 20)
    assert (b.event, b.state) == (None, "leased")
    assert sweep(pg_url, stale_after=timedelta(seconds=0)) == []
    with session_scope(pg_url) as s:
        server_now = s.execute(text("SELECT clock_timestamp()")).scalar_one()
    assert abs((db_module.db_now(pg_url) - server_now).total_seconds()) < 2


def test_redis_governor_uses_redis_time(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast host must not evict the slots other hosts hold (they would expire on its clock)."""
    prefix = f"atrelay:test:{uuid.uuid4().hex}"
    honest = RedisGovernor(redis_url, prefix=prefix, max_in_flight=1, hourly_budget=100, slot_ttl=60,
                           wait_timeout=0.3)
    fast = RedisGovernor(redis_url, prefix=prefix, max_in_flight=1, hourly_budget=100, slot_ttl=60,
                         wait_timeout=0.3)
    import pipelines.governor as governor_module

    with honest.slot("tenant"):
        real = governor_module.time.time
        monkeypatch.setattr(governor_module.time, "time", lambda: real() + 600)
        with pytest.raises(governor_module.SlotBusy), fast.slot("tenant"):
            pass
        assert fast.usage().in_flight == {"tenant": 1}

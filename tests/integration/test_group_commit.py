"""Group commit: concurrent requests share a transaction, and lose none of accept()'s guarantees."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from pipelines import intake, store
from pipelines.schema import upgrade


def _new(external_id: str) -> store.NewEvent:
    return store.NewEvent(source="webform", external_id=external_id, event_type="form.submitted", body=b"{}",
                          headers={"webhook-id": external_id})


def test_concurrent_events_share_commits_and_are_enqueued_once_after_commit(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(db)
    enqueued: list[int] = []

    def enqueue_many(ids: Sequence[int]) -> None:
        for event_id in ids:  # the broker hears of an id only once its row is committed
            assert store.get_event(db, event_id) is not None
        enqueued.extend(ids)

    group = intake.GroupIntake(db, enqueued.append, enqueue_many)

    async def burst() -> list[tuple[int, bool]]:
        names = [f"msg_{i}" for i in range(40)] + ["msg_3", "msg_7"]  # two repeats inside the burst
        return await asyncio.gather(*(group.accept(_new(n)) for n in names))

    results = asyncio.run(burst())
    group.close()
    created = [event_id for event_id, new in results if new]
    assert len(created) == len(set(created)) == 40
    assert results[40] == (results[3][0], False) and results[41] == (results[7][0], False)
    assert sorted(enqueued) == sorted(created)  # each once; duplicates never
    assert group.batches < 10  # 42 requests, a handful of transactions


def test_a_repeat_of_a_committed_event_is_a_duplicate(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(db)
    first_id, created = store.insert_event(db, _new("msg_a"))
    assert created
    enqueued: list[int] = []
    group = intake.GroupIntake(db, enqueued.append)
    assert asyncio.run(group.accept(_new("msg_a"))) == (first_id, False)
    group.close()
    assert enqueued == []

"""Issue 11 item 10: with the default ATRELAY_AUTOTASK_THREAD_GROUPS the governor sees one bucket for
Tickets and Tickets/{id}/Notes (Autotask's documentation leaves open whether it counts them apart); ``entity``
splits them. The real settings, client and governor (database and Redis) against the sandbox."""

from __future__ import annotations

from contextlib import AbstractContextManager

import pytest

from pipelines.governor import DbGovernor, Governor, RedisGovernor
from sandboxes.autotask.state import SandboxState
from tests.conftest import autotask_env
from workers.celery.runtime import build_client
from workers.settings import load_settings


@pytest.fixture(params=["database", "redis"])
def governor(request: pytest.FixtureRequest, db_url: str) -> Governor:
    if request.param == "redis":
        return RedisGovernor(str(request.getfixturevalue("redis_url")), prefix="atrelay:test-buckets",
                             max_in_flight=3, hourly_budget=5000)
    return DbGovernor(db_url, max_in_flight=3, hourly_budget=5000)


def _buckets(governor: Governor, sandbox_url: str, monkeypatch: pytest.MonkeyPatch,
             groups: str | None) -> list[str]:
    for name, value in autotask_env(sandbox_url).items():
        monkeypatch.setenv(name, value)
    if groups is not None:
        monkeypatch.setenv("ATRELAY_AUTOTASK_THREAD_GROUPS", groups)
    seen: list[str] = []

    def gate(bucket: str) -> AbstractContextManager[None]:
        seen.append(bucket)
        return governor.slot(bucket)

    client = build_client(load_settings(), gate=gate, max_attempts=1)
    try:
        client.get_ticket(50001)
        client.add_ticket_note(50001, title="t", description="d", note_type=1, publish=1)
    finally:
        client.close()
    return [b for b in seen if b != "zoneinformation"]


def test_default_one_bucket_for_tickets_and_notes(
    governor: Governor, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = autotask
    buckets = _buckets(governor, url, monkeypatch, None)
    assert len(buckets) >= 2 and set(buckets) == {"tenant"}


def test_entity_groups_split_tickets_and_notes(
    governor: Governor, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = autotask
    buckets = _buckets(governor, url, monkeypatch, "entity")
    assert {"tickets", "ticketnotes"} <= set(buckets)

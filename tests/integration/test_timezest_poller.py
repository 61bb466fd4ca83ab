"""The TimeZest poller against the TimeZest sandbox: one event per change, nothing duplicated or missed."""

from __future__ import annotations

import httpx
import pytest
from sqlmodel import col, select

from connectors.timezest.client import RateLimiter, TimezestClient
from connectors.timezest.sandbox import TimezestSandboxState
from pipelines.audit import InboundEvent, PollRun
from pipelines.db import session_scope
from pipelines.timezest_poll import poll_once
from workers.settings import SANDBOX_TIMEZEST_API_KEY


class Queue(list[int]):
    def __call__(self, event_id: int) -> None:
        self.append(event_id)


def tz_client(url: str, key: str = SANDBOX_TIMEZEST_API_KEY) -> TimezestClient:
    return TimezestClient(api_key=key, base_url=f"{url}/v1", max_attempts=1, sleep=lambda _s: None)


def events(db: str) -> list[InboundEvent]:
    with session_scope(db) as s:
        return list(s.exec(select(InboundEvent).order_by(col(InboundEvent.id))).all())


def test_new_sent_scheduled_across_polls(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50004})
    client, queue = tz_client(url), Queue()
    assert poll_once(db_url, client, queue).emitted == []  # new: nothing to say yet
    tz.transition(req["id"], "sent")
    assert len(poll_once(db_url, client, queue).emitted or []) == 1
    tz.transition(req["id"], "scheduled")
    assert len(poll_once(db_url, client, queue).emitted or []) == 1
    assert poll_once(db_url, client, queue).emitted == []  # nothing changed, nothing emitted
    rows = events(db_url)
    assert [(r.event_type, r.external_id, r.ticket_id) for r in rows] == [
        ("timezest.link_sent", f"{req['id']}:sent", 50004),
        ("timezest.scheduled", f"{req['id']}:scheduled", 50004),
    ]
    assert queue == [r.id for r in rows]


def test_sent_to_scheduled_between_polls_emits_only_scheduled(
    db_url: str, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50004})
    client, queue = tz_client(url), Queue()
    poll_once(db_url, client, queue)
    tz.transition(req["id"], "sent")
    tz.transition(req["id"], "scheduled")
    poll_once(db_url, client, queue)
    assert [r.event_type for r in events(db_url)] == ["timezest.scheduled"]


def test_first_seen_already_scheduled_emits_only_scheduled(
    db_url: str, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50005})
    tz.transition(req["id"], "sent")
    tz.transition(req["id"], "scheduled")
    poll_once(db_url, tz_client(url), Queue())
    assert [r.event_type for r in events(db_url)] == ["timezest.scheduled"]


def test_request_without_ticket_is_ignored_with_reason(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    req = tz.create({"associated_entities": [{"type": "autotask/company", "id": 1}]})
    tz.transition(req["id"], "sent")
    queue = Queue()
    poll_once(db_url, tz_client(url), queue)
    (row,) = events(db_url)
    assert (row.state, row.reason) == ("ignored", "no-autotask-ticket")
    assert queue == []


def test_paging_follows_next_page(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    ids = [tz.create({"ticket_id": 50001})["id"] for _ in range(45)]
    for rid in ids:
        tz.transition(rid, "sent")
    result = poll_once(db_url, tz_client(url), Queue())
    assert result.seen == 45 and len(result.emitted or []) == 45
    assert tz.calls["GET /v1/scheduling_requests"] == 3  # 20 + 20 + 5


def test_failed_poll_is_recorded_and_the_next_catches_up(
    db_url: str, timezest: tuple[str, TimezestSandboxState]
) -> None:
    url, tz = timezest
    req = tz.create({"ticket_id": 50004})
    poll_once(db_url, tz_client(url), Queue())
    tz.transition(req["id"], "sent")
    bad = poll_once(db_url, tz_client(url, key="wrong-key"), Queue())
    assert bad.outcome == "failed" and bad.error is not None and "401" in bad.error
    tz.script = [{"status": 503, "count": 1}]
    down = poll_once(db_url, tz_client(url), Queue())
    assert down.outcome == "failed"
    good = poll_once(db_url, tz_client(url), Queue())
    assert good.outcome == "ok" and len(good.emitted or []) == 1
    with session_scope(db_url) as s:
        polls = list(s.exec(select(PollRun).order_by(col(PollRun.id))).all())
    assert [p.outcome for p in polls] == ["ok", "failed", "failed", "ok"]
    assert "TimezestAuthError" in (polls[1].error or "")


def test_429_retry_after_is_honoured(timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    tz.create({"ticket_id": 50004})
    sleeps: list[float] = []
    client = TimezestClient(api_key=SANDBOX_TIMEZEST_API_KEY, base_url=f"{url}/v1", max_attempts=2,
                            sleep=sleeps.append)
    tz.script = [{"status": 429, "retry_after": 4, "count": 1}]
    assert len(list(client.scheduling_requests())) == 1
    assert sleeps == [4.0]


def test_rate_limiter_waits_rather_than_exceeding() -> None:
    now = {"t": 0.0}
    waits: list[float] = []

    def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        now["t"] += seconds

    import connectors.timezest.client as mod

    limiter = RateLimiter(limit=3, window=60.0, sleep=fake_sleep)
    original = mod.time.monotonic
    mod.time.monotonic = lambda: now["t"]  # type: ignore[assignment]
    try:
        for _ in range(4):
            limiter.acquire()
    finally:
        mod.time.monotonic = original  # type: ignore[assignment]
    assert waits == [60.0]


def test_api_key_never_reaches_the_audit_log(db_url: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    tz.transition(tz.create({"ticket_id": 50004})["id"], "sent")
    poll_once(db_url, tz_client(url), Queue())
    for row in events(db_url):
        assert SANDBOX_TIMEZEST_API_KEY.encode() not in row.body
        assert SANDBOX_TIMEZEST_API_KEY not in str(row.headers)


@pytest.mark.parametrize("page", ["absolute", "query-only"])
def test_next_page_forms(page: str, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, _ = timezest
    client = tz_client(url)
    nxt = f"{url}/v1/scheduling_requests?starting_after=x" if page == "absolute" else "?starting_after=x"
    assert httpx.URL(client._next_url(nxt)).path == "/v1/scheduling_requests"

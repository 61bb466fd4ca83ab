"""The dashboard says at the top whether atrelay is healthy, and shows Autotask unhealthy while calls fail."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import insert

from pipelines.audit import OutboundAttempt, RejectedRequest
from pipelines.db import engine_for, utcnow
from pipelines.heartbeats import beat


def _call(url: str, path: str, status: int | None) -> None:
    with engine_for(url).begin() as conn:
        conn.execute(insert(OutboundAttempt.__table__).values(  # type: ignore[attr-defined]
            at=utcnow(), target="autotask", method="GET", path=path, status_code=status, duration_ms=1.0,
            error=None if status else "ConnectError: connection refused"))


def test_verdict_turns_on_what_needs_attention(ops_client: TestClient, sqlite_url: str) -> None:
    _call(sqlite_url, "/ATServicesRest/V1.0/Tickets/entityInformation/fields", 200)  # picklists loaded
    for role in ("worker", "beat"):  # a worker and a beat alive (their heartbeats)
        beat(sqlite_url, process_id=f"{role}:t:1", role=role, host="t", pid=1, version="t")
    page = ops_client.get("/ops").text
    assert 'http-equiv="refresh"' in page
    assert "<h2>Healthy</h2>" in page and "Needs attention" not in page

    _call(sqlite_url, "/ATServicesRest/V1.0/Tickets/1", 401)
    page = ops_client.get("/ops").text
    assert "Needs attention" in page and "Autotask calls are failing" in page and "unhealthy" in page

    _call(sqlite_url, "/ATServicesRest/V1.0/Tickets/1", 200)  # calls succeed again
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(insert(RejectedRequest.__table__).values(  # type: ignore[attr-defined]
            at=utcnow(), source="autotask-deactivation", status_code=200, reason="webhook 7 deactivated",
            body_size=2))
    page = ops_client.get("/ops").text
    assert "Autotask calls are failing" not in page
    # An unsigned deactivation notice is a claim, not a fact: counted, never quoted, and no alarm until
    # Autotask itself shows the webhook inactive (tests/integration/test_webhook_check.py).
    assert "<h2>Healthy</h2>" in page and "webhook 7 deactivated" not in page
    assert "1 deactivation notice(s) received" in page

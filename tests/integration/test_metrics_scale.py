"""A /metrics scrape reads what is new, never the whole history (issue 13, item 9).

Deterministic, no timing: the history is bulk-inserted before the migration that adds the running
totals (as on an upgraded install), then every SQL statement a scrape runs is captured and its
SQLite query plan checked for full scans of the audit tables, and the number of audit rows the
scrape read is compared between a small and a large history.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, insert, text

from pipelines.audit import InboundEvent, OutboundAttempt, RejectedRequest
from pipelines.counters import FOLD_LAG, read_totals
from pipelines.db import engine_for, utcnow
from pipelines.schema import alembic_config, upgrade
from workers.http.ingress import create_app
from workers.settings import load_settings

HISTORY_TABLES = ("inbound_events", "outbound_attempts", "pipeline_runs", "rejected_requests", "effects")


def _seed(url: str, n: int) -> None:
    """``n`` finished events and ``n`` Autotask calls from yesterday, in two bulk inserts."""
    past = utcnow() - timedelta(days=1)
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(insert(InboundEvent.__table__), [  # type: ignore[attr-defined]
            {"source": "webform", "external_id": f"h{i}", "event_type": "form.submitted", "received_at": past,
             "headers": {}, "body": b"{}", "state": "applied" if i % 3 else "skipped", "updated_at": past,
             "attempts": 1, "replays": 0} for i in range(n)])
        conn.execute(insert(OutboundAttempt.__table__), [  # type: ignore[attr-defined]
            {"at": past, "target": "autotask", "method": "PATCH", "path": f"/ATServicesRest/V1.0/Tickets/{i}",
             "status_code": 200, "duration_ms": 1.0} for i in range(n)])


def _history_db(tmp_path: Path, n: int) -> str:
    url = f"sqlite:///{tmp_path / f'audit-{n}.db'}"
    command.upgrade(alembic_config(url), "0004")  # before the running totals existed
    _seed(url, n)
    upgrade(url)  # the migration counts the history once
    return url


def _fresh_activity(url: str) -> None:
    now = utcnow()
    with engine_for(url).begin() as conn:
        conn.execute(insert(InboundEvent.__table__).values(  # type: ignore[attr-defined]
            source="autotask", external_id="callout-1", event_type="autotask.ticket.updated", received_at=now,
            headers={}, body=b"{}", state="applied", updated_at=now, attempts=1, replays=0))
        conn.execute(insert(RejectedRequest.__table__).values(  # type: ignore[attr-defined]
            at=now, source="autotask-deactivation", status_code=200, reason="webhook 7 deactivated", body_size=2))


def _scrape_statements(url: str) -> tuple[list[tuple[str, Any]], int]:
    """Every statement one scrape runs on the audit DB, and how many audit rows it read."""
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    engine = engine_for(url)
    event.listen(engine, "before_cursor_execute", capture)
    try:
        rows_read = read_totals(url).rows_read
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return seen, rows_read


def _full_scans(url: str, statements: list[tuple[str, Any]]) -> list[str]:
    scans = []
    with engine_for(url).connect() as conn:
        for statement, parameters in statements:
            if not statement.lstrip().upper().startswith("SELECT"):
                continue
            for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all():
                detail = str(row[-1])
                if detail.startswith("SCAN") and any(f" {t}" in detail for t in HISTORY_TABLES):
                    scans.append(f"{detail}  <- {statement[:120]}")
    return scans


def test_a_scrape_reads_only_new_rows_whatever_the_history(tmp_path: Path) -> None:
    small, large = _history_db(tmp_path, 300), _history_db(tmp_path, 50_000)
    work = {}
    for url in (small, large):
        _fresh_activity(url)
        statements, rows_read = _scrape_statements(url)
        assert _full_scans(url, statements) == []
        work[url] = (len(statements), rows_read)
    # The same statements and the same two new rows read (the callout and the rejection; the event's
    # final state is a third read), with 300 or 50,000 events and calls behind them.
    assert work[small] == work[large]
    assert work[large][1] == 3

    totals = read_totals(large)
    assert totals.counters[("events", ("webform", "form.submitted", "applied"))] == 33_333
    assert totals.counters[("events", ("webform", "form.submitted", "skipped"))] == 16_667
    assert totals.counters[("calls", ("PATCH", "Tickets/{id}", "200"))] == 50_000


def test_folding_never_counts_a_row_twice(db_url: str) -> None:
    _fresh_activity(db_url)
    live = read_totals(db_url)  # young rows: counted live, not yet folded
    later = utcnow() + FOLD_LAG + timedelta(seconds=1)
    folded = read_totals(db_url, now=later)  # now folded into the stored totals
    again = read_totals(db_url, now=later + timedelta(minutes=1))
    for totals in (live, folded, again):
        assert totals.counters[("events", ("autotask", "autotask.ticket.updated", "applied"))] == 1
        assert totals.counters[("rejected", ("autotask-deactivation", "200"))] == 1
    assert again.rows_read == 0  # nothing new since the fold


@pytest.fixture
def client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None)) as c:
        yield c


def test_autotask_webhook_health_is_in_metrics(client: TestClient, sqlite_url: str) -> None:
    _fresh_activity(sqlite_url)
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(text("INSERT INTO poll_runs (source, started_at, finished_at, outcome, requests_seen, "
                          "events_emitted) VALUES ('autotask', :t, :t, 'ok', 0, 0)"), {"t": utcnow().replace(tzinfo=None)})
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples}
    assert samples[("atrelay_autotask_deactivation_notices_total", ())] == 1
    assert samples[("atrelay_autotask_callouts_total", (("via", "callout"),))] == 1
    assert samples[("atrelay_autotask_last_callout_timestamp_seconds", ())] > 0
    assert samples[("atrelay_autotask_last_deactivation_timestamp_seconds", ())] > 0
    assert samples[("atrelay_autotask_last_reconcile_timestamp_seconds", ())] > 0

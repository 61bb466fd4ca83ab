"""Liveness (issue 20.1) on both databases: heartbeats say who is alive; each condition opens one
incident and one alert however many processes look, and its end is told once; waiting queues are aged;
what another condition already explains is not alerted twice; /metrics carries the numbers."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from sqlalchemy import update
from sqlmodel import col

from pipelines import alerts, store
from pipelines.audit import InboundEvent, PollRun, ProcessHeartbeat
from pipelines.db import session_scope, utcnow
from pipelines.heartbeats import alive, beat, mark_stopped
from pipelines.liveness import assess, open_incidents, raise_alerts
from sandboxes.timezest.app import TimezestSandboxState
from tests.support import wait_for
from workers.celery.watchdog import Watchdog
from workers.cli.doctor import run_doctor
from workers.http.ingress import create_app
from workers.settings import Settings, load_settings

Ops = Callable[..., AbstractContextManager[TestClient]]

TIMEOUT = 2.0


def _beat(db: str, role: str, n: int = 1, *, ready: bool = True, problem: str | None = None) -> str:
    pid = f"{role}:host:{n}"
    beat(db, process_id=pid, role=role, host="host", pid=n, version="t", ready=ready, problem=problem)
    return pid


def _accepted(db: str, n: int, age: float) -> None:
    for i in range(n):
        event_id, _ = store.insert_event(db, store.NewEvent(
            source="webform", external_id=f"w{i}-{time.monotonic()}", event_type="form.submitted", body=b"{}",
            headers={}, occurred_at=utcnow()))
        with session_scope(db) as s:
            s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id).values(
                received_at=utcnow() - timedelta(seconds=age)))


def _metrics(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(client.get("/metrics").text) for s in f.samples}


def _verdict(client: TestClient) -> str:
    """The dashboard verdict's reasons (not the alerts table, which repeats alert titles)."""
    found = re.search(r'<ul id="verdict-reasons">(.*?)</ul>', client.get("/ops").text, re.S)
    return found.group(1) if found else ""


def _doctor(settings: Settings) -> tuple[int, str]:
    """`atrelay doctor`'s exit code and its problem lines."""
    out, err = io.StringIO(), io.StringIO()
    code = run_doctor(settings, Console(file=out, width=2000), Console(file=err, width=2000))
    return code, err.getvalue()


def test_heartbeats_say_who_is_alive(db_url: str) -> None:
    assert alive(db_url, "worker", timeout_seconds=TIMEOUT).count == 0
    one = _beat(db_url, "worker", 1)
    _beat(db_url, "worker", 2, ready=False, problem="Autotask refused atrelay's credentials")
    workers = alive(db_url, "worker", timeout_seconds=TIMEOUT)
    assert workers.count == 2 and len(workers.ready) == 1 and workers.not_ready[0].pid == 2
    mark_stopped(db_url, one)  # a process stopped on purpose is not alive at once
    assert [p.pid for p in alive(db_url, "worker", timeout_seconds=TIMEOUT).alive] == [2]
    time.sleep(TIMEOUT + 0.2)
    gone = alive(db_url, "worker", timeout_seconds=TIMEOUT)
    assert gone.count == 0 and gone.newest is not None and (gone.silent_for or 0) >= TIMEOUT


def test_a_condition_is_one_incident_and_one_alert_however_many_look(db_url: str) -> None:
    _beat(db_url, "beat")
    _accepted(db_url, 3, age=40)
    state = assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30)
    assert [c.name for c in state.conditions] == ["no_worker"]  # stuck:accepted is no_worker's doing
    assert "stuck:accepted" in state.suppressed
    assert state.problems["workers"] == "no worker alive"
    assert state.problems["waiting"].startswith("3 event(s) waiting, the oldest for 4")
    made = [raise_alerts(db_url, assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30)) for _ in range(4)]
    assert [len(m) for m in made] == [1, 0, 0, 0]  # four processes looking: one alert
    (row,) = alerts.recent_alerts(db_url)
    assert (row.kind, row.severity, row.title) == ("liveness", "critical", "No atrelay worker is alive")
    assert "3 event(s) waiting, the oldest for" in row.body and "atrelay worker" in row.body
    # A worker comes: the incident closes once, with one all-clear; the waiting events are now "stuck".
    _beat(db_url, "worker")
    after = assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30)
    assert [c.name for c in after.conditions] == ["stuck:accepted"]
    cleared = [raise_alerts(db_url, after) for _ in range(3)]
    assert [len(c) for c in cleared] == [2, 0, 0]  # "Resolved: no worker" and the stuck queue's alert
    titles = {a.title for a in alerts.recent_alerts(db_url)}
    assert {"Resolved: no worker", "Events are waiting too long (accepted)"} <= titles
    assert [i.name for i in open_incidents(db_url)] == ["stuck:accepted"]


def test_a_look_taken_before_a_change_does_not_undo_it(db_url: str) -> None:
    """Each process looks on its own beat: a look taken just before a worker came back, raised just after
    another process closed the incident, must not reopen it (a second alert for one outage), and a look
    taken before an incident opened must not close it. (Seen in the SIGSTOP end-to-end test: two "No
    atrelay worker is alive" alerts for one pause.)"""
    _beat(db_url, "beat")
    assert len(raise_alerts(db_url, assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30))) == 1  # opened
    stale = assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30)  # still no worker, as read now
    time.sleep(0.05)
    _beat(db_url, "worker")
    assert len(raise_alerts(db_url, assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30))) == 1  # resolved
    assert raise_alerts(db_url, stale) == []  # the older look arrives late: nothing reopens, nothing is sent
    assert open_incidents(db_url) == []
    titles = [a.title for a in alerts.recent_alerts(db_url)]
    assert sorted(titles) == ["No atrelay worker is alive", "Resolved: no worker"]
    # The other way round: a look that saw the worker, raised after a newer one opened an incident.
    fine = assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30)
    with session_scope(db_url) as s:  # the worker stops (said so), and a newer look tells it
        s.execute(update(ProcessHeartbeat).where(col(ProcessHeartbeat.role) == "worker").values(stopped_at=utcnow()))
    time.sleep(0.05)
    assert len(raise_alerts(db_url, assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30))) == 1  # reopened
    assert raise_alerts(db_url, fine) == []
    assert [i.name for i in open_incidents(db_url)] == ["no_worker"]


def test_overdue_polls_and_workers_that_cannot_work(db_url: str) -> None:
    _beat(db_url, "beat")
    _beat(db_url, "worker", ready=False, problem="Autotask refused atrelay's credentials (HTTP 401)")
    state = assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30, reconcile_seconds=30)
    (cond,) = state.conditions
    assert cond.name == "workers_not_ready" and cond.severity == "critical" and "HTTP 401" in cond.summary
    _beat(db_url, "worker", 2)
    with session_scope(db_url) as s:  # the beat started long ago; the last reconciliation ran 3 minutes ago
        s.add(PollRun(source="autotask", started_at=utcnow() - timedelta(minutes=3), outcome="ok"))
        s.execute(update(ProcessHeartbeat).values(started_at=utcnow() - timedelta(hours=1)))
    names = {c.name: c for c in assess(db_url, heartbeat_timeout=TIMEOUT, stuck_after=30, reconcile_seconds=30)
             .conditions}
    assert set(names) == {"workers_not_ready", "reconcile_overdue"}
    assert names["workers_not_ready"].severity == "warning"  # one of two workers still works
    assert "Autotask reconciliation last ran 3 min ago" in names["reconcile_overdue"].summary


def test_metrics_show_liveness(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    _beat(sqlite_url, "beat")
    _accepted(sqlite_url, 2, age=50)
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None)) as client:
        text = client.get("/metrics").text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("atrelay_workers_alive", ())] == 0 and samples[("atrelay_beat_alive", ())] == 1
    assert samples[("atrelay_workers_ready", ())] == 0
    assert 49 <= samples[("atrelay_oldest_waiting_event_age_seconds", (("queue", "accepted"),))] < 70
    assert samples[("atrelay_oldest_waiting_event_age_seconds", (("queue", "parked"),))] == 0
    assert samples[("atrelay_events_waiting", (("queue", "accepted"),))] == 2
    assert samples[("atrelay_liveness_condition", (("condition", "no_worker"), ("severity", "critical")))] == 1


def test_no_beat_is_raised_by_a_worker_alone_and_shown_everywhere(
        db_url: str, ops_on: Ops, caplog: pytest.LogCaptureFixture) -> None:
    """Workers run, no beat ever did: a worker's own watchdog raises the alert (there is no beat to do it),
    and the dashboard's verdict, doctor (non-zero) and /metrics all say no beat is alive."""
    caplog.set_level(logging.WARNING, logger="atrelay.watchdog")
    # Short heartbeats keep it fast; a timeout of several beats keeps a busy machine's late beat from
    # making the worker look dead too.
    with ops_on(ATRELAY_HEARTBEAT_SECONDS="0.3", ATRELAY_HEARTBEAT_TIMEOUT_SECONDS="3") as client:
        settings = load_settings()
        dog = Watchdog(settings, "worker").start()
        try:
            # The watchdog logs who recorded an alert, after recording it: wait for that line, not the row.
            wait_for(lambda: [r for r in caplog.records if r.getMessage() == "watchdog.alerts_recorded"], timeout=15,
                     what="an alert recorded by a watchdog")
            raisers = {getattr(r, "role", None) for r in caplog.records if r.getMessage() == "watchdog.alerts_recorded"}
            assert raisers == {"worker"}
            assert [a.title for a in alerts.recent_alerts(db_url)] == ["No atrelay beat (scheduler) is alive"]
            assert alive(db_url, "beat", timeout_seconds=3600).newest is None  # no beat process, ever
            reasons = _verdict(client)
            assert "No atrelay beat (scheduler) is alive: no beat alive" in reasons and "No atrelay worker" not in reasons
            samples = _metrics(client)
            assert samples[("atrelay_beat_alive", ())] == 0 and samples[("atrelay_workers_alive", ())] == 1
            code, problems = _doctor(settings)
            assert code == 1 and "problem no beat: no beat alive (none has run against this database)" in problems
        finally:
            dog.stop()


def test_an_overdue_timezest_poll_shows_in_the_verdict_and_in_doctor(
        db_url: str, ops_on: Ops, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, sandbox = timezest
    with ops_on(ATRELAY_TIMEZEST_API_KEY=sandbox.api_key, ATRELAY_TIMEZEST_BASE_URL=url) as client:
        settings = load_settings()
        _beat(db_url, "beat")
        _beat(db_url, "worker")
        with session_scope(db_url) as s:  # the beat started an hour ago; TimeZest was polled just now
            s.execute(update(ProcessHeartbeat).values(started_at=utcnow() - timedelta(hours=1)))
            s.add(PollRun(source="timezest", started_at=utcnow() - timedelta(seconds=20), outcome="ok"))
        assert "TimeZest" not in _verdict(client) and "timezest overdue" not in _doctor(settings)[1]
        with session_scope(db_url) as s:  # ... no: ten minutes ago, with a poll due every minute
            s.execute(update(PollRun).values(started_at=utcnow() - timedelta(minutes=10)))
        assert ("The TimeZest poll is overdue: the TimeZest poll last ran 10 min ago (every 60 s expected)"
                in _verdict(client))
        code, problems = _doctor(settings)
        assert code == 1 and "problem timezest overdue: the TimeZest poll last ran 10 min ago" in problems

"""/metrics (Prometheus text, from the audit DB) and /readyz (database, broker, picklists)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pipelines.heartbeats import beat
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, mc_body, webform_body
from workers.http.ingress import create_app
from workers.settings import load_settings


@pytest.fixture
def client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None)) as c:
        yield c


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_reflect_the_audit_log(client: TestClient, sqlite_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    ctx = make_context(sqlite_url, url)
    process_event(ctx, add_event(sqlite_url, "webform", "form.submitted", webform_body()))
    process_event(ctx, add_event(sqlite_url, "webform", "form.submitted", webform_body("T20200101.0001")))
    process_event(ctx, add_event(sqlite_url, "mission-control", "mc.escalated", mc_body("mc.escalated", 50003)))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = _samples(response.text)
    key = ("atrelay_events_total", (("outcome", "applied"), ("source", "webform"), ("type", "form.submitted")))
    assert samples[key] == 1
    assert samples[("atrelay_events_total", (("outcome", "dead"), ("source", "webform"),
                                              ("type", "form.submitted")))] == 1
    assert samples[("atrelay_dead_letters", ())] == 1
    assert samples[("atrelay_accept_to_applied_seconds_count", ())] == 2
    assert samples[("atrelay_autotask_calls_total", (("endpoint", "Tickets"), ("method", "PATCH"),
                                                      ("status", "200")))] == 2
    assert ("atrelay_autotask_quota_used", ()) in samples and ("atrelay_queue_depth", ()) in samples


def _alive(db: str, role: str) -> None:
    beat(db, process_id=f"{role}:test:1", role=role, host="test", pid=1, version="t")


def test_readiness_waits_for_picklists(client: TestClient, sqlite_url: str, autotask: tuple[str, SandboxState]) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    _alive(sqlite_url, "worker")
    _alive(sqlite_url, "beat")
    not_ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert set(not_ready.json()["problems"]) == {"picklists"}
    url, _ = autotask
    process_event(make_context(sqlite_url, url), add_event(sqlite_url, "webform", "form.submitted", webform_body()))
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readiness_names_an_unreachable_broker(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ATRELAY_BROKER_URL", "redis://127.0.0.1:9/0")
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None)) as c:
        body = c.get("/readyz").json()
    assert body["status"] == "not-ready" and "unreachable" in body["problems"]["broker"]

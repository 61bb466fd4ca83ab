"""The ingress: verify, record, enqueue after commit, answer; every refusal recorded with its reason."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from pipelines import store
from pipelines.audit import InboundEvent, RejectedRequest
from pipelines.db import session_scope
from tests.integration.helpers import mc_body, webform_body
from tests.support import MC_SECRET, WEBFORM_OLD_SECRET, WEBFORM_SECRET, WRONG_SECRET, signed
from workers.http.ingress import create_app
from workers.settings import load_settings


class Enqueued(list[int]):
    def __init__(self, db: str) -> None:
        super().__init__()
        self.db = db
        self.committed: list[bool] = []

    def __call__(self, event_id: int) -> None:
        # Enqueue must come after the commit: the row is visible from another session already.
        self.committed.append(store.get_event(self.db, event_id) is not None)
        self.append(event_id)


@pytest.fixture
def ingress(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Enqueued, str]]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    monkeypatch.setenv("ATRELAY_WEBFORM_WEBHOOK_SECRET", f"{WEBFORM_SECRET} {WEBFORM_OLD_SECRET}")
    monkeypatch.setenv("ATRELAY_MC_WEBHOOK_SECRET", MC_SECRET)
    queue = Enqueued(db_url)
    app = create_app(load_settings(), enqueue=queue)
    with TestClient(app) as client:
        yield client, queue, db_url


def rejections(db: str) -> list[RejectedRequest]:
    with session_scope(db) as s:
        return list(s.exec(select(RejectedRequest)).all())


def post(client: TestClient, path: str, body: bytes, secret: str, **kw: object) -> object:
    return client.post(path, content=body, headers=signed(body, secret, **kw))  # type: ignore[arg-type]


def test_accepts_and_enqueues_after_commit(ingress: tuple[TestClient, Enqueued, str]) -> None:
    client, queue, db = ingress
    body = webform_body()
    headers = signed(body, WEBFORM_SECRET, msg_id="msg_abc", )
    headers["Authorization"] = "Bearer should-not-be-kept"
    response = client.post("/webhooks/webform", content=body, headers=headers)
    assert response.status_code == 202
    data = response.json()
    assert data["status"] == "accepted"
    assert queue == [data["id"]] and queue.committed == [True]
    row = store.get_event(db, data["id"])
    assert row is not None
    assert (row.source, row.external_id, row.event_type, row.state) == ("webform", "msg_abc", "form.submitted",
                                                                          "accepted")
    assert row.body == body and row.ticket_number == "T20261126.0001"
    assert "authorization" not in row.headers and row.headers["webhook-id"] == "msg_abc"


def test_duplicate_webhook_id_is_answered_200_and_not_enqueued(ingress: tuple[TestClient, Enqueued, str]) -> None:
    client, queue, db = ingress
    body = webform_body()
    first = post(client, "/webhooks/webform", body, WEBFORM_SECRET, msg_id="msg_dup")
    again = post(client, "/webhooks/webform", body, WEBFORM_SECRET, msg_id="msg_dup")
    assert first.status_code == 202 and again.status_code == 200  # type: ignore[attr-defined]
    assert again.json() == {"id": first.json()["id"], "status": "duplicate"}  # type: ignore[attr-defined]
    assert len(queue) == 1
    with session_scope(db) as s:
        assert s.exec(select(func.count()).select_from(InboundEvent)).one() == 1


def test_old_secret_still_works_during_rotation(ingress: tuple[TestClient, Enqueued, str]) -> None:
    client, _, _ = ingress
    assert post(client, "/webhooks/webform", webform_body(), WEBFORM_OLD_SECRET).status_code == 202  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["mc.escalated", "mc.out_of_scope", "mc.no_contact"])
def test_mission_control_types(ingress: tuple[TestClient, Enqueued, str], kind: str) -> None:
    client, queue, db = ingress
    response = post(client, "/webhooks/mission-control", mc_body(kind), MC_SECRET)
    assert response.status_code == 202  # type: ignore[attr-defined]
    row = store.get_event(db, queue[0])
    assert row is not None and row.event_type == kind and row.source == "mission-control"


def _raw(client: TestClient, path: str, body: bytes, headers: dict[str, str]) -> object:
    return client.post(path, content=body, headers=headers)


@pytest.mark.parametrize(
    ("path", "make", "status", "reason"),
    [
        ("/webhooks/webform", lambda b: signed(b, WRONG_SECRET), 401, "signature does not match"),
        ("/webhooks/webform", lambda b: signed(b, MC_SECRET), 401, "signature does not match"),
        ("/webhooks/mission-control", lambda b: signed(b, WEBFORM_SECRET), 401, "signature does not match"),
        ("/webhooks/webform", lambda b: {}, 401, "missing header(s): webhook-id, webhook-timestamp, webhook-signature"),
        ("/webhooks/webform", lambda b: signed(b, WEBFORM_SECRET, timestamp=time.time() - 600), 401,
         "more than 5 minutes old"),
        ("/webhooks/webform", lambda b: signed(b, WEBFORM_SECRET, timestamp=time.time() + 600), 401, "in the future"),
    ],
)
def test_bad_signatures_are_401_and_recorded(
    ingress: tuple[TestClient, Enqueued, str], path: str, make: object, status: int, reason: str
) -> None:
    client, queue, db = ingress
    body = webform_body() if "webform" in path else mc_body("mc.escalated")
    response = client.post(path, content=body, headers=make(body))  # type: ignore[operator]
    assert response.status_code == status
    assert reason in response.json()["error"]
    assert queue == []
    (rej,) = rejections(db)
    assert rej.status_code == status and reason in rej.reason


def test_malformed_json_is_400(ingress: tuple[TestClient, Enqueued, str]) -> None:
    client, queue, db = ingress
    body = b'{"type": "form.submitted", '
    response = post(client, "/webhooks/webform", body, WEBFORM_SECRET)
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert response.json()["error"].startswith("malformed JSON")  # type: ignore[attr-defined]
    assert queue == [] and rejections(db)[0].status_code == 400


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
          "data": {"form": "new-user", "ticket_number": "12345"}}, "data.ticket_number"),
        ({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z", "data": {"form": "new-user"}}, "data"),
        ({"type": "form.submitted", "timestamp": "yesterday", "data": {"form": "x", "ticket_id": 1}}, "timestamp"),
        ({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00", "data": {"form": "x", "ticket_id": 1}},
         "timestamp"),
        ({"type": "form.deleted", "timestamp": "2026-11-26T09:30:00Z", "data": {"form": "x", "ticket_id": 1}},
         "type"),
        ({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z", "data": {"ticket_id": 1}}, "data.form"),
        ([1, 2, 3], "(body)"),
    ],
)
def test_wrong_shape_is_422_naming_the_field(
    ingress: tuple[TestClient, Enqueued, str], payload: object, field: str
) -> None:
    client, queue, db = ingress
    response = post(client, "/webhooks/webform", json.dumps(payload).encode(), WEBFORM_SECRET)
    assert response.status_code == 422  # type: ignore[attr-defined]
    data = response.json()  # type: ignore[attr-defined]
    assert data["error"].startswith(f"{field}:")
    assert data["fields"][0]["field"] == field
    assert queue == [] and rejections(db)[0].status_code == 422


def test_oversized_body_is_413(ingress: tuple[TestClient, Enqueued, str]) -> None:
    client, queue, db = ingress
    body = webform_body(answers={"essay": "x" * (300 * 1024)})
    response = post(client, "/webhooks/webform", body, WEBFORM_SECRET)
    assert response.status_code == 413  # type: ignore[attr-defined]
    assert queue == [] and rejections(db)[0].status_code == 413


def test_rejections_table_stays_bounded(db_url: str) -> None:
    for i in range(350):
        store.record_rejection(db_url, source="webform", status_code=401, reason="flood", webhook_id=f"m{i}",
                               remote="127.0.0.1", body_size=10, keep=100)
    with session_scope(db_url) as s:
        count = s.exec(select(func.count()).select_from(RejectedRequest)).one()
    assert 100 <= count < 200  # pruned in batches of 100


def test_health_and_readiness(ingress: tuple[TestClient, Enqueued, str]) -> None:
    client, _, _ = ingress
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")  # database and broker fine; no worker or beat alive, no picklists loaded
    assert ready.status_code == 503
    assert set(ready.json()["problems"]) == {"workers", "waiting", "beat", "picklists"}
    assert ready.json()["problems"]["workers"] == "no worker alive"
    # The intake-only question (for a load balancer in front of the ingress): it can accept and keep events.
    assert client.get("/readyz?scope=intake").json() == {"status": "ready"}


def _dead_event(db: str) -> int:
    from tests.integration.helpers import add_event

    event_id = add_event(db, "webform", "form.submitted", webform_body())
    store.claim_event(db, event_id, 60)
    run = store.start_run(db, event_id, None, None)
    store.finish_run(db, event_id=event_id, run_id=run, state=store.EventState.DEAD, outcome="dead",
                     reason="ticket-not-found: test")
    return event_id


def test_admin_replay_needs_the_token(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", "admin-token-for-tests-0123456789")
    queue = Enqueued(db_url)
    event_id = _dead_event(db_url)
    with TestClient(create_app(load_settings(), enqueue=queue)) as client:
        path = f"/api/events/{event_id}/replay"
        assert client.post(path).status_code == 401
        assert client.post(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.post(path, headers={"Authorization": "Basic admin-token-for-tests-0123456789"}).status_code == 401
        good = {"Authorization": "Bearer admin-token-for-tests-0123456789"}
        response = client.post(path, headers=good)
        assert response.status_code == 202 and response.json()["status"] == "accepted"
        assert queue == [event_id]
        assert client.post(path, headers=good).status_code == 409  # accepted now: nothing to replay
        assert client.post("/api/events/999999/replay", headers=good).status_code == 404
    row = store.get_event(db_url, event_id)
    assert row is not None and row.state == "accepted" and row.replays == 1


def test_admin_api_is_closed_without_a_configured_token(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    event_id = _dead_event(db_url)
    with TestClient(create_app(load_settings(), enqueue=Enqueued(db_url))) as client:
        response = client.post(f"/api/events/{event_id}/replay", headers={"Authorization": "Bearer "})
    assert response.status_code == 401 and "ATRELAY_ADMIN_TOKEN" in response.json()["detail"]

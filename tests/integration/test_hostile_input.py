"""Hostile input at the ingress: schemathesis (from the ingress's own OpenAPI) and hypothesis.

Never a 5xx; bad, missing or rotated-out signatures 401; timestamps over 5 minutes off 401; a replayed
webhook-id is a duplicate, never a second event; malformed JSON 400; wrong shape 422 naming the
field; oversized 413; a flood of unauthenticated requests leaves the database bounded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import func, select

from pipelines.audit import InboundEvent, RejectedRequest
from pipelines.db import session_scope
from tests.integration.helpers import webform_body
from tests.support import MC_SECRET, WEBFORM_OLD_SECRET, WEBFORM_SECRET, WRONG_SECRET, signed
from workers.http.ingress import create_app
from workers.settings import load_settings

SECRETS = {"/webhooks/webform": WEBFORM_SECRET, "/webhooks/mission-control": MC_SECRET}
EXAMPLES = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture
def app_and_db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db_url)
    monkeypatch.setenv("ATRELAY_WEBFORM_WEBHOOK_SECRET", WEBFORM_SECRET)
    monkeypatch.setenv("ATRELAY_MC_WEBHOOK_SECRET", MC_SECRET)
    monkeypatch.setenv("ATRELAY_REJECTIONS_KEEP", "100")
    yield create_app(load_settings(), enqueue=lambda _id: None), db_url


def _count(db: str, table: type) -> int:
    with session_scope(db) as s:
        return int(s.exec(select(func.count()).select_from(table)).one())


def test_schemathesis_never_a_server_error(app_and_db: tuple[Any, str]) -> None:
    """Cases generated from the OpenAPI, sent unsigned and signed: always a precise 4xx or a 2xx."""
    app, db = app_and_db
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    client = TestClient(app)
    seen: set[int] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SECRETS:
            _exercise(client, operation, operation.path, seen)
    assert {401, 202}.issubset(seen), seen  # both refusals and acceptances were exercised
    assert _count(db, RejectedRequest) <= 200


def _exercise(client: TestClient, operation: Any, path: str, seen: set[int]) -> None:
    @EXAMPLES
    @given(case=operation.as_strategy(), sign=st.booleans())
    def check(case: Any, sign: bool) -> None:
        body = json.dumps(case.body).encode() if not isinstance(case.body, bytes) else case.body
        headers = {k: str(v) for k, v in (case.headers or {}).items() if isinstance(v, str)}
        if sign:
            headers = signed(body, SECRETS[path])
        headers["content-type"] = "application/json"
        response = client.post(path, content=body, headers=headers)
        assert response.status_code < 500, response.text
        assert response.status_code in (200, 202, 400, 401, 413, 422), response.status_code
        if not sign:
            assert response.status_code == 401
        seen.add(response.status_code)

    check()


@EXAMPLES
@given(body=st.binary(max_size=2048))
def test_arbitrary_signed_bytes(app_and_db: tuple[Any, str], body: bytes) -> None:
    app, _ = app_and_db
    try:
        headers = signed(body, WEBFORM_SECRET)
    except UnicodeDecodeError:
        headers = signed(b"{}", WEBFORM_SECRET)  # a signature over other bytes
    response = TestClient(app).post("/webhooks/webform", content=body, headers=headers)
    assert response.status_code in (400, 401, 422), response.text


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                    max_leaves=20)


@EXAMPLES
@given(payload=JSON, data=st.dictionaries(st.sampled_from(["form", "ticket_id", "ticket_number", "answers",
                                                           "submitted_by", "summary"]), JSON, max_size=5))
def test_arbitrary_signed_json(app_and_db: tuple[Any, str], payload: Any, data: dict[str, Any]) -> None:
    app, _ = app_and_db
    client = TestClient(app)
    for candidate in (payload, {"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z", "data": data}):
        body = json.dumps(candidate).encode()
        response = client.post("/webhooks/webform", content=body, headers=signed(body, WEBFORM_SECRET))
        assert response.status_code in (202, 422), response.text
        if response.status_code == 422:
            detail = response.json()
            assert detail["fields"] and detail["error"].startswith(detail["fields"][0]["field"])


@EXAMPLES
@given(headers=st.dictionaries(st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature"]),
                               st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80)))
def test_forged_headers_are_401(app_and_db: tuple[Any, str], headers: dict[str, str]) -> None:
    app, _ = app_and_db
    response = TestClient(app).post("/webhooks/mission-control", content=webform_body(), headers=headers)
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("secret", "offset"),
    [(WRONG_SECRET, 0), (WEBFORM_OLD_SECRET, 0), (WEBFORM_SECRET, -301), (WEBFORM_SECRET, 301), (MC_SECRET, 0)],
)
def test_rotated_out_wrong_or_stale_is_401(app_and_db: tuple[Any, str], secret: str, offset: int) -> None:
    app, db = app_and_db
    body = webform_body()
    response = TestClient(app).post("/webhooks/webform", content=body,
                                    headers=signed(body, secret, timestamp=time.time() + offset))
    assert response.status_code == 401
    assert _count(db, InboundEvent) == 0


def test_replayed_webhook_id_is_one_event(app_and_db: tuple[Any, str]) -> None:
    app, db = app_and_db
    client = TestClient(app)
    body = webform_body()
    codes = [client.post("/webhooks/webform", content=body,
                         headers=signed(body, WEBFORM_SECRET, msg_id="msg_replayed")).status_code for _ in range(5)]
    assert codes == [202, 200, 200, 200, 200]
    other = webform_body(answers={"changed": "body"})  # same id, other body: still the same message
    again = client.post("/webhooks/webform", content=other, headers=signed(other, WEBFORM_SECRET, msg_id="msg_replayed"))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert _count(db, InboundEvent) == 1


def test_oversized_and_lying_content_length(app_and_db: tuple[Any, str]) -> None:
    app, _ = app_and_db
    client = TestClient(app)
    big = b'{"type":"form.submitted","pad":"' + b"x" * (300 * 1024) + b'"}'
    assert client.post("/webhooks/webform", content=big, headers=signed(big, WEBFORM_SECRET)).status_code == 413
    small = webform_body()
    assert client.post("/webhooks/webform", content=small,
                       headers={**signed(small, WEBFORM_SECRET), "content-length": "abc"}).status_code in (400, 413)


def test_unauthenticated_flood_keeps_the_database_bounded(app_and_db: tuple[Any, str]) -> None:
    app, db = app_and_db
    client = TestClient(app)
    body = webform_body()
    for i in range(1500):
        response = client.post("/webhooks/webform", content=body, headers={"webhook-id": f"flood-{i}"})
        assert response.status_code == 401
    assert _count(db, InboundEvent) == 0
    assert _count(db, RejectedRequest) <= 200  # keep=100, pruned every 100 rows

"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from workers.http.ingress import create_app
from workers.settings import load_settings

DASHBOARD_TOKEN = "a-dashboard-token-of-enough-length"


@pytest.fixture
def ops_client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The ingress app on a migrated SQLite database, signed in to the dashboard by Bearer token."""
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", DASHBOARD_TOKEN)
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None),
                    headers={"authorization": f"Bearer {DASHBOARD_TOKEN}"}) as client:
        yield client

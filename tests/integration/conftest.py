"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from fastapi.testclient import TestClient

from workers.http.ingress import create_app
from workers.settings import load_settings, reset_settings_cache

DASHBOARD_TOKEN = "a-dashboard-token-of-enough-length"


@pytest.fixture
def ops_client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The ingress app on a migrated SQLite database, signed in to the dashboard by Bearer token."""
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", DASHBOARD_TOKEN)
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None),
                    headers={"authorization": f"Bearer {DASHBOARD_TOKEN}"}) as client:
        yield client


@pytest.fixture
def ops_on(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., AbstractContextManager[TestClient]]:
    """``with ops_on(**env) as client``: the ingress app on both databases (``db_url``), with further
    ``ATRELAY_`` settings, signed in to the dashboard. It runs no watchdog: the test says which process looks."""

    @contextmanager
    def start(**env: str) -> Iterator[TestClient]:
        for name, value in {"ATRELAY_DATABASE_URL": db_url, "ATRELAY_ADMIN_TOKEN": DASHBOARD_TOKEN, **env}.items():
            monkeypatch.setenv(name, value)
        reset_settings_cache()
        with TestClient(create_app(load_settings(), enqueue=lambda _i: None),
                        headers={"authorization": f"Bearer {DASHBOARD_TOKEN}"}) as client:
            yield client

    return start

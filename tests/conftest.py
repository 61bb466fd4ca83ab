"""Shared fixtures: sandboxes, migrated databases (SQLite and PostgreSQL), settings."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from pipelines.schema import upgrade
from sandboxes.autotask.app import create_app as create_autotask_app
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from sandboxes.timezest.app import TimezestSandboxState
from sandboxes.timezest.app import create_app as create_timezest_app
from tests.support import fresh_pg_database, redis_dbs, require_service
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS, reset_settings_cache

#: Every table a test may fill; emptied between tests that share a PostgreSQL database.
DATA_TABLES = ("inbound_events", "pipeline_runs", "outbound_attempts", "effects", "ticket_state", "ticket_status_changes",
               "rejected_requests", "timezest_requests", "poll_runs", "audit_seals", "quota_slots", "metric_counters",
               "quota_requests", "tenant_usage", "alerts", "ops_sessions", "ticket_numbers", "alert_deliveries",
               "alert_senders", "dead_letters_alerted", "liveness_incidents", "ops_marks", "process_heartbeats",
               "shadow_writes", "shadow_periods", "partner_sightings")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test reads the developer's environment or .env; each gets its own var folder."""
    import os

    for key in list(os.environ):
        if key.startswith("ATRELAY_") and key != "ATRELAY_TEST_PG":
            monkeypatch.delenv(key)
    monkeypatch.setenv("ATRELAY_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    reset_settings_cache()
    yield
    reset_settings_cache()


@pytest.fixture(scope="session")
def autotask_server() -> Iterator[tuple[ThreadedServer, SandboxState]]:
    state = SandboxState()
    server = ThreadedServer(create_autotask_app(state)).start()
    yield server, state
    server.stop()


@pytest.fixture
def autotask(autotask_server: tuple[ThreadedServer, SandboxState]) -> Iterator[tuple[str, SandboxState]]:
    """The Autotask sandbox, reset for this test: (base url, state)."""
    server, state = autotask_server
    state.reset()
    yield server.url, state
    state.reset()


@pytest.fixture(scope="session")
def timezest_server() -> Iterator[tuple[ThreadedServer, TimezestSandboxState]]:
    state = TimezestSandboxState()
    server = ThreadedServer(create_timezest_app(state)).start()
    yield server, state
    server.stop()


@pytest.fixture
def timezest(timezest_server: tuple[ThreadedServer, TimezestSandboxState]) -> Iterator[tuple[str, TimezestSandboxState]]:
    server, state = timezest_server
    state.reset()
    key = state.api_key
    yield server.url, state
    state.api_key = key
    state.reset()


def autotask_env(url: str) -> dict[str, str]:
    return {
        "ATRELAY_AUTOTASK_USERNAME": SANDBOX_AUTOTASK_CREDENTIALS["username"],
        "ATRELAY_AUTOTASK_SECRET": SANDBOX_AUTOTASK_CREDENTIALS["secret"],
        "ATRELAY_AUTOTASK_INTEGRATION_CODE": SANDBOX_AUTOTASK_CREDENTIALS["integration_code"],
        "ATRELAY_AUTOTASK_ZONE_URL": f"{url}/atservicesrest/v1.0/zoneInformation",
    }


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    upgrade(url)
    return url


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to head, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    with fresh_pg_database("atrelay_t") as url:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The session's PostgreSQL database, emptied for this test."""
    from pipelines.db import engine_for

    with engine_for(pg_database).begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))
        conn.execute(text("UPDATE audit_anchor SET last_seq = 0, last_hash = :h, pruned_at = NULL"), {"h": "0" * 64})
    return pg_database


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Run a test on both audit-database backends."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_service("Redis", "127.0.0.1", 6379)
    return f"redis://127.0.0.1:6379/{redis_dbs()[0]}"


def sandbox_calls(url: str) -> dict[str, object]:
    return httpx.get(f"{url}/_sandbox/calls").json()  # type: ignore[no-any-return]

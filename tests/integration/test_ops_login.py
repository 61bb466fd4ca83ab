"""Signing in to the dashboard: failed sign-ins are logged (never the value) and rate-limited;
a guessable admin token is refused at start-up."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from workers.ingress import create_app
from workers.ops import LOGIN_FAILURES
from workers.settings import SettingsError, load_settings

TOKEN = "a-dashboard-token-of-enough-length"


def test_wrong_tokens_are_logged_and_then_rate_limited(sqlite_url: str, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", TOKEN)
    caplog.set_level(logging.WARNING, logger="atrelay.ops")
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None)) as client:
        page = client.get("/ops/login")
        csrf_free = {"token": "wrong-guess-000"}
        answers = [client.post("/ops/login", data=csrf_free, follow_redirects=False).status_code
                   for _ in range(LOGIN_FAILURES + 2)]
        assert page.status_code in (200, 401) and "token" in page.text  # the sign-in form
        assert 429 not in answers[:LOGIN_FAILURES] and answers[-1] == 429
        # Once limited, even the right token waits: a guesser learns nothing from the answer.
        assert client.post("/ops/login", data={"token": TOKEN}, follow_redirects=False).status_code == 429
    failed = [r for r in caplog.records if r.getMessage() == "ops.login.failed"]
    assert len(failed) == LOGIN_FAILURES
    assert all("wrong-guess-000" not in str(r.__dict__) for r in caplog.records)


@pytest.mark.parametrize("token", ["short", "x" * 19, "  padded-but-short   "])
def test_a_guessable_admin_token_is_refused(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", token)
    with pytest.raises(SettingsError, match="ATRELAY_ADMIN_TOKEN: must be at least 20 characters"):
        load_settings()

"""Settings: every variable read once; a malformed value is one line naming the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support import MC_SECRET, ROOT, WEBFORM_OLD_SECRET, WEBFORM_SECRET
from workers.settings import SettingsError, load_settings, webhook_secrets


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("ATRELAY_TIMEZEST_POLL_SECONDS", "soon", "ATRELAY_TIMEZEST_POLL_SECONDS: Input should be a valid integer"),
        ("ATRELAY_TIMEZEST_POLL_SECONDS", "1", "ATRELAY_TIMEZEST_POLL_SECONDS: Input should be greater than or equal to 5"),
        ("ATRELAY_DATABASE_URL", "mysql://x", "ATRELAY_DATABASE_URL: must be a sqlite:/// or postgresql"),
        ("ATRELAY_WEBFORM_WEBHOOK_SECRET", "plain-secret", "ATRELAY_WEBFORM_WEBHOOK_SECRET: each secret must start with 'whsec_'"),
        ("ATRELAY_RULES_FILE", "/nonexistent/rules.toml", "ATRELAY_RULES_FILE: file /nonexistent/rules.toml does not exist"),
        ("ATRELAY_LOG_LEVEL", "LOUD", "ATRELAY_LOG_LEVEL: must be one of"),
    ],
)
def test_malformed_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str, needle: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as exc:
        load_settings()
    message = str(exc.value)
    assert needle in message
    assert "\n" not in message


def test_secret_values_are_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_MC_WEBHOOK_SECRET", "whsec_!!!notbase64-but-secret")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert "notbase64-but-secret" not in str(exc.value)


def test_rotation_accepts_two_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_WEBFORM_WEBHOOK_SECRET", f"{WEBFORM_SECRET} {WEBFORM_OLD_SECRET}")
    monkeypatch.setenv("ATRELAY_MC_WEBHOOK_SECRET", MC_SECRET)
    settings = load_settings()
    assert webhook_secrets(settings, "webform") == ([WEBFORM_SECRET, WEBFORM_OLD_SECRET], False)
    assert webhook_secrets(settings, "mission-control") == ([MC_SECRET], False)


def test_embedded_defaults_need_no_configuration(tmp_path: object) -> None:
    settings = load_settings()
    assert settings.effective_database_url.startswith("sqlite:///")
    assert settings.effective_broker_url.startswith("sqla+sqlite:///")
    assert settings.embedded
    assert not settings.autotask_configured
    secrets, generated = webhook_secrets(settings, "webform")
    assert generated and secrets[0].startswith("whsec_")
    assert webhook_secrets(settings, "webform")[0] == secrets  # stable across reads


def test_postgres_url_gets_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_DATABASE_URL", "postgresql://u@h/db")
    assert load_settings().effective_database_url == "postgresql+psycopg://u@h/db"


def test_cli_stops_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"PATH": "/usr/bin:/bin", "ATRELAY_AUTOTASK_MAX_IN_FLIGHT": "lots"}
    out = subprocess.run([sys.executable, "-m", "workers.cli", "migrate"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert "ATRELAY_AUTOTASK_MAX_IN_FLIGHT" in lines[0]


def test_max_crashes_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATRELAY_MAX_CRASHES", raising=False)
    assert load_settings().max_crashes == 3  # the default issue 19 names
    monkeypatch.setenv("ATRELAY_MAX_CRASHES", "7")
    assert load_settings().max_crashes == 7
    monkeypatch.setenv("ATRELAY_MAX_CRASHES", "0")  # never dead-lettering would bring back the endless loop
    with pytest.raises(SettingsError, match="ATRELAY_MAX_CRASHES: Input should be greater than or equal to 1"):
        load_settings()

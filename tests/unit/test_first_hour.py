"""The first hour (issue 13): typos and half-set credentials are named, CLI filters are checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelines import store
from pipelines.schema import upgrade
from tests.support import ROOT
from workers.settings import dev_admin_token, load_settings, partial_autotask_credentials, unknown_variables


def _cli(tmp_path: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env.update({"ATRELAY_VAR_DIR": str(tmp_path / "var"), "COLUMNS": "200", **env_extra})
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def test_unknown_variable_is_named_with_a_suggestion() -> None:
    found = unknown_variables({"ATRELAY_AUTOTASK_USER": "x", "ATRELAY_LOG_LEVEL": "INFO", "PATH": "/bin"})
    assert found == ["ATRELAY_AUTOTASK_USER (did you mean ATRELAY_AUTOTASK_USERNAME?)"]


def test_unknown_variable_stops_the_cli(tmp_path: Path) -> None:
    done = _cli(tmp_path, "events", ATRELAY_AUTOTASK_USER="someone@example.com")
    assert done.returncode == 2
    assert "ATRELAY_AUTOTASK_USER" in done.stderr and "ATRELAY_AUTOTASK_USERNAME" in done.stderr


def test_partial_autotask_credentials_are_named(tmp_path: Path) -> None:
    settings = load_settings(autotask_username="api@example.com", autotask_secret="s")
    assert partial_autotask_credentials(settings) == ["ATRELAY_AUTOTASK_INTEGRATION_CODE"]
    assert partial_autotask_credentials(load_settings()) == []
    done = _cli(tmp_path, "events", ATRELAY_AUTOTASK_USERNAME="api@example.com")
    assert done.returncode == 2
    assert "ATRELAY_AUTOTASK_SECRET" in done.stderr and "ATRELAY_AUTOTASK_INTEGRATION_CODE" in done.stderr


def test_event_filters_are_validated_and_ticket_includes_follow_ups(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    db = f"sqlite:///{tmp_path / 'var' / 'atrelay.db'}"
    upgrade(db)
    for flag, value in (("--state", "bogus"), ("--source", "web-form")):
        done = _cli(tmp_path, "events", flag, value)
        assert done.returncode == 2 and "use one of" in done.stderr, done.stderr
    parent, _ = store.insert_event(db, store.NewEvent(source="mission-control", external_id="a",
                                                      event_type="mc.no_contact", body=b"{}", headers={},
                                                      ticket_number="T20261126.0002"))
    store.insert_event(db, store.NewEvent(source="mission-control", external_id="b",
                                          event_type="mc.no_contact.follow_up", body=b"{}", headers={},
                                          ticket_id=50002, caused_by_id=parent))
    store.insert_event(db, store.NewEvent(source="webform", external_id="c", event_type="form.submitted",
                                          body=b"{}", headers={}, ticket_number="T20261126.0001"))
    done = _cli(tmp_path, "events", "--ticket", "T20261126.0002")
    assert done.returncode == 0, done.stderr
    assert "mc.no_contact.follow_up" in done.stdout and "form.submitted" not in done.stdout


def test_dev_admin_token_in_the_file_is_the_one_that_works(tmp_path: Path) -> None:
    settings = load_settings(var_dir=tmp_path)
    (tmp_path / "dev-secrets.json").write_text('{"admin-token": "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="}')
    token = dev_admin_token(settings)
    assert token == "c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    assert '"admin-token": "c2VjcmV0LXNlY3JldC1zZWNyZXQ="' in (tmp_path / "dev-secrets.json").read_text()
    assert dev_admin_token(settings) == token

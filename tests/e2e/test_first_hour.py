"""The first hour of a new user (issue 13): `atrelay run`, then `doctor` and `rules` from another terminal."""

from __future__ import annotations

import logging
import re
import socket
import stat
from pathlib import Path

import pytest

from sandboxes.common.server import free_port
from tests.e2e.test_cli import _env, atrelay
from tests.support import Proc
from workers.logs import configure_logging


def test_doctor_and_rules_pass_against_a_running_embedded_atrelay(tmp_path: Path) -> None:
    ports = {"port": free_port(), "at": free_port(), "tz": free_port()}
    run = Proc("atrelay-run", ["run", "--port", str(ports["port"]), "--autotask-sandbox-port", str(ports["at"]),
                               "--timezest-sandbox-port", str(ports["tz"])], _env(tmp_path), tmp_path)
    try:
        run.wait_log("atrelay is running", timeout=120)
        shared = tmp_path / "var" / "embedded.json"
        assert stat.S_IMODE(shared.stat().st_mode) == 0o600
        doctor = atrelay(tmp_path, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        # It says which Autotask and TimeZest it checked: the sandboxes this `atrelay run` started.
        assert "using the Autotask sandbox" in doctor.stderr and f":{ports['at']}" in doctor.stderr
        assert f":{ports['tz']}" in doctor.stderr
        assert "credentials accepted" in doctor.stdout and "timezest: API key accepted" in doctor.stdout
        rules = atrelay(tmp_path, "rules")
        assert rules.returncode == 0, rules.stdout + rules.stderr
        # The status table's rows (the watch-rules table below names event types in a later column).
        rows = [line for line in rules.stdout.splitlines() if line.startswith(("│ form.submitted ", "│ mc.escalated "))]
        assert len(rows) == 2 and all(re.search(r"│\s*\d+\s*│", row) for row in rows), rules.stdout
        assert "?" not in "".join(rows)
    finally:
        run.stop()
    assert run.proc.returncode == 0, run.log()[-3000:]
    # Gone with the run: a later command does not use sandboxes that no longer answer.
    assert not (tmp_path / "var" / "embedded.json").exists()
    after = atrelay(tmp_path, "rules")
    assert "using the Autotask sandbox" not in after.stderr


def test_a_taken_port_is_named_before_any_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = atrelay(tmp_path, "run", "--port", str(port), "--autotask-sandbox-port", str(free_port()),
                      "--timezest-sandbox-port", str(free_port()))
    assert out.returncode == 1
    assert "atrelay is running" not in out.stdout
    assert f"port {port}" in out.stderr and "--port" in out.stderr


def test_a_rule_naming_a_missing_status_stops_run_before_the_banner(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[events."mc.escalated"]\nstatus = "No Such Status"\n')
    out = atrelay(tmp_path, "run", "--port", str(free_port()), "--autotask-sandbox-port", str(free_port()),
                  "--timezest-sandbox-port", str(free_port()), ATRELAY_RULES_FILE=str(rules))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "atrelay is running" not in out.stdout
    assert "No Such Status" in out.stderr


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    bad = "postgresql+psycopg://nobody@127.0.0.1:9/none"
    migrate = atrelay(tmp_path, "migrate", ATRELAY_DATABASE_URL=bad)
    assert migrate.returncode == 1
    assert "unreachable" in migrate.stderr and len(migrate.stderr.strip().splitlines()) <= 2, migrate.stderr
    assert "Traceback" not in migrate.stderr
    run = atrelay(tmp_path, "run", "--port", str(free_port()), "--autotask-sandbox-port", str(free_port()),
                  "--timezest-sandbox-port", str(free_port()), ATRELAY_DATABASE_URL=bad)
    assert run.returncode == 1 and "Traceback" not in run.stderr and "unreachable" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) <= 3, run.stderr


def test_commands_elsewhere_name_the_var_folder_instead_of_creating_one(tmp_path: Path) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    events = atrelay(empty, "events")
    assert events.returncode == 2 and "no audit database" in events.stderr and str(empty / "var") in events.stderr
    assert "run `atrelay migrate` first" in events.stderr
    assert not (empty / "var" / "atrelay.db").exists()
    sample = Path(__file__).resolve().parents[2] / "samples" / "webform-new-user.json"
    send = atrelay(empty, "send", str(sample), "--url", f"http://127.0.0.1:{free_port()}")
    assert send.returncode == 1
    assert not (empty / "var").exists()  # no fresh secrets minted (they could only earn a 401)


def test_the_default_var_folder_is_the_checkout_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.settings import load_settings

    monkeypatch.delenv("ATRELAY_VAR_DIR")
    root = Path(__file__).resolve().parents[2]
    assert load_settings().var_path == root / "var"


def test_a_rules_file_error_keeps_its_section_name(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[events."mc.no_contact"]\nstatus = "MC No Contact"\nbogus_key = 1\n')
    out = atrelay(tmp_path, "rules", ATRELAY_RULES_FILE=str(rules))
    assert out.returncode == 1
    # Rich used to take the section for markup and print nothing of it.
    assert "[events.'mc.no_contact']" in out.stdout, out.stdout


def test_idle_celery_chatter_is_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    trace = logging.getLogger("celery.app.trace")
    trace.info("Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
               {"name": "atrelay.sweep", "id": "x", "runtime": 0.01, "return_value": None})
    logging.getLogger("celery.worker.strategy").info("Task %(name)s[%(id)s] received",
                                                     {"name": "atrelay.timezest_poll", "id": "y"})
    trace.error("Task %(name)s[%(id)s] raised unexpected: %(exc)s", {"name": "atrelay.sweep", "id": "z", "exc": "boom"})
    err = capsys.readouterr().err
    assert "succeeded" not in err and "received" not in err
    assert "raised unexpected" in err

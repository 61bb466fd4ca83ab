"""The first day on a real install (issue 22, part 4): each trap a new operator met, one test each.

(`atrelay run`'s terminal, `autotask webhooks status` in embedded mode and the restart right after Ctrl-C
are in tests/e2e/test_first_day_run.py: they need a running `atrelay run`.)
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console

from pipelines import store
from pipelines.schema import upgrade
from tests.support import ROOT
from workers.cli.doctor import Report, _webhook_secrets
from workers.cli.supervisor import Supervisor
from workers.settings import (
    SANDBOX_AUTOTASK_CREDENTIALS,
    SANDBOX_TIMEZEST_API_KEY,
    load_settings,
    unknown_variables,
)


def _cli(cwd: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a person runs it with its output piped (no COLUMNS: a pipe, not a terminal)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_") and k != "COLUMNS"}
    env.update({"ATRELAY_VAR_DIR": str(cwd / "var"), **env_extra})
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


# ---- `atrelay run` binds with address reuse ---------------------------------------------------------

def _time_wait_on(port_socket: socket.socket) -> int:
    """Leave the listening port with a connection in TCP's wait after close (as after Ctrl-C), not listening."""
    port = int(port_socket.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = port_socket.accept()
    accepted.close()  # the server side closes first: its end (local port = the port) waits after close
    client.close()
    port_socket.close()
    return port


def test_a_port_only_in_tcp_wait_is_free_and_a_listening_one_is_named(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn (ingress, sandboxes) binds
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = _time_wait_on(listener)
    with socket.socket() as plain, pytest.raises(OSError):  # what the probe did before: refused for about a minute
        plain.bind(("127.0.0.1", port))
    settings = load_settings(var_dir=tmp_path, autotask_username="u", autotask_secret="s",
                             autotask_integration_code="c", timezest_api_key="k")
    Supervisor(settings, Console(), port=port)._check_ports()  # free: a restart starts
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", port))
        held.listen()
        with pytest.raises(RuntimeError, match=f"port {port} .* is another atrelay running"):
            Supervisor(settings, Console(), port=port)._check_ports()


# ---- .env lines are checked like environment variables ---------------------------------------------

def test_a_typo_in_dotenv_is_refused_with_did_you_mean(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("ATRELAY_LOG_LEVEL=INFO\nATRELAY_AUTOTASK_USER=api@example.com\nOTHER=1\n")
    assert unknown_variables({}, env_file=tmp_path / ".env") == [
        f"ATRELAY_AUTOTASK_USER in {tmp_path / '.env'} (did you mean ATRELAY_AUTOTASK_USERNAME?)"]
    done = _cli(tmp_path, "events")
    assert done.returncode == 2
    assert "ATRELAY_AUTOTASK_USER in .env (did you mean ATRELAY_AUTOTASK_USERNAME?)" in done.stderr, done.stderr


# ---- the sandboxes' credentials are printed ---------------------------------------------------------

def test_sandbox_help_prints_its_credentials(tmp_path: Path) -> None:
    autotask = _cli(tmp_path, "sandbox", "autotask", "--help", COLUMNS="200")
    assert autotask.returncode == 0
    for value in SANDBOX_AUTOTASK_CREDENTIALS.values():
        assert value in autotask.stdout, autotask.stdout
    timezest = _cli(tmp_path, "sandbox", "timezest", "--help", COLUMNS="200")
    assert timezest.returncode == 0 and SANDBOX_TIMEZEST_API_KEY in timezest.stdout, timezest.stdout
    readme = (ROOT / "README.md").read_text()
    assert all(value in readme for value in (*SANDBOX_AUTOTASK_CREDENTIALS.values(), SANDBOX_TIMEZEST_API_KEY))


# ---- doctor counts the webhook secrets right --------------------------------------------------------

WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_doctor_names_each_of_the_three_webhook_secrets(tmp_path: Path) -> None:
    distributed = {"var_dir": tmp_path, "database_url": "postgresql+psycopg://x@h/db", "broker_url": "redis://h/0"}
    two = Report()
    _webhook_secrets(load_settings(webform_webhook_secret=WHSEC, mc_webhook_secret=WHSEC, **distributed), two)
    assert two.ok == [] and len(two.problems) == 1
    assert "ATRELAY_AUTOTASK_WEBHOOK_SECRET" in two.problems[0] and "WEBFORM" not in two.problems[0]
    three = Report()
    _webhook_secrets(load_settings(webform_webhook_secret=WHSEC, mc_webhook_secret=WHSEC,
                                   autotask_webhook_secret="x" * 32, **distributed), three)
    assert three.problems == [] and three.ok == [
        "webhooks: all 3 secrets configured (web form, Mission Control, Autotask callouts)"]
    embedded = Report()
    _webhook_secrets(load_settings(var_dir=tmp_path, webform_webhook_secret=WHSEC), embedded)
    assert embedded.problems == [] and "1 of 3 secrets configured" in embedded.ok[0]
    assert "Mission Control, Autotask callouts" in embedded.ok[0]


# ---- `atrelay secret new` ---------------------------------------------------------------------------

def test_secret_new_prints_what_the_settings_accept(tmp_path: Path) -> None:
    made = {kind: _cli(tmp_path, "secret", "new", "--kind", kind) for kind in ("standard-webhooks", "autotask",
                                                                               "admin-token")}
    assert all(done.returncode == 0 for done in made.values()), {k: d.stderr for k, d in made.items()}
    values = {kind: done.stdout.strip() for kind, done in made.items()}
    assert all(len(done.stdout.splitlines()) == 1 for done in made.values())  # the secret alone on stdout
    settings = load_settings(var_dir=tmp_path, webform_webhook_secret=values["standard-webhooks"],
                             autotask_webhook_secret=values["autotask"], admin_token=values["admin-token"])
    assert settings.webform_webhook_secret is not None and values["standard-webhooks"].startswith("whsec_")
    assert "ATRELAY_AUTOTASK_WEBHOOK_SECRET" in made["autotask"].stderr
    assert _cli(tmp_path, "secret", "new").stdout.startswith("whsec_")  # the default kind


# ---- piped tables do not wrap mid-word; --format json|csv --------------------------------------------

REASON = "superseded: Taylor Tech set In Progress after the partner's event; atrelay keeps the person's choice"


def _events_db(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    db = f"sqlite:///{tmp_path / 'var' / 'atrelay.db'}"
    upgrade(db)
    store.insert_event(db, store.NewEvent(source="mission-control", external_id="a", event_type="mc.no_contact",
                                          body=b"{}", headers={}, ticket_number="T20261126.0002", reason=REASON))


def test_piped_tables_keep_each_row_on_one_line(tmp_path: Path) -> None:
    _events_db(tmp_path)
    done = _cli(tmp_path, "events")
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if "mc.no_contact" in line]
    # Every cell whole on the event's own line (at 80 columns: "mc.no_cont / act", the reason in pieces).
    for cell in ("mission-control", "T20261126.0002", REASON[:80]):
        assert cell in row, done.stdout


def test_listing_commands_speak_json_and_csv(tmp_path: Path) -> None:
    _events_db(tmp_path)
    as_json = _cli(tmp_path, "events", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    (event,) = json.loads(as_json.stdout)
    assert (event["type"], event["ticket"], event["reason"]) == ("mc.no_contact", "T20261126.0002", REASON)
    as_csv = _cli(tmp_path, "events", "--format", "csv")
    header, row = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert header[:4] == ["id", "received (UTC)", "source", "type"] and row[6] == REASON
    for command in ("dlq", "rejections", "polls"):
        listed = _cli(tmp_path, command, "--format", "json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], (command, listed.stderr)


# ---- the guide's backup commands -------------------------------------------------------------------

def test_backup_commands_prune_and_verify(tmp_path: Path) -> None:
    _events_db(tmp_path)
    pruned = _cli(tmp_path, "audit", "prune", "--older-than-days", "400")
    assert pruned.returncode == 0 and "pruned 0 seal(s) and 0 event(s)" in pruned.stdout, pruned.stderr
    verified = _cli(tmp_path, "audit", "verify")
    assert verified.returncode == 0 and "audit chain OK" in verified.stdout, verified.stderr


# ---- a malformed sample names line and column -------------------------------------------------------

def test_a_truncated_sample_names_the_line_and_column(tmp_path: Path) -> None:
    sample = tmp_path / "cut.json"
    sample.write_text('{\n  "type": "form.submitted",\n  "data": {"form": "new-user",\n')
    done = _cli(tmp_path, "send", str(sample), "--url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert f"{sample}: not valid JSON at line 4, column 1" in done.stderr, done.stderr
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert "not an object" in _cli(tmp_path, "send", str(listed)).stderr


# ---- the mode on `atrelay run`'s banner (issue 22, shadow mode) --------------------------------------

@dataclass
class _NoChildren(Supervisor):
    """`atrelay run`'s own start-up and banner, with the processes it would start left out (none is)."""

    spawned: list[str] = field(default_factory=list)

    def _check_ports(self) -> None:
        pass

    def _spawn(self, name: str, *args: str) -> None:
        self.spawned.append(name)

    def _child(self, *args: str) -> subprocess.Popen[str]:
        return None  # type: ignore[return-value]  # read only by _finish below: `migrate` and `rules` succeed

    @staticmethod
    def _finish(child: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], 0, "", "")

    def _wait_http(self, name: str, url: str, timeout: float = 30.0) -> None:
        pass

    def _register_sandbox_webhooks(self) -> list[str]:
        return []

    def _wait_ready(self, url: str, timeout: float = 30.0) -> list[str]:
        return []


def _banner(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sup = _NoChildren(load_settings(), Console())
    lines = sup.start()
    assert sup.spawned == ["autotask-sandbox", "timezest-sandbox", "worker", "ingress"]
    shown = Console(record=True, width=400)
    shown.print(sup.banner(lines))  # what `atrelay run` prints (workers/cli/main.py: run)
    return shown.export_text()


def test_the_banner_says_shadow_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    shadow = _banner(monkeypatch, ATRELAY_MODE="shadow")
    assert ("Mode:     SHADOW: nothing is written to Autotask; each write atrelay would make is recorded "
            "(`atrelay shadow report`, /ops/shadow)") in shadow, shadow
    live = _banner(monkeypatch, ATRELAY_MODE="live")
    assert "Mode:     live " in live and "SHADOW" not in live, live

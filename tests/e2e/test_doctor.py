"""`atrelay doctor` and `atrelay rules` against the Autotask and TimeZest sandboxes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from connectors.autotask.client import AutotaskClient
from connectors.autotask.webhooks import install_webhooks
from pipelines import store
from pipelines.gate import TIMEZEST_PSA
from pipelines.rules import TIMEZEST_CASES
from pipelines.schema import upgrade
from sandboxes.autotask.data import SANDBOX_RESOURCES
from sandboxes.autotask.state import SandboxState
from sandboxes.timezest.app import TimezestSandboxState
from tests.conftest import autotask_env
from tests.e2e.test_cli import atrelay
from tests.support import MC_SECRET, WEBFORM_SECRET
from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS, SANDBOX_TIMEZEST_API_KEY


def _env(tmp: Path, at_url: str, tz_url: str, **extra: str) -> dict[str, str]:
    db = f"sqlite:///{tmp / 'doctor.db'}"
    upgrade(db)
    return {**autotask_env(at_url), "ATRELAY_DATABASE_URL": db, "ATRELAY_TIMEZEST_API_KEY": SANDBOX_TIMEZEST_API_KEY,
            "ATRELAY_TIMEZEST_BASE_URL": f"{tz_url}/v1", "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET,
            "ATRELAY_MC_WEBHOOK_SECRET": MC_SECRET, **extra}


def _install_webhooks(at_url: str) -> None:
    """A healthy deployment has atrelay's Autotask webhooks registered (doctor checks them)."""
    c = SANDBOX_AUTOTASK_CREDENTIALS
    with AutotaskClient(username=c["username"], secret=c["secret"], integration_code=c["integration_code"],
                        zone_url=f"{at_url}/atservicesrest/v1.0/zoneInformation") as client:
        install_webhooks(client, base_url="http://127.0.0.1:9", secret="doctor-test-hook-secret",
                         exclude_resource_id=None)


def test_doctor_healthy(tmp_path: Path, autotask: tuple[str, SandboxState],
                        timezest: tuple[str, TimezestSandboxState]) -> None:
    _install_webhooks(autotask[0])
    out = atrelay(tmp_path, "doctor", **_env(tmp_path, autotask[0], timezest[0]))
    assert out.returncode == 0, out.stdout + out.stderr
    for needle in ("ok      database", "ok      broker", "autotask: credentials accepted", "timezest: API key accepted",
                   "Received Form Response", "29682844", "0 problem(s)"):
        assert needle in out.stdout, needle


def test_doctor_names_a_status_the_tenant_lacks(tmp_path: Path, autotask: tuple[str, SandboxState],
                                                timezest: tuple[str, TimezestSandboxState]) -> None:
    _install_webhooks(autotask[0])
    rules = tmp_path / "rules.toml"
    rules.write_text('[events."mc.escalated"]\nstatus = "Escalated by MC"\n')
    out = atrelay(tmp_path, "doctor", **_env(tmp_path, autotask[0], timezest[0], ATRELAY_RULES_FILE=str(rules)))
    assert out.returncode == 1
    problems = [line for line in out.stderr.splitlines() if line.startswith("problem")]
    assert len(problems) == 1, out.stderr
    assert "'Escalated by MC'" in problems[0] and "mc.escalated" in problems[0]
    for label in ("'Sent from MC'", "'Waiting Customer'", "'Scheduling Link Sent'"):
        assert label in problems[0]  # the statuses that do exist
    assert "MISSING" in out.stdout


def test_doctor_reports_each_problem_on_one_line(tmp_path: Path) -> None:
    out = atrelay(tmp_path, "doctor", ATRELAY_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}",
                  ATRELAY_TIMEZEST_API_KEY="bad", ATRELAY_TIMEZEST_BASE_URL="http://127.0.0.1:9/v1")
    assert out.returncode == 1
    problems = [line for line in out.stderr.splitlines() if line.startswith("problem")]
    assert any("atrelay migrate" in p for p in problems)
    assert any(p.startswith("problem autotask: not configured") for p in problems)
    assert any(p.startswith("problem timezest:") for p in problems)
    # Embedded mode (no broker configured): generated development webhook secrets are expected there.
    assert not any(p.startswith("problem webhooks:") for p in problems)


def test_rules_prints_the_effective_table(tmp_path: Path, autotask: tuple[str, SandboxState]) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[events."timezest.cancelled"]\nstatus = "Follow Up Needed:Resource"\n')
    out = atrelay(tmp_path, "rules", **autotask_env(autotask[0]), ATRELAY_RULES_FILE=str(rules))
    assert out.returncode == 0, out.stderr
    for needle in ("timezest.cancelled", "Follow Up Needed:Resource", "29682834", "mc.no_contact.follow_up",
                   "Waiting Customer"):
        assert needle in out.stdout


def test_doctor_names_an_unreachable_autotask_by_host_and_error(tmp_path: Path, autotask: tuple[str, SandboxState],
                                                                timezest: tuple[str, TimezestSandboxState]) -> None:
    env = _env(tmp_path, autotask[0], timezest[0], ATRELAY_AUTOTASK_BASE_URL="http://127.0.0.9:9/ATServicesRest")
    out = atrelay(tmp_path, "doctor", **env)
    assert out.returncode == 1
    (line,) = [p for p in out.stderr.splitlines() if p.startswith("problem autotask: ")]
    assert "cannot reach Autotask" in line and "127.0.0.9" in line and "ConnectError" in line, line


def test_doctor_names_timezest_s_resource_to_set_when_the_setting_is_wrong(
        tmp_path: Path, autotask: tuple[str, SandboxState], timezest: tuple[str, TimezestSandboxState]) -> None:
    """ATRELAY_TIMEZEST_RESOURCE_ID set to the technician: a problem naming the value to set (TimeZest's API
    user, found by name); set right (the sandbox tenant's default), an ok line."""
    _install_webhooks(autotask[0])
    tz, tech = SANDBOX_RESOURCES["timezest"], SANDBOX_RESOURCES["technician"]
    out = atrelay(tmp_path, "doctor", **_env(tmp_path, autotask[0], timezest[0],
                                             ATRELAY_TIMEZEST_RESOURCE_ID=str(tech)))
    assert out.returncode == 1, out.stdout + out.stderr
    (line,) = [p for p in out.stderr.splitlines() if p.startswith("problem timezest resource:")]
    assert f"ATRELAY_TIMEZEST_RESOURCE_ID={tech} is #{tech} (Taylor Tech)" in line, line
    assert line.endswith(f"set ATRELAY_TIMEZEST_RESOURCE_ID={tz}"), line
    ok = atrelay(tmp_path, "doctor", **_env(tmp_path, autotask[0], timezest[0]))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert f"timezest resource: TimeZest's resource: ATRELAY_TIMEZEST_RESOURCE_ID={tz}" in ok.stdout
    assert "timezest resource" not in ok.stderr
    assert "timezest psa actions: TimeZest's resource not seen writing to a ticket yet" in ok.stdout
    env = _env(tmp_path, autotask[0], timezest[0])
    store.saw_partner(env["ATRELAY_DATABASE_URL"], TIMEZEST_PSA, at=datetime(2026, 12, 3, 9, 30, tzinfo=UTC),
                      ticket_id=50002)
    seen = atrelay(tmp_path, "doctor", **env)
    assert ("timezest psa actions: TimeZest's resource last seen writing to ticket #50002 at 2026-12-03 09:30 UTC"
            in seen.stdout), seen.stdout


def test_autotask_resources_lists_atrelay_s_api_user_and_timezest_s(tmp_path: Path,
                                                                    autotask: tuple[str, SandboxState]) -> None:
    out = atrelay(tmp_path, "autotask", "resources", **autotask_env(autotask[0]))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    (own,) = [line for line in lines if str(SANDBOX_RESOURCES["atrelay"]) in line]
    assert "atrelay's API user" in own and SANDBOX_AUTOTASK_CREDENTIALS["username"] in own, own
    tz = SANDBOX_RESOURCES["timezest"]
    (theirs,) = [line for line in lines if line.lstrip("│ ").startswith(str(tz))]
    assert "TimeZest Integration" in theirs and f"TimeZest: ATRELAY_TIMEZEST_RESOURCE_ID={tz}" in theirs, theirs
    assert "Taylor Tech" not in out.stdout  # a technician is no API user: listed only with --all
    assert f"ok: TimeZest's resource: ATRELAY_TIMEZEST_RESOURCE_ID={tz}" in out.stdout


def test_rules_prints_the_three_timezest_cases(tmp_path: Path, autotask: tuple[str, SandboxState]) -> None:
    """`atrelay rules`: per TimeZest event, what atrelay does when TimeZest set the status, another, or none;
    the cancellation's status in force ("" in the rules file: left as it is)."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[events."timezest.cancelled"]\nstatus = ""\n')
    out = atrelay(tmp_path, "rules", **autotask_env(autotask[0]), ATRELAY_RULES_FILE=str(rules))
    assert out.returncode == 0, out.stderr
    assert "TimeZest events: verify and repair, never repeat" in out.stdout
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in out.stdout.splitlines() if line.startswith("│ timezest.")}
    assert set(rows) == {etype.value for etype in TIMEZEST_CASES}, rows
    for etype, cases in TIMEZEST_CASES.items():
        assert rows[etype.value][1:] == list(cases), rows[etype.value]
    assert rows["timezest.cancelled"][0] == "(leave as it is)"
    assert rows["timezest.link_sent"][0] == "Scheduling Link Sent"

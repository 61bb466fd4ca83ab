"""`atrelay doctor` and `atrelay rules` against the Autotask and TimeZest sandboxes."""

from __future__ import annotations

from pathlib import Path

from connectors.autotask.client import AutotaskClient
from connectors.autotask.webhooks import install_webhooks
from pipelines.schema import upgrade
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

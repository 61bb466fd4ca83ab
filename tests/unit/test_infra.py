"""infra/: the compose file parses and every atrelay service runs a real `atrelay` subcommand."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer
import yaml

from tests.support import ROOT
from workers.cli.main import app

INFRA = ROOT / "infra"


def _commands() -> dict[str, set[str]]:
    """Top-level command names, and the sub-commands of each group."""
    click_app = typer.main.get_command(app)
    out: dict[str, set[str]] = {}
    for name, cmd in click_app.commands.items():  # type: ignore[attr-defined]
        out[name] = set(getattr(cmd, "commands", {}) or {})
    return out


def _is_real(argv: list[str]) -> bool:
    commands = _commands()
    if not argv or argv[0] not in commands:
        return False
    subs = commands[argv[0]]
    return not subs or (len(argv) > 1 and argv[1] in subs) or argv[0] == "events"


def test_compose_parses_and_runs_real_subcommands() -> None:
    doc = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = doc["services"]
    assert {"redis", "postgres", "ingress-1", "ingress-2", "worker", "beat", "flower"} <= set(services)
    ours = {n: s for n, s in services.items() if s.get("image") == "atrelay:latest"}
    assert set(ours) == {"migrate", "ingress-1", "ingress-2", "worker", "beat"}
    for name, service in ours.items():
        assert _is_real(service["command"]), f"{name}: {service['command']} is not an atrelay subcommand"
        assert service["environment"]["ATRELAY_BROKER_URL"].startswith("redis://")
        assert service["environment"]["ATRELAY_DATABASE_URL"].startswith("postgresql")


def test_dockerfile_entrypoint_is_atrelay() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["atrelay"]' in text and "constraints.txt" in text


def test_systemd_units_run_real_subcommands() -> None:
    units = sorted((INFRA / "systemd").glob("*.service"))
    assert {u.name for u in units} == {"atrelay-ingress.service", "atrelay-worker@.service", "atrelay-beat.service"}
    for unit in units:
        for line in unit.read_text().splitlines():
            if line.startswith(("ExecStart=", "ExecStartPre=")):
                argv = shlex.split(line.split("=", 1)[1])
                assert argv[0].endswith("/atrelay"), line
                assert _is_real(argv[1:]), f"{unit.name}: {line}"


def test_env_example_names_every_setting() -> None:
    from workers.settings import Settings

    text = (INFRA / "env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        var = f"ATRELAY_{name.upper()}"
        assert var in text, f"{var} missing from infra/env.example"
        assert f"| `{var}` |" in readme, f"{var} missing from the README's configuration table"
    assert Path(INFRA / "compose.yaml").exists()

"""docs/deploy.md works as written (issue 22): every `atrelay` command it names exists (`atrelay ... --help`
exits 0) and is run by a test named here; the README links it; no document cites a file outside the
repository."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from tests.support import ROOT
from workers.cli.main import app

DOC = ROOT / "docs" / "deploy.md"

#: Every `atrelay` command the guide names, and the test that runs it (path::function). A command added to
#: the guide without a test that runs it fails `test_every_command_in_the_guide_is_run_by_a_test`.
SYSTEMD = "tests/e2e/test_systemd_recipe.py::test_install_script_then_the_units_relay_an_event"
EXERCISED = {
    "doctor": SYSTEMD,
    "migrate": SYSTEMD,  # the ingress unit's ExecStartPre
    "ingress": SYSTEMD,
    "worker": SYSTEMD,
    "send": SYSTEMD,
    "autotask webhooks install": SYSTEMD,
    "autotask webhooks status": SYSTEMD,
    "autotask resources": "tests/e2e/test_first_day_run.py::test_make_run_is_quiet_serves_other_terminals_and_restarts_at_once",
    "run": "tests/e2e/test_first_day_run.py::test_make_run_is_quiet_serves_other_terminals_and_restarts_at_once",
    "secret new": "tests/unit/test_first_day.py::test_secret_new_prints_what_the_settings_accept",
    "shadow report": "tests/e2e/test_shadow_e2e.py::test_a_shadow_week_then_live",
    "rules": "tests/e2e/test_doctor.py::test_rules_prints_the_effective_table",
    "events": "tests/e2e/test_cli.py::test_run_send_events_with_no_configuration",
    "audit prune": "tests/unit/test_first_day.py::test_backup_commands_prune_and_verify",
    "audit verify": "tests/unit/test_first_day.py::test_backup_commands_prune_and_verify",
}

_BLOCK = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_SPAN = re.compile(r"`([^`\n]+)`")
# `atrelay` then its command words; a word ends at a space or the end (so `samples/x.json` is no word), and
# options, ids and placeholders (`--url`, `1`, `ID`, `...`) end the command.
_COMMAND = re.compile(r"(?<![\w/.-])atrelay((?: +[a-z][a-z0-9-]*(?=\s|$))*)")


def commands(markdown: str) -> set[str]:
    """The `atrelay` commands a document names, in code blocks (comments left out) and code spans."""
    chunks = [line.split("#", 1)[0] for block in _BLOCK.findall(markdown) for line in block.splitlines()]
    chunks += _SPAN.findall(_BLOCK.sub("", markdown))
    found = set()
    for chunk in chunks:
        for match in _COMMAND.finditer(chunk):
            if match.group(1).split():
                found.add(" ".join(match.group(1).split()))
    return found


def _help_exits_0(command: str) -> bool:
    return CliRunner().invoke(app, [*command.split(), "--help"]).exit_code == 0


def test_commands_are_read_from_code_only() -> None:
    text = ("Run `sudo atrelay autotask webhooks install --url https://x` and `atrelay send samples/a.json`.\n"
            "The `atrelay` user; atrelay-ingress; /usr/local/bin/atrelay runs.\n"
            "```sh\nsudo atrelay events show 1   # atrelay nothing\natrelay audit prune --older-than-days 9\n```\n")
    assert commands(text) == {"autotask webhooks install", "send", "events show", "audit prune"}


def test_every_command_in_the_guide_exists() -> None:
    named = commands(DOC.read_text())
    assert {"autotask resources", "secret new", "shadow report", "autotask webhooks install"} <= named, named
    missing = sorted(c for c in named if not _help_exits_0(c))
    assert missing == [], f"docs/deploy.md names commands that do not exist: {missing}"
    assert not _help_exits_0("shadow go-live")  # the check can fail


def test_every_command_in_the_guide_is_run_by_a_test() -> None:
    named = commands(DOC.read_text())
    unexercised = sorted(named - EXERCISED.keys())
    assert unexercised == [], f"commands in docs/deploy.md that no test runs (add one to EXERCISED): {unexercised}"
    for command, node in EXERCISED.items():
        path, function = node.split("::")
        assert f"def {function}(" in (ROOT / path).read_text(), f"{command}: {node} does not exist"


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "infra").rglob("*")),
            *sorted((ROOT / "tests").rglob("README.md"))]


def test_the_readme_links_the_guide_and_no_document_cites_outside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "](docs/deploy.md)" in readme
    outside = re.compile(r"\.\./shared|/work/shared|shared/reference|shared/DESIGN|\bfacts §|partner facts|"
                         r"facts open item|partner-facts\.md|autotask-rest-facts")
    cited = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in _documents() if p.is_file()
             for m in outside.finditer(p.read_text(errors="replace"))]
    assert cited == []

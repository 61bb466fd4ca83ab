"""docs/deploy.md works as written (issue 22): every `atrelay` command it names exists (`atrelay ... --help`
exits 0) and is run by a test named here; the README links it; no document cites a file outside the
repository."""

from __future__ import annotations

import re
import subprocess
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


#: A citation of a document that is not in the repository: the shared design and reference files by path
#: or by name ("DESIGN.md step 4", "facts §8", "the reference facts (§8)", "partner facts §2.2", "item 4
#: of the facts"). Plain words ("the facts every screen shows", an alert's ``facts``) are not.
OUTSIDE = re.compile(
    r"\.\./shared|/work/shared|shared/reference|shared/DESIGN|\bDESIGN\.md|\bfacts\W{0,3}§|partner[ -]facts|"
    r"reference facts|facts open item|\bitem \d+ of the facts|facts leave open|"
    r"partner-facts\.md|autotask-rest-facts", re.I)


def _documents() -> list[Path]:
    """README.md, docs/**, infra/** and every tracked source file, this one excepted (it names the patterns)."""
    tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.html", "*.sh", "*.toml"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    assert "workers/cli/main.py" in tracked, tracked[:5]
    found = {ROOT / "README.md", *(ROOT / "docs").rglob("*"), *(ROOT / "infra").rglob("*"),
             *(ROOT / name for name in tracked)}
    return sorted(p for p in found if p.is_file() and p != Path(__file__).resolve())


def test_the_citation_check_knows_a_citation_from_a_word() -> None:
    cited = ["The write gate (DESIGN.md step 4)", "see ../shared/DESIGN.md", "quoted from facts §8",
             "written from the reference facts (§8)", "as partner facts §2.2 says", "per partner-facts.md §1",
             "facts open item 5", "open item 4 of the facts", "The facts leave open whether", "autotask-rest-facts.md",
             "written here, from the facts (§8)"]
    plain = ["The facts every screen shows", "facts=[(label, value)]", "design notes in docs/architecture.md",
             "Deactivation notices are claims, not facts", "§ 3 of RFC 9110", "an open item 5 on the list"]
    assert [c for c in cited if not OUTSIDE.search(c)] == []
    assert [w for w in plain if OUTSIDE.search(w)] == []


def test_the_readme_links_the_guide_and_no_file_cites_outside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "](docs/deploy.md)" in readme
    documents = _documents()
    assert {ROOT / "README.md", ROOT / "docs" / "deploy.md", ROOT / "pipelines" / "gate.py",
            ROOT / "workers" / "http" / "templates" / "base.html", ROOT / "pyproject.toml"} <= set(documents)
    cited = [f"{p.relative_to(ROOT)}:{n}: {m.group(0)}" for p in documents
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1)
             for m in OUTSIDE.finditer(line)]
    assert cited == [], "files cite documents outside the repository:\n" + "\n".join(cited)

"""ATRELAY_NOTIFY_URLS is checked against the installed apprise at start-up and by doctor (issue 19.6).

Before, an URL apprise lacks (``msteams://``, which the README suggested) was accepted, and every alert
then went nowhere while it was marked sent.
"""

from __future__ import annotations

import re

import pytest

from tests.support import ROOT
from workers.cli.doctor import Report, _alerts
from workers.notify_urls import supported_schemes
from workers.settings import SettingsError, load_settings

SECRETISH = "T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


def test_an_unknown_scheme_stops_start_up_naming_what_apprise_supports() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(notify_urls=f"msteams://{SECRETISH}")
    message = str(caught.value)
    assert message.startswith("configuration error: ATRELAY_NOTIFY_URLS: URL 1: the installed apprise has no msteams://")
    assert "workflows" in message and "slack" in message and "json" in message
    assert SECRETISH not in message  # the URL carries a webhook token: never echoed


@pytest.mark.parametrize("value", ["nonsense", "json://", f"slack://{SECRETISH} msteams://x/y"])
def test_an_url_apprise_cannot_use_stops_start_up(value: str) -> None:
    with pytest.raises(SettingsError, match="ATRELAY_NOTIFY_URLS: URL"):
        load_settings(notify_urls=value)


def test_usable_urls_pass() -> None:
    value = f"slack://{SECRETISH}/#alerts json://alerts.example.com/atrelay mailto://user:pw@example.com"
    assert load_settings(notify_urls=value).notify_urls == value


def test_the_readme_suggests_only_schemes_apprise_supports() -> None:
    row = next(line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `ATRELAY_NOTIFY_URLS`"))
    suggested = set(re.findall(r"`([a-z0-9]+)://", row))
    assert suggested >= {"slack", "json"} and not suggested - set(supported_schemes()), suggested


def test_doctor_names_the_problem_and_what_it_accepts() -> None:
    settings = load_settings(notify_urls=f"slack://{SECRETISH} json://alerts.example.com/x")
    report = Report()
    _alerts(settings, report)
    assert report.problems == [] and report.ok == ["alerts: 2 URL(s) apprise accepts (json, slack)"]
    broken = settings.model_copy(update={"notify_urls": "msteams://a/b/c"})  # as if set after start-up
    report = Report()
    _alerts(broken, report)
    assert len(report.problems) == 1 and report.problems[0].startswith("alerts: URL 1: the installed apprise has no msteams")

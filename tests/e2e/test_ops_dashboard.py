"""The ops dashboard in a real browser (Debian's headless Chromium): sign in, filter, replay by click."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectors.autotask.sandbox import SandboxState
from connectors.common.sandbox_server import ThreadedServer
from tests.stacks import Stack, start_stack
from tests.support import ROOT, wait_for

TOKEN = "ops-test-token-5b1f0c9e"
OUTPUT = ROOT / "test-output"


def _browser() -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium/chromedriver missing (scripts/install-browser installs them)")
        pytest.skip("chromium/chromedriver missing: run scripts/install-browser")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1366,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@pytest.fixture
def ops_stack(tmp_path: Path, autotask_server: tuple[ThreadedServer, SandboxState]) -> Iterator[Stack]:
    server, state = autotask_server
    stack = start_stack(tmp_path, mode="embedded", sandbox_server=server, sandbox=state,
                        env_extra={"ATRELAY_ADMIN_TOKEN": TOKEN})
    yield stack
    stack.stop()
    state.reset()


def _form(ticket: str) -> bytes:
    return json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
                       "data": {"form": "new-user", "ticket_number": ticket, "answers": {"q": "a"}}}).encode()


def test_dashboard_filter_and_replay_by_click(ops_stack: Stack) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    stack = ops_stack
    good = stack.post("/webhooks/webform", _form("T20261126.0001")).json()["id"]
    lost = stack.post("/webhooks/webform", _form("T20261126.0777")).json()["id"]
    assert stack.final(good).state == "applied" and stack.final(lost).state == "dead"
    assert httpx.get(f"{stack.ingress_url}/ops").status_code == 401  # closed without the token

    browser = _browser()
    try:
        browser.get(f"{stack.ingress_url}/ops")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.ID, "signin").click()
        wait_for(lambda: browser.find_elements(By.ID, "events-table"), what="the dashboard")
        rows = browser.find_elements(By.CSS_SELECTOR, "#events-table .event-row")
        assert len(rows) == 2
        assert "Autotask quota" in browser.page_source and "Connector health" in browser.page_source

        Select(browser.find_element(By.ID, "f-state")).select_by_value("dead")
        browser.find_element(By.ID, "f-apply").click()
        wait_for(lambda: "state=dead" in browser.current_url, what="the filter")
        rows = browser.find_elements(By.CSS_SELECTOR, "#events-table .event-row")
        assert len(rows) == 1 and f"#{lost}" in rows[0].text and "ticket-not-found" in rows[0].text

        # The ticket now exists (it was created late in Autotask): replay the dead letter by clicking.
        stack.sandbox.tickets[50777] = {**stack.sandbox.tickets[50001], "id": 50777,
                                        "ticketNumber": "T20261126.0777", "status": 1}
        browser.find_element(By.ID, f"replay-{lost}").click()
        wait_for(lambda: f"/ops/events/{lost}" in browser.current_url, what="the event page")
        assert "queued again" in browser.find_element(By.ID, "flash").text

        def applied() -> bool:
            browser.refresh()
            return bool(browser.find_element(By.ID, "event-state").text == "applied")

        wait_for(applied, timeout=60, what="the replayed event to be applied")
        assert "Received Form Response" in browser.page_source
        OUTPUT.mkdir(exist_ok=True)
        browser.get(f"{stack.ingress_url}/ops")
        path = OUTPUT / "ops-dashboard.png"
        assert browser.save_screenshot(str(path))
        assert path.stat().st_size > 10_000
    finally:
        browser.quit()  # type: ignore[attr-defined]
    assert stack.sandbox.tickets[50777]["status"] == 29682844

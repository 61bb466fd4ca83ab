"""The ops dashboard in a real browser (Debian's headless Chromium): sign in, filter, replay by click."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.stacks import Stack, start_stack
from tests.support import ROOT, WEBFORM_SECRET, Proc, signed, wait_for

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

        # Replay cannot help while the ticket does not exist: the dashboard says so instead of offering it.
        assert not browser.find_elements(By.ID, f"replay-{lost}")
        assert browser.find_elements(By.ID, f"no-replay-{lost}")
        # The ticket now exists (it was created late in Autotask) and another event has reached it:
        # now a replay can help, and the dead letter is replayed by clicking.
        stack.sandbox.tickets[50777] = {**stack.sandbox.tickets[50001], "id": 50777,
                                        "ticketNumber": "T20261126.0777", "status": 1}
        later = stack.post("/webhooks/webform", _form("T20261126.0777")).json()["id"]
        assert stack.final(later).state == "applied"
        browser.refresh()
        browser.find_element(By.ID, f"replay-{lost}").click()
        wait_for(lambda: f"/ops/events/{lost}" in browser.current_url, what="the event page")
        assert "queued again" in browser.find_element(By.ID, "flash").text

        def finished() -> bool:
            browser.refresh()
            # Older than the event that reached the new ticket first: skipped as stale, with its note.
            return bool(browser.find_element(By.ID, "event-state").text in ("applied", "skipped"))

        wait_for(finished, timeout=60, what="the replayed event to finish")
        assert "Received Form Response" in browser.page_source
        OUTPUT.mkdir(exist_ok=True)
        browser.get(f"{stack.ingress_url}/ops")
        path = OUTPUT / "ops-dashboard.png"
        assert browser.save_screenshot(str(path))
        assert path.stat().st_size > 10_000
    finally:
        browser.quit()  # type: ignore[attr-defined]
    assert stack.sandbox.tickets[50777]["status"] == 29682844


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def atrelay_run(tmp_path: Path) -> Iterator[tuple[str, str, Proc]]:
    """`atrelay run` as a new user starts it (no admin token set); yields its URL, banner and process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env.update({"ATRELAY_VAR_DIR": str(tmp_path / "var"), "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET,
                "PYTHONUNBUFFERED": "1"})
    port, at_port, tz_port = _free_port(), _free_port(), _free_port()
    proc = Proc("atrelay-run", ["run", "--port", str(port), "--autotask-sandbox-port", str(at_port),
                                "--timezest-sandbox-port", str(tz_port)], env, tmp_path)
    try:
        proc.wait_log("atrelay is running", timeout=120)
        time.sleep(0.5)  # the rest of the banner
        yield f"http://127.0.0.1:{port}", proc.log(), proc
    finally:
        proc.stop()


def test_sign_in_with_the_banner_token_and_csrf_on_replay(atrelay_run: tuple[str, str, Proc]) -> None:
    """The token exactly as `atrelay run` prints it signs in; Replay needs the form's CSRF token."""
    from selenium.webdriver.common.by import By

    url, banner, _ = atrelay_run
    lines = banner.splitlines()
    at = next(i for i, line in enumerate(lines) if "sign in with this token" in line)
    shown = lines[at + 1].strip().strip("│").strip()  # the next line of the panel, as a user copies it
    assert len(shown) >= 20 and " " not in shown, shown

    lost = _form("T20261126.0777")  # no such ticket in the sandbox: a dead letter
    response = httpx.post(f"{url}/webhooks/webform", content=lost, headers=signed(lost, WEBFORM_SECRET))
    event_id = response.json()["id"]
    wait_for(lambda: "ticket-not-found" in httpx.get(f"{url}/ops/events/{event_id}",
                                                     headers={"Authorization": f"Bearer {shown}"}).text,
             timeout=60, what="the dead letter")
    # The ticket is created in Autotask afterwards and another event reaches it: replay can help now,
    # so the event page offers it (with its CSRF token).
    sandbox = re.search(r"(http://127\.0\.0\.1:\d+)/_sandbox/tickets/", banner)
    assert sandbox is not None, banner
    httpx.post(f"{sandbox.group(1)}/_sandbox/tickets", json={"ticketNumber": "T20261126.0777"}).raise_for_status()
    later = httpx.post(f"{url}/webhooks/webform", content=lost, headers=signed(lost, WEBFORM_SECRET)).json()["id"]
    wait_for(lambda: "applied" in httpx.get(f"{url}/ops/events/{later}",
                                            headers={"Authorization": f"Bearer {shown}"}).text,
             timeout=60, what="a later event to reach the new ticket")

    browser = _browser()
    try:
        browser.get(f"{url}/ops")
        browser.find_element(By.ID, "token").send_keys(shown)
        browser.find_element(By.ID, "signin").click()
        wait_for(lambda: browser.find_elements(By.ID, "events-table"), what="the dashboard")
        browser.get(f"{url}/ops/events/{event_id}")
        csrf = browser.find_element(By.CSS_SELECTOR, "form[action$='/replay'] input[name=csrf]").get_attribute("value")
        assert csrf and len(csrf) >= 32
        cookie = {c["name"]: c["value"] for c in browser.get_cookies()}["atrelay_ops"]  # type: ignore[attr-defined]

        # A page on another port of the same host posting with the admin's cookie: refused.
        forged = httpx.post(f"{url}/ops/events/{event_id}/replay", cookies={"atrelay_ops": cookie},
                            headers={"Origin": "http://127.0.0.1:9999"}, data={"csrf": csrf})
        assert forged.status_code == 403
        no_token = httpx.post(f"{url}/ops/events/{event_id}/replay", cookies={"atrelay_ops": cookie}, data={})
        assert no_token.status_code == 403

        browser.find_element(By.ID, "replay").click()
        wait_for(lambda: browser.find_elements(By.ID, "flash"), what="the replay message")
        assert "queued again" in browser.find_element(By.ID, "flash").text

        # Sign out ends the session: the same cookie no longer opens the dashboard.
        browser.find_element(By.ID, "signout").click()
        wait_for(lambda: browser.find_elements(By.ID, "token"), what="the sign-in page")
        assert httpx.get(f"{url}/ops", cookies={"atrelay_ops": cookie}).status_code == 401
    finally:
        browser.quit()  # type: ignore[attr-defined]

"""The bundled sandboxes keep their state in var/ across a restart and never hand out an id twice.

Issue 13 ("the first hour"): the audit DB remembered what the sandboxes forgot on restart, and the
TimeZest sandbox began again at ``sreq_SBX000001``. Each test runs the real `atrelay sandbox ...`
process (what `atrelay run` starts) with its own var folder, changes state over HTTP, stops it with
SIGTERM (what `atrelay run` sends), starts it again and reads the state back.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import httpx

from sandboxes.autotask.data import SANDBOX_AUTOTASK_CREDENTIALS
from sandboxes.timezest.data import SANDBOX_TIMEZEST_API_KEY
from tests.support import Proc

API = "/atservicesrest/v1.0"
AUTH = {"ApiIntegrationCode": SANDBOX_AUTOTASK_CREDENTIALS["integration_code"],
        "UserName": SANDBOX_AUTOTASK_CREDENTIALS["username"], "Secret": SANDBOX_AUTOTASK_CREDENTIALS["secret"]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(var: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env["ATRELAY_VAR_DIR"] = str(var)
    return env


def _start(kind: str, var: Path, port: int, run: int, *extra: str) -> Proc:
    proc = Proc(f"{kind}-sandbox-{run}", ["sandbox", kind, "--port", str(port), *extra], _env(var), var)
    proc.wait_http(f"http://127.0.0.1:{port}/_sandbox/calls")
    return proc


def _ok(response: httpx.Response) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_autotask_sandbox_state_and_ids_survive_a_restart(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    first = _start("autotask", tmp_path, port, 1)
    try:
        _ok(httpx.post(f"{url}/_sandbox/tickets/50001/status", json={"status": "In Progress", "as": "technician"}))
        note = _ok(httpx.post(f"{url}/_sandbox/tickets/50001/notes", json={"title": "t", "description": "kept"}))
        ticket = _ok(httpx.post(f"{url}/_sandbox/tickets", json={"title": "made before the restart"}))
        hook_id = _ok(httpx.post(f"{url}{API}/TicketWebhooks", headers=AUTH, json={
            "name": "atrelay", "webhookUrl": "http://127.0.0.1:9/hook", "deactivationUrl": "http://127.0.0.1:9/off",
            "secretKey": "s3cret", "isSubscribedToUpdateEvents": True}))["itemId"]
        field_id = _ok(httpx.post(f"{url}{API}/TicketWebhooks/{hook_id}/Fields", headers=AUTH,
                                  json={"fieldID": 72014, "isSubscribedField": True}))["itemId"]
    finally:
        first.stop()
    saved = tmp_path / "sandbox-autotask.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600  # it holds the webhook secret

    second = _start("autotask", tmp_path, port, 2)
    try:
        assert "restored sandbox state" in second.log()
        shown = _ok(httpx.get(f"{url}/_sandbox/tickets/50001"))
        assert shown["ticket"]["statusLabel"] == "In Progress"
        assert [n["id"] for n in shown["notes"]] == [note["id"]]
        assert [h["to"] for h in shown["history"]] == [8]
        assert _ok(httpx.get(f"{url}/_sandbox/tickets/{ticket['id']}"))["ticket"]["title"] == "made before the restart"
        hook = _ok(httpx.get(f"{url}{API}/TicketWebhooks/{hook_id}", headers=AUTH))["item"]
        assert hook["secretKey"] == "s3cret" and hook["isReady"] is True
        fields = _ok(httpx.get(f"{url}{API}/TicketWebhooks/{hook_id}/Fields", headers=AUTH))["items"]
        assert [f["id"] for f in fields] == [field_id]
        # Ids continue: nothing made after the restart reuses one made before it.
        assert _ok(httpx.post(f"{url}/_sandbox/tickets", json={"title": "after"}))["id"] == ticket["id"] + 1
        again = _ok(httpx.post(f"{url}/_sandbox/tickets/50002/notes", json={"title": "t", "description": "new"}))
        assert again["id"] == note["id"] + 1
        other = _ok(httpx.post(f"{url}{API}/TicketNoteWebhooks", headers=AUTH, json={
            "webhookUrl": "http://127.0.0.1:9/n", "deactivationUrl": "http://127.0.0.1:9/off"}))["itemId"]
        assert other == hook_id + 1
    finally:
        second.stop()


def test_a_corrupt_autotask_state_file_is_moved_aside_and_start_up_goes_on(tmp_path: Path) -> None:
    (tmp_path / "sandbox-autotask.json").write_text('{"version": 1, "tickets": [')
    port = _free_port()
    proc = _start("autotask", tmp_path, port, 1)
    try:
        assert _ok(httpx.get(f"http://127.0.0.1:{port}/_sandbox/tickets/50001"))["ticket"]["status"] == 1
        assert "moved to sandbox-autotask.json.corrupt-" in proc.log().replace("\n", "")
    finally:
        proc.stop()
    assert len(list(tmp_path.glob("sandbox-autotask.json.corrupt-*"))) == 1


def test_timezest_sandbox_requests_survive_a_restart_and_ids_are_never_reused(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    bearer = {"Authorization": f"Bearer {SANDBOX_TIMEZEST_API_KEY}"}
    first = _start("timezest", tmp_path, port, 1)
    try:
        made = [_ok(httpx.post(f"{url}/_sandbox/scheduling_requests", json={"ticket_id": 50001 + i}))["id"]
                for i in range(2)]
        _ok(httpx.post(f"{url}/_sandbox/scheduling_requests/{made[0]}/transition", json={"status": "scheduled"}))
    finally:
        first.stop()
    assert stat.S_IMODE((tmp_path / "sandbox-timezest.json").stat().st_mode) == 0o600

    second = _start("timezest", tmp_path, port, 2)
    try:
        listed = _ok(httpx.get(f"{url}/v1/scheduling_requests", headers=bearer))["data"]
        assert sorted(r["id"] for r in listed) == sorted(made)
        assert _ok(httpx.get(f"{url}/v1/scheduling_requests/{made[0]}", headers=bearer))["status"] == "scheduled"
        new = _ok(httpx.post(f"{url}/_sandbox/scheduling_requests", json={"ticket_id": 50003}))["id"]
        assert new not in made and new == "sreq_SBX000003"
    finally:
        second.stop()

    # --fresh starts from the seed data again, on purpose (with a fresh audit DB).
    third = _start("timezest", tmp_path, port, 3, "--fresh")
    try:
        assert _ok(httpx.get(f"{url}/v1/scheduling_requests", headers=bearer))["data"] == []
    finally:
        third.stop()

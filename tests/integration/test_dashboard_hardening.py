"""Dashboard hardening (issue 19.5), against real `atrelay ingress` processes on each audit database.

No page can be framed; X-Forwarded-For is believed only from ATRELAY_TRUSTED_PROXIES; sign-out and
expiry hold on every ingress process and across restarts (sessions are rows, not signed cookies).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from pipelines import store
from pipelines.db import session_scope
from tests.support import MC_SECRET, WEBFORM_SECRET, Proc
from workers.http import ops_throttle

ADMIN = "dashboard-hardening-admin-token-0123"
Start = Callable[..., tuple[str, Proc]]


@pytest.fixture
def start_ingress(tmp_path: Path, db_url: str) -> Iterator[Start]:
    procs: list[Proc] = []

    def start(**extra: str) -> tuple[str, Proc]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
        (tmp_path / "var").mkdir(exist_ok=True)
        env.update({"ATRELAY_VAR_DIR": str(tmp_path / "var"), "ATRELAY_DATABASE_URL": db_url,
                    "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET, "ATRELAY_MC_WEBHOOK_SECRET": MC_SECRET,
                    "ATRELAY_ADMIN_TOKEN": ADMIN,
                    "ATRELAY_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'var' / 'broker.db'}", **extra})
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = Proc(f"ingress-ops-{len(procs)}", ["ingress", "--port", str(port)], env, tmp_path)
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        proc.wait_http(f"{url}/healthz", timeout=60)
        return url, proc

    try:
        yield start
    finally:
        for proc in procs:
            proc.stop()


def _sign_in(url: str) -> str:
    answer = httpx.post(f"{url}/ops/login", data={"token": ADMIN}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.cookies["atrelay_ops"]


def _framable(response: httpx.Response) -> bool:
    csp = response.headers.get("content-security-policy", "")
    return response.headers.get("x-frame-options") != "DENY" or "frame-ancestors 'none'" not in csp


def test_a_server_error_cannot_be_framed_either(ops_client: TestClient) -> None:
    """An unhandled exception is answered 500 by Starlette's error middleware, which sits outside every
    app.add_middleware: the no-framing headers must be added outside it."""
    app = ops_client.app
    assert isinstance(app, FastAPI)

    async def broken() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/_test/broken", broken)
    answer = TestClient(app, raise_server_exceptions=False).get("/_test/broken")
    assert answer.status_code == 500 and not _framable(answer), answer.headers


def test_no_page_can_be_framed(start_ingress: Start, db_url: str) -> None:
    url, _ = start_ingress()
    event_id, _ = store.insert_event(db_url, store.NewEvent(source="webform", external_id="m-1",
                                                            event_type="form.submitted", body=b"{}", headers={}))
    cookie = {"atrelay_ops": _sign_in(url)}
    pages = [httpx.get(f"{url}/ops/login"), httpx.get(f"{url}/ops"), httpx.get(f"{url}/ops", cookies=cookie),
             httpx.get(f"{url}/ops/events/{event_id}", cookies=cookie),
             httpx.get(f"{url}/ops/events/999999", cookies=cookie), httpx.get(f"{url}/docs"),
             httpx.post(f"{url}/ops/login", data={"token": "wrong"}),
             httpx.post(f"{url}/ops/events/{event_id}/replay", cookies=cookie, data={})]
    assert [p.status_code for p in pages] == [401, 401, 200, 200, 404, 200, 401, 403]
    assert [p.request.url.path for p in pages if _framable(p)] == []
    # The docs page keeps its own policy, with frame-ancestors in it once.
    assert pages[5].headers["content-security-policy"].count("frame-ancestors") == 1


def test_forwarded_for_is_not_believed_from_an_untrusted_client(start_ingress: Start) -> None:
    """300 guesses with a new X-Forwarded-For each used to meet no limit at all."""
    url, _ = start_ingress()
    answers = _rotating_guesses(url, 24)
    # One address (the socket's): after the free attempts the guesses wait in one short line, and the
    # rest are told to come back later (how many got in line depends on how fast the line moved).
    assert answers.count(429) >= 8 and answers.count(401) >= ops_throttle.FREE, answers


def test_forwarded_for_is_believed_from_a_trusted_proxy(start_ingress: Start) -> None:
    url, _ = start_ingress(ATRELAY_TRUSTED_PROXIES="127.0.0.1")
    answers = _rotating_guesses(url, 24)
    assert answers == [401] * 24  # each names a client of its own, each within its free failures


def _rotating_guesses(url: str, n: int) -> list[int]:
    def guess(i: int) -> int:
        return httpx.post(f"{url}/ops/login", data={"token": f"guess-{i}"}, timeout=120,
                          headers={"X-Forwarded-For": f"198.51.100.{i + 1}"}).status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(guess, range(n)))


def test_sign_out_holds_on_every_ingress_process_and_across_restarts(start_ingress: Start) -> None:
    first, _ = start_ingress()
    second, second_proc = start_ingress()
    cookie = {"atrelay_ops": _sign_in(first)}
    assert httpx.get(f"{second}/ops", cookies=cookie).status_code == 200  # one session, every process
    second_proc.stop()
    second, _ = start_ingress()
    assert httpx.get(f"{second}/ops", cookies=cookie).status_code == 200  # a restart keeps it
    page = httpx.get(f"{first}/ops", cookies=cookie).text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    out = httpx.post(f"{first}/ops/logout", cookies=cookie, data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert httpx.get(f"{second}/ops", cookies=cookie).status_code == 401  # ended on the other process too
    assert httpx.get(f"{first}/ops", cookies=cookie).status_code == 401
    third, _ = start_ingress()
    assert httpx.get(f"{third}/ops", cookies=cookie).status_code == 401  # and after a restart


def test_a_session_expires_on_every_process(start_ingress: Start, db_url: str) -> None:
    url, _ = start_ingress()
    cookie = {"atrelay_ops": _sign_in(url)}
    from pipelines.audit import OpsSession  # migration 0012

    with session_scope(db_url) as s:  # the session's time is up
        s.execute(update(OpsSession).values(expires_at=datetime(2000, 1, 1, tzinfo=UTC)))
    other, _ = start_ingress()
    assert httpx.get(f"{other}/ops", cookies=cookie).status_code == 401
    assert httpx.get(f"{url}/ops", cookies=cookie).status_code == 401


def test_unknown_filter_values_are_400(start_ingress: Start) -> None:
    url, _ = start_ingress()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    for query in ({"state": "nope"}, {"source": "nope"}, {"state": "dead", "source": "x" * 300}):
        assert httpx.get(f"{url}/ops", params=query, headers=auth).status_code == 400
    assert httpx.get(f"{url}/ops", params={"state": "dead", "source": "webform"}, headers=auth).status_code == 200

"""A stopped worker is seen everywhere within a minute (issue 20), with real processes.

The worker is paused (SIGSTOP: alive to the kernel, doing nothing) on Redis + PostgreSQL and killed
(SIGKILL) in the embedded mode while events arrive. The dashboard's verdict, ``/readyz``, ``atrelay
doctor`` (non-zero) and a ``json://`` alert must all say that no worker is alive and how old the oldest
waiting event is, raised by the processes still alive (the ingress and the beat). Once the worker is back,
all clear again and every event applied. Short heartbeats keep the test fast; with the defaults
(10 s, 30 s timeout) the same path takes at most about 40 s.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.integration.test_alerts import Receiver
from tests.stacks import Stack, start_stack
from tests.support import ROOT, fresh_pg_database, wait_for

TOKEN = "a-dashboard-token-of-enough-length"
DETECT_WITHIN = 60.0  # seconds, as the issue asks with the defaults; here the thresholds are shorter


def fast(receiver: Receiver) -> dict[str, str]:
    return {"ATRELAY_HEARTBEAT_SECONDS": "0.5", "ATRELAY_HEARTBEAT_TIMEOUT_SECONDS": "3",
            "ATRELAY_STUCK_AFTER_SECONDS": "20", "ATRELAY_LEASE_SECONDS": "4", "ATRELAY_SWEEP_SECONDS": "1",
            "ATRELAY_ADMIN_TOKEN": TOKEN, "ATRELAY_NOTIFY_URLS": receiver.url, "ATRELAY_ALERT_DIGEST_SECONDS": "1"}


def form(ticket_id: int) -> bytes:
    return json.dumps({"type": "form.submitted", "timestamp": "2026-11-26T09:30:00Z",
                       "data": {"form": "new-user", "ticket_id": ticket_id, "answers": {"q": "a"}}}).encode()


def readyz(stack: Stack) -> tuple[int, dict[str, str]]:
    r = httpx.get(f"{stack.ingress_url}/readyz", timeout=10)
    return r.status_code, r.json().get("problems", {})


def dashboard(stack: Stack) -> str:
    return httpx.get(f"{stack.ingress_url}/ops", headers={"authorization": f"Bearer {TOKEN}"}, timeout=20).text


def doctor(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", "doctor"], env={**stack.env, "COLUMNS": "300"},
                          cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture(params=["redis+postgresql:SIGSTOP", "embedded:SIGKILL"])
def stopped(request: pytest.FixtureRequest, tmp_path: Path, receiver: Receiver,
            autotask_server: tuple[ThreadedServer, SandboxState]) -> Iterator[tuple[Stack, str]]:
    mode, how = request.param.split(":")
    server, state = autotask_server
    with contextlib.ExitStack() as cleanup:
        # Its own PostgreSQL database: another stack's live worker must not count as this one's.
        pg = cleanup.enter_context(fresh_pg_database("atrelay_live")) if mode != "embedded" else None
        stack = start_stack(tmp_path, mode=mode, sandbox_server=server, sandbox=state, pg_url=pg,
                            redis_url=request.getfixturevalue("redis_url") if pg else None,
                            env_extra=fast(receiver), beat=True)
        cleanup.callback(state.reset)
        cleanup.callback(stack.stop)
        yield stack, how


def test_a_stopped_worker_is_seen_everywhere_and_all_clear_once_it_is_back(
        stopped: tuple[Stack, str], receiver: Receiver) -> None:
    stack, how = stopped
    wait_for(lambda: readyz(stack)[0] == 200, timeout=60, what="the stack to be ready")
    (worker,) = [p for p in stack.procs if p.name.startswith("worker")]
    if how == "SIGSTOP":
        stack.pause(worker)
    else:
        stack.kill(worker)
    stopped_at = time.monotonic()
    try:
        ids = [stack.post("/webhooks/webform", form(t)).json()["id"] for t in (50001, 50002, 50004)]

        def said_everywhere() -> bool:
            code, problems = readyz(stack)
            alerted = [m for m in receiver.got if m["title"] == "No atrelay worker is alive"]
            return (code == 503 and problems.get("workers") == "no worker alive"
                    and "the oldest for" in problems.get("waiting", "") and bool(alerted))

        wait_for(said_everywhere, timeout=DETECT_WITHIN, what="readyz and an alert to say no worker is alive")
        (alert,) = [m for m in receiver.got if m["title"] == "No atrelay worker is alive"]
        assert alert["type"] == "failure"  # critical
        assert "3 event(s) waiting, the oldest for" in alert["message"] and "atrelay worker" in alert["message"]
        page = dashboard(stack)
        assert "Needs attention" in page and "No atrelay worker is alive" in page and "the oldest for" in page
        checked = doctor(stack)
        assert checked.returncode == 1
        lines = [line for line in checked.stderr.splitlines() if "no worker alive" in line]
        assert lines and "the oldest for" in " ".join(lines), checked.stderr
        assert time.monotonic() - stopped_at < DETECT_WITHIN
    finally:
        if how == "SIGSTOP":
            stack.pause(worker, resume=True)
    if how == "SIGKILL":
        stack.start_worker()
    rows = stack.all_final(3, timeout=90)
    assert [r.state for r in rows if r.id in ids] == ["applied"] * 3
    wait_for(lambda: readyz(stack)[0] == 200, timeout=30, what="readyz to say ready again")
    wait_for(lambda: any(m["title"] == "Resolved: no worker" for m in receiver.got), timeout=30,
             what="the all-clear alert")
    page = dashboard(stack)
    assert "No atrelay worker is alive" not in page.split('id="liveness"')[0]  # the verdict is clear of it
    assert not [line for line in doctor(stack).stderr.splitlines() if "no worker" in line]
    assert len([m for m in receiver.got if m["title"] == "No atrelay worker is alive"]) == 1  # told once


def test_an_ingress_alone_tells_that_no_worker_and_no_beat_run(
        tmp_path: Path, receiver: Receiver, autotask_server: tuple[ThreadedServer, SandboxState]) -> None:
    """A deployment whose workers and beat never started (a unit not enabled, a crash loop): the ingress is
    the only process left, and it raises both alarms itself, with the events it is holding."""
    server, state = autotask_server
    stack = start_stack(tmp_path, mode="embedded", sandbox_server=server, sandbox=state,
                        env_extra=fast(receiver), workers=0, beat=False)
    try:
        assert [p.name.split("-")[0] for p in stack.procs] == ["ingress"]
        assert stack.post("/webhooks/webform", form(50001)).status_code == 202
        titles = ("No atrelay worker is alive", "No atrelay beat (scheduler) is alive")
        wait_for(lambda: all(any(m["title"] == t for m in receiver.got) for t in titles), timeout=DETECT_WITHIN,
                 what="the ingress to raise no worker and no beat")
        by_title = {m["title"]: m for m in receiver.got}
        assert "1 event(s) waiting, the oldest for" in by_title[titles[0]]["message"]
        assert all(by_title[t]["type"] == "failure" for t in titles)  # both critical
        code, problems = readyz(stack)
        assert (code, problems.get("workers"), problems.get("beat")) == (503, "no worker alive", "no beat alive")
    finally:
        stack.stop()
        state.reset()

"""A worker started with a wrong Autotask password (issue 20.5), with real processes.

It keeps running but is not ready anywhere (the dashboard's verdict, ``/readyz``, ``atrelay doctor``,
``/metrics``, an alert), each naming the setting and where in Autotask the API user is made; events wait
as ``retrying``, never ``dead``; restarted with the right secret, the worker applies them without a replay.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pipelines import store
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.e2e.test_liveness_e2e import dashboard, fast, form, readyz
from tests.integration.test_alerts import Receiver
from tests.stacks import Stack, start_stack
from tests.support import ROOT, wait_for

WRONG = {"ATRELAY_AUTOTASK_SECRET": "not-the-secret"}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def stack(tmp_path: Path, receiver: Receiver, autotask_server: tuple[ThreadedServer, SandboxState]) -> Iterator[Stack]:
    server, state = autotask_server
    s = start_stack(tmp_path, mode="embedded", sandbox_server=server, sandbox=state, workers=0, beat=True,
                    env_extra=fast(receiver))
    yield s
    s.stop()
    state.reset()


def test_a_wrong_password_holds_events_says_so_everywhere_and_the_fix_applies_them(
        stack: Stack, receiver: Receiver) -> None:
    bad = stack.start_worker(env=WRONG)
    log = bad.log()
    assert "worker not ready" in log and "ATRELAY_AUTOTASK_SECRET" in log and "Admin > Resources" in log
    ids = [stack.post("/webhooks/webform", form(t)).json()["id"] for t in (50001, 50002)]

    def held() -> bool:
        rows = [store.get_event(stack.db, i) for i in ids]
        return all(r is not None and r.state == "retrying" and (r.reason or "").startswith("autotask-auth")
                   for r in rows)

    wait_for(held, timeout=60, what="both events to be held as retrying")
    code, problems = readyz(stack)
    assert code == 503 and problems.get("workers") == "no worker ready"
    metrics = httpx.get(f"{stack.ingress_url}/metrics", timeout=10).text
    assert "atrelay_workers_alive 1.0" in metrics and "atrelay_workers_ready 0.0" in metrics
    wait_for(lambda: any(m["title"] == "atrelay workers are running but cannot work" for m in receiver.got),
             timeout=30, what="the not-ready alert")
    (alert,) = [m for m in receiver.got if m["title"] == "atrelay workers are running but cannot work"]
    assert alert["type"] == "failure" and "ATRELAY_AUTOTASK_SECRET" in alert["message"]
    assert "Resources (Users)" in alert["message"]  # where the API user is made ("Admin > Resources" in markdown)
    page = dashboard(stack)
    assert "Needs attention" in page and "ATRELAY_AUTOTASK_SECRET" in page
    doctor = subprocess.run([sys.executable, "-m", "workers.cli", "doctor"], env={**stack.env, **WRONG,
                            "COLUMNS": "400"}, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    assert doctor.returncode == 1
    problems_out = doctor.stderr
    assert "ATRELAY_AUTOTASK_SECRET" in problems_out and "Admin > Resources" in problems_out
    assert "2 event(s) held (retrying)" in problems_out
    assert {store.get_event(stack.db, i).state for i in ids} == {"retrying"}  # type: ignore[union-attr]
    # The fix: the same worker restarted with the right secret. No replay.
    bad.stop()
    stack.start_worker()
    rows = stack.all_final(2, timeout=60)
    assert [(r.state, r.replays) for r in rows] == [("applied", 0), ("applied", 0)]
    wait_for(lambda: readyz(stack)[0] == 200, timeout=30, what="readyz to say ready")
    assert json.dumps(receiver.got).count("atrelay workers are running but cannot work") == 1

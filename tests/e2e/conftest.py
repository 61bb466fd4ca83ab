"""Running stacks for end-to-end tests: a real ingress process and real Celery worker processes.

``redis+postgresql``: Redis broker, PostgreSQL audit DB (the distributed mode).
``embedded``: SQLite audit DB and kombu's SQLAlchemy transport over a SQLite file (`atrelay run`'s default).
The Autotask sandbox runs in the test process; workers reach it over HTTP like a real tenant.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import text

from connectors.autotask.sandbox import SandboxState
from connectors.common.sandbox_server import ThreadedServer, free_port
from pipelines.db import engine_for
from pipelines.schema import upgrade
from tests.conftest import DATA_TABLES, autotask_env
from tests.support import MC_SECRET, WEBFORM_SECRET, Proc

MC_DELAY_SECONDS = 4


@dataclass
class Stack:
    mode: str
    db: str
    ingress_url: str
    sandbox_url: str
    sandbox: SandboxState
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    broker_url: str | None = None

    def enqueue(self, event_id: int) -> None:
        """Put an event id on the stack's broker, as the poller or the sweeper would."""
        celery = Celery("e2e-client", broker=self.broker_url or self.env["ATRELAY_BROKER_URL"])
        celery.conf.broker_connection_retry_on_startup = True
        with celery.connection_for_write() as conn:
            celery.send_task("atrelay.process_event", args=(event_id,), queue="atrelay", connection=conn)

    def clean(self) -> None:
        self.sandbox.reset()
        if self.mode != "embedded":
            r = redis.Redis.from_url(self.env["ATRELAY_BROKER_URL"])
            for key in r.scan_iter("atrelay:quota:*"):
                r.delete(key)
        with engine_for(self.db).begin() as conn:
            if self.db.startswith("postgresql"):
                conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(DATA_TABLES):
                    conn.execute(text(f"DELETE FROM {table}"))
            conn.execute(text("UPDATE audit_anchor SET last_seq = 0, last_hash = :h, pruned_at = NULL"),
                         {"h": "0" * 64})

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-4000:]}" for p in self.procs)


def _start(mode: str, tmp: Path, sandbox_server: ThreadedServer, sandbox: SandboxState, pg_url: str | None,
           redis_url: str | None) -> Stack:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env.update(autotask_env(sandbox_server.url))
    env.update({
        "ATRELAY_VAR_DIR": str(tmp / "var"),
        "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET,
        "ATRELAY_MC_WEBHOOK_SECRET": MC_SECRET,
        "ATRELAY_MC_NO_CONTACT_DELAY_SECONDS": str(MC_DELAY_SECONDS),
        "ATRELAY_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    if mode == "redis+postgresql":
        assert pg_url and redis_url
        redis.Redis.from_url(redis_url).flushdb()
        env["ATRELAY_DATABASE_URL"] = pg_url
        env["ATRELAY_BROKER_URL"] = redis_url
        db = pg_url
    else:
        db = f"sqlite:///{tmp / 'var' / 'atrelay.db'}"
        upgrade(db)
    port = free_port()
    stack = Stack(mode, db, f"http://127.0.0.1:{port}", sandbox_server.url, sandbox, env,
                  broker_url=redis_url if mode != "embedded" else f"sqla+sqlite:///{tmp / 'var' / 'broker.db'}")
    worker = Proc(f"worker-{mode}", ["worker", "--concurrency", "2", "-n", f"e2e-{mode.replace('+', '-')}@%h"],
                  env, tmp)
    stack.procs.append(worker)
    ingress = Proc(f"ingress-{mode}", ["ingress", "--port", str(port)], env, tmp)
    stack.procs.append(ingress)
    worker.wait_log(" ready.", timeout=90)
    ingress.wait_http(f"{stack.ingress_url}/healthz", timeout=60)
    return stack


@pytest.fixture(scope="session")
def _stacks() -> Iterator[dict[str, Stack]]:
    """Stacks started on first use and kept for the session; stopped at its end."""
    started: dict[str, Stack] = {}
    yield started
    for stack in started.values():
        for proc in stack.procs:
            proc.stop()


@pytest.fixture(scope="session")
def stack_factory(_stacks: dict[str, Stack], tmp_path_factory: pytest.TempPathFactory,
                  autotask_server: tuple[ThreadedServer, SandboxState], request: pytest.FixtureRequest) -> object:
    def get(mode: str) -> Stack:
        if mode not in _stacks:
            server, state = autotask_server
            pg = request.getfixturevalue("pg_database") if mode != "embedded" else None
            rd = request.getfixturevalue("redis_url") if mode != "embedded" else None
            _stacks[mode] = _start(mode, tmp_path_factory.mktemp(mode.replace("+", "-")), server, state, pg, rd)
        return _stacks[mode]

    return get


@pytest.fixture(params=["redis+postgresql", "embedded"])
def stack(request: pytest.FixtureRequest, stack_factory: object) -> Iterator[Stack]:
    """Each stack, cleaned for this test."""
    s: Stack = stack_factory(request.param)  # type: ignore[operator]
    s.clean()
    yield s
    s.sandbox.reset()


@pytest.fixture
def dist(stack_factory: object) -> Iterator[Stack]:
    """The distributed stack (Redis + PostgreSQL), cleaned for this test."""
    s: Stack = stack_factory("redis+postgresql")  # type: ignore[operator]
    s.clean()
    yield s
    s.sandbox.reset()

"""Running atrelay stacks for tests: real ingress, worker and beat processes around the sandbox.

``redis+postgresql``: Redis broker, PostgreSQL audit DB (the distributed mode).
``embedded``: SQLite audit DB and kombu's SQLAlchemy transport over a SQLite file (`atrelay run`'s default).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis
from celery import Celery
from sqlalchemy import text
from sqlmodel import col, select

from pipelines import store
from pipelines.audit import EventState, InboundEvent
from pipelines.db import engine_for, session_scope
from pipelines.schema import upgrade
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer, free_port
from tests.conftest import DATA_TABLES, autotask_env
from tests.support import AUTOTASK_HOOK_SECRET, MC_SECRET, WEBFORM_SECRET, Proc, redis_dbs, signed, wait_for

__all__ = ["Stack", "start_stack"]

_names = itertools.count(1)
def _stack_redis_dbs() -> list[int]:
    """Redis databases this test process may give its stacks: its own slot (tests.support.redis_dbs),
    less the one the fixtures use."""
    return list(redis_dbs()[1:])


#: Databases held by a live stack of this process: a package-scoped stack (the e2e ones) lives while
#: other tests start and stop stacks of their own, and two live stacks must never share a database
#: (one's workers would take the other's tasks, and its start-up flush would empty the other's queue).
_redis_in_use: set[int] = set()


def _own_redis_db(url: str) -> tuple[str, int]:
    """A Redis database no live stack of this process uses."""
    base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
    free = [db for db in _stack_redis_dbs() if db not in _redis_in_use]
    if not free:
        raise RuntimeError("every Redis database of this test process is held by a live stack "
                           f"({sorted(_redis_in_use)}): stop one before starting another")
    _redis_in_use.add(free[0])
    return f"{base}/{free[0]}", free[0]


@dataclass
class Stack:
    mode: str
    db: str
    broker_url: str
    ingress_url: str
    sandbox_url: str
    sandbox: SandboxState
    env: dict[str, str]
    tmp: Path
    procs: list[Proc] = field(default_factory=list)
    redis_db: int | None = None  # the Redis database this stack holds (distributed mode)

    # ---- processes ----------------------------------------------------------------------------
    def start_worker(self, concurrency: int = 2, env: dict[str, str] | None = None) -> Proc:
        """A worker; ``env`` overrides some of the stack's settings for it alone (a wrong secret, say)."""
        n = next(_names)
        worker = Proc(f"worker-{self.mode.replace('+', '-')}-{n}",
                      ["worker", "--concurrency", str(concurrency), "-n", f"t{n}-{self.mode.replace('+', '-')}@%h"],
                      {**self.env, **(env or {})}, self.tmp)
        self.procs.append(worker)
        worker.wait_log(" ready.", timeout=90)
        return worker

    def start_beat(self) -> Proc:
        beat = Proc(f"beat-{next(_names)}", ["beat"], self.env, self.tmp)
        self.procs.append(beat)
        beat.wait_log("beat: Starting", timeout=60)
        return beat

    def start_ingress(self, processes: int = 1) -> Proc:
        port = free_port()
        ingress = Proc(f"ingress-{next(_names)}", ["ingress", "--port", str(port), "--workers", str(processes)],
                       self.env, self.tmp)
        self.procs.append(ingress)
        self.ingress_url = f"http://127.0.0.1:{port}"
        ingress.wait_http(f"{self.ingress_url}/healthz", timeout=60)
        return ingress

    def kill(self, proc: Proc) -> None:
        """SIGKILL a process and its children (a Celery worker and its pool): no chance to clean up."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.proc.pid, signal.SIGKILL)
        proc.proc.wait(timeout=20)

    def pause(self, proc: Proc, resume: bool = False) -> None:
        """SIGSTOP a process and its children (alive to the kernel, doing nothing), or SIGCONT them."""
        os.killpg(proc.proc.pid, signal.SIGCONT if resume else signal.SIGSTOP)

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        if self.redis_db is not None:
            _redis_in_use.discard(self.redis_db)
            self.redis_db = None

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()[-4000:]}" for p in self.procs)

    # ---- traffic ------------------------------------------------------------------------------
    def post(self, path: str, body: bytes, secret: str | None = None) -> httpx.Response:
        secret = secret or (MC_SECRET if "mission-control" in path else WEBFORM_SECRET)
        return httpx.post(self.ingress_url + path, content=body, headers=signed(body, secret), timeout=30)

    def enqueue(self, event_id: int) -> None:
        """Put an event id on the stack's broker, as the poller or the sweeper would."""
        celery = Celery("test-client", broker=self.broker_url)
        celery.conf.broker_connection_retry_on_startup = True
        with celery.connection_for_write() as conn:
            celery.send_task("atrelay.process_event", args=(event_id,), queue="atrelay", connection=conn)

    def final(self, event_id: int, timeout: float = 60) -> InboundEvent:
        def done() -> InboundEvent | None:
            row = store.get_event(self.db, event_id)
            return row if row is not None and EventState(row.state).final else None

        try:
            return wait_for(done, timeout=timeout, what=f"event #{event_id} to finish")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def all_rows(self) -> list[InboundEvent]:
        with session_scope(self.db) as s:
            return list(s.exec(select(InboundEvent).order_by(col(InboundEvent.id))).all())

    def all_final(self, expected: int, timeout: float = 120) -> list[InboundEvent]:
        def done() -> list[InboundEvent] | None:
            rows = self.all_rows()
            return rows if len(rows) >= expected and all(EventState(r.state).final for r in rows) else None

        try:
            return wait_for(done, timeout=timeout, what=f"all {expected} events to finish")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def clean(self) -> None:
        self.sandbox.reset()
        if self.broker_url.startswith("redis"):
            r = redis.Redis.from_url(self.broker_url)
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


def start_stack(
    tmp: Path,
    *,
    mode: str,
    sandbox_server: ThreadedServer,
    sandbox: SandboxState,
    pg_url: str | None = None,
    redis_url: str | None = None,
    env_extra: dict[str, str] | None = None,
    workers: int = 1,
    concurrency: int = 2,
    beat: bool = False,
    ingress_processes: int = 1,
) -> Stack:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATRELAY_")}
    env.update(autotask_env(sandbox_server.url))
    env.update({
        "ATRELAY_VAR_DIR": str(tmp / "var"),
        "ATRELAY_WEBFORM_WEBHOOK_SECRET": WEBFORM_SECRET,
        "ATRELAY_MC_WEBHOOK_SECRET": MC_SECRET,
        "ATRELAY_AUTOTASK_WEBHOOK_SECRET": AUTOTASK_HOOK_SECRET,
        "ATRELAY_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(env_extra or {})
    held_db: int | None = None
    if mode == "redis+postgresql":
        assert pg_url and redis_url
        redis_url, held_db = _own_redis_db(redis_url)
        redis.Redis.from_url(redis_url).flushdb()
        env["ATRELAY_DATABASE_URL"] = pg_url
        env["ATRELAY_BROKER_URL"] = redis_url
        db, broker = pg_url, redis_url
    else:
        db = f"sqlite:///{tmp / 'var' / 'atrelay.db'}"
        broker = f"sqla+sqlite:///{tmp / 'var' / 'broker.db'}"
        upgrade(db)
    stack = Stack(mode, db, broker, "", sandbox_server.url, sandbox, env, tmp, redis_db=held_db)
    stack.clean()
    try:
        for _ in range(workers):
            stack.start_worker(concurrency)
        if beat:
            stack.start_beat()
        stack.start_ingress(ingress_processes)
    except BaseException:
        stack.stop()
        raise
    return stack

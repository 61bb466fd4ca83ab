"""Helpers for tests: real services, real processes, and waiting for outcomes (not for time)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from connectors.common.standard_webhooks import sign

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("ATRELAY_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

# Known secrets used only by tests; the secrets test searches logs and tables for them.
WEBFORM_SECRET = "whsec_" + base64.b64encode(b"atrelay-test-webform-secret-0001").decode()
WEBFORM_OLD_SECRET = "whsec_" + base64.b64encode(b"atrelay-test-webform-secret-0000").decode()
MC_SECRET = "whsec_" + base64.b64encode(b"atrelay-test-mission-ctl-secret1").decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"someone-else-entirely-secret-xyz").decode()
#: The secretKey of the Autotask webhooks the tests install (Autotask secrets are plain strings, <= 64).
AUTOTASK_HOOK_SECRET = "atrelay-test-autotask-hook-secret-0001"


def autotask_signed(body: bytes, secret: str = AUTOTASK_HOOK_SECRET) -> dict[str, str]:
    """Headers of a callout as Autotask signs it, computed here (not with atrelay's verifier)."""
    digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha1).digest()).decode()
    return {"X-Hook-Signature": f"sha1={digest}", "Content-Type": "application/json"}


@contextmanager
def fresh_pg_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database migrated to head, dropped afterwards (tests and benchmarks)."""
    from sqlalchemy import create_engine, text

    from pipelines.db import engine_for
    from pipelines.schema import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


#: Redis has databases 0-15. Each test process takes a slot of three (1-3, 4-6, ..., 13-15) for its
#: whole life, held by a lock file: two test runs on one machine (xdist workers, or two sessions)
#: never share a database, so no run's worker takes another run's tasks.
_REDIS_SLOTS = [(1 + 3 * k, 2 + 3 * k, 3 + 3 * k) for k in range(5)]
_redis_slot: list[tuple[int, int, int]] = []
_redis_slot_lock: list[object] = []


def redis_dbs() -> tuple[int, int, int]:
    """This process's three Redis databases (the first for fixtures, the others for stacks)."""
    if _redis_slot:
        return _redis_slot[0]
    import fcntl
    import tempfile

    deadline = time.monotonic() + 600
    while True:
        for slot in _REDIS_SLOTS:
            handle = open(Path(tempfile.gettempdir()) / f"atrelay-test-redis-{slot[0]}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            _redis_slot_lock.append(handle)  # held (open) until the process exits
            _redis_slot.append(slot)
            return slot
        if time.monotonic() > deadline:
            raise RuntimeError("no free Redis test slot: five test processes already hold all of them")
        time.sleep(1)


def service_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a service is missing on a developer's machine; fail in CI, where it must be there."""
    if service_up(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: integration services are required)")
    pytest.skip(message)


def wait_for(check: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll until ``check`` returns something truthy; fail with ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last value: {last!r})")


def signed(body: bytes, secret: str, msg_id: str | None = None, timestamp: float | None = None) -> dict[str, str]:
    return sign(body, secret, msg_id=msg_id or f"msg_{uuid.uuid4().hex}", timestamp=timestamp)


def ctrl_c(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """A terminal's Ctrl-C: SIGINT to the process's group (started with ``start_new_session``), then wait
    until every process of the group is gone (``make`` itself ends "interrupted", as in a terminal)."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        return
    proc.wait(timeout=timeout)

    def gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, timeout=30, what="the process group to stop after Ctrl-C")


class Proc:
    """A child process running an `atrelay` subcommand, its output kept in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args], env=env, cwd=ROOT, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,  # its own process group, for SIGKILL of all
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 60.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            return needle in self.log()

        wait_for(seen, timeout=timeout, what=f"{self.name} to log {needle!r}")

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()[-3000:]}")
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=timeout, what=f"{self.name} at {url}")

    def stop(self, sig: int = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def sandbox_ticket(sandbox_url: str, ticket_id: int) -> dict[str, Any]:
    return httpx.get(f"{sandbox_url}/_sandbox/tickets/{ticket_id}").json()  # type: ignore[no-any-return]

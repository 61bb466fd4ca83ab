"""The Autotask quota governor, shared by every worker process on every machine.

Autotask allows 3 concurrent requests per integration code and endpoint (thread limit) and 10,000
requests per rolling hour per *database*, shared with every other integration the MSP runs. The
governor keeps atrelay inside its share:

* at most ``max_in_flight`` requests in flight per endpoint (a slot, owned by a token and expiring
  ``slot_ttl`` seconds after it was last renewed: a daemon thread renews the slots a live process holds,
  so a killed worker's slots free themselves within that time, while a slow call keeps its own);
* at most ``hourly_budget`` requests in any rolling hour; when it is spent, work is *parked* (a
  retryable :class:`QuotaExhausted` with the wait) rather than failed;
* the tenant-wide count from ``ThresholdInformation`` (read every few minutes by beat): above 75 %
  requests are paced, above 90 % work is parked, so atrelay yields to the MSP's other integrations;
* a share of the hourly budget kept for status writes (``write_reserve_percent``): work that only
  observes Autotask (callout runs, reconciliation; see :func:`observing`) stops at the rest of it, so
  a flood of callouts (a bulk edit) can never spend what the partner events' writes need.

Distributed mode keeps the state in Redis (atomic Lua); the embedded default keeps it in the audit
database, serialised by a write lock. There a slot passes from a thread that finished its call to one of
the same process waiting for it without a transaction while the budget has room to spare: the request is
counted in memory and written with the process's next transaction (a process killed before that leaves a
few requests uncounted, never one too many; see :func:`fast_margin`).
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, func, text, update
from sqlmodel import col, select

from connectors.autotask.errors import RetryableError
from pipelines.audit import QuotaRequest, QuotaSlot, TenantUsage
from pipelines.db import db_now, session_scope

__all__ = [
    "DbGovernor",
    "Governor",
    "QuotaExhausted",
    "RedisGovernor",
    "SlotBusy",
    "Usage",
    "governor_for",
    "observing",
]

log = logging.getLogger("atrelay.governor")
WINDOW = 3600.0
PACE_ABOVE, PARK_ABOVE = 0.75, 0.90
TENANT_STALE = 600.0  # an old reading is ignored rather than trusted


class QuotaExhausted(RetryableError):
    code = "autotask-quota"


_purpose = threading.local()


@contextmanager
def observing() -> Iterator[None]:
    """Calls made inside only observe Autotask (a callout run, reconciliation): they may use the
    hourly budget less the share kept for status writes. Per thread: a worker's runs are threads."""
    before = getattr(_purpose, "observe", False)
    _purpose.observe = True
    try:
        yield
    finally:
        _purpose.observe = before


class SlotBusy(RetryableError):
    code = "autotask-busy"


@dataclass(frozen=True)
class Usage:
    in_flight: dict[str, int]
    used_last_hour: int
    budget: int
    tenant_count: int | None
    tenant_threshold: int | None


class Governor(Protocol):
    def slot(self, endpoint: str) -> AbstractContextManager[None]: ...

    def usage(self) -> Usage: ...

    def record_tenant(self, count: int, threshold: int) -> None: ...


@dataclass
class _Turn:
    """One thread's admission to look for a slot: ``token`` is a slot handed over by its last holder
    (already counted against the budget), ``done`` says the holder's release also settled the admission."""

    token: str | None = None
    done: bool = False


#: The tenant's reading (written by beat every few minutes) is asked of the store at most this often
#: per process: a slot is taken per Autotask call, and the reading cannot change faster than beat writes it.
TENANT_CACHE = 1.0


#: A slot lives this long past its last renewal. Short, so a killed worker's slots are free again well
#: within the 30 s a dead worker's events must be running again (docs/reliability.md); renewed every
#: third of it while its holder lives, so a call that takes longer keeps its slot.
SLOT_TTL = 10.0


class _Base:
    def __init__(self, *, max_in_flight: int, hourly_budget: int, slot_ttl: float = SLOT_TTL,
                 wait_timeout: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 write_reserve_percent: int = 30) -> None:
        self.max_in_flight, self.budget = max_in_flight, hourly_budget
        self.slot_ttl, self.wait_timeout, self._sleep = slot_ttl, wait_timeout, sleep
        # What observing work may use: the budget less the share kept for status writes (at least 1).
        self.observe_budget = max(1, hourly_budget * (100 - write_reserve_percent) // 100)
        self._held: dict[str, str] = {}  # token -> endpoint: the slots this process holds now
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._tenant_seen: tuple[float, tuple[int | None, int | None, float | None]] | None = None

    def _hold(self, endpoint: str, token: str) -> None:
        with self._held_lock:
            self._held[token] = endpoint
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_loop, name="governor-slots", daemon=True)
                self._renewer.start()

    def _unhold(self, token: str) -> None:
        with self._held_lock:
            self._held.pop(token, None)

    def _renew_loop(self) -> None:
        """Extend the expiry of every slot this process holds, while it lives (daemon: dies with it)."""
        while True:
            time.sleep(max(0.05, self.slot_ttl / 3))
            with self._held_lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                self._renew(held)
            except Exception:  # a hiccup: the slots still have two thirds of their time; try next round
                log.warning("governor.slots.renew_failed", exc_info=True)

    def _renew(self, held: dict[str, str]) -> None:
        raise NotImplementedError

    def _tenant_pressure(self, count: int | None, threshold: int | None, age: float | None) -> float:
        if count is None or not threshold or age is None or age > TENANT_STALE:
            return 0.0
        return count / threshold

    def _try(self, endpoint: str, token: str, budget: int | None = None) -> tuple[str, float]:
        raise NotImplementedError

    def _release(self, endpoint: str, token: str, turn: _Turn) -> None:
        raise NotImplementedError

    def _wait_for_release(self, endpoint: str) -> None:
        """Wait a little before trying for a slot again (jittered, so waiters do not try in lockstep)."""
        self._sleep(random.uniform(0.01, 0.05))

    def _tenant(self) -> tuple[int | None, int | None, float | None]:
        raise NotImplementedError

    def _tenant_cached(self) -> tuple[int | None, int | None, float | None]:
        seen, now = self._tenant_seen, time.monotonic()
        if seen is not None and now - seen[0] < TENANT_CACHE:
            count, threshold, age = seen[1]
            return count, threshold, None if age is None else age + (now - seen[0])
        reading = self._tenant()
        self._tenant_seen = (now, reading)
        return reading

    @contextmanager
    def slot(self, endpoint: str) -> Iterator[None]:
        count, threshold, age = self._tenant_cached()
        pressure = self._tenant_pressure(count, threshold, age)
        if pressure >= PARK_ABOVE:
            raise QuotaExhausted(
                f"the Autotask tenant is at {count}/{threshold} requests this hour; waiting for it to fall",
                retry_after=300.0)
        if pressure >= PACE_ABOVE:
            self._sleep(1.0)  # Autotask itself adds latency from 50-75 %; we slow down further
        deadline = time.monotonic() + self.wait_timeout
        observe = getattr(_purpose, "observe", False)
        budget = self.observe_budget if observe else self.budget
        with self._admitted(endpoint, deadline, budget) as turn:
            token = turn.token or uuid.uuid4().hex
            while turn.token is None:
                outcome, wait = self._try(endpoint, token, budget)
                if outcome == "ok":
                    break
                if outcome == "budget":
                    raise QuotaExhausted(
                        f"callout work has used its {budget} of atrelay's {self.budget} Autotask requests this "
                        "hour; the rest is kept for status writes" if observe else
                        f"atrelay's hourly Autotask budget of {self.budget} requests is spent",
                        retry_after=max(1.0, wait))
                if time.monotonic() >= deadline:
                    raise self._busy(endpoint)
                self._wait_for_release(endpoint)
            self._hold(endpoint, token)
            try:
                yield
            finally:
                self._unhold(token)
                self._release(endpoint, token, turn)

    def _busy(self, endpoint: str) -> SlotBusy:
        return SlotBusy(f"no free Autotask slot for {endpoint} within {self.wait_timeout:.0f}s", retry_after=1.0)

    @contextmanager
    def _admitted(self, endpoint: str, deadline: float, budget: int) -> Iterator[_Turn]:
        """Where this process's threads queue before they look for a slot (nowhere, by default)."""
        yield _Turn()


_ACQUIRE = """
-- Redis's own clock, not the caller's: a host whose clock runs ahead must not evict other hosts' slots.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl, max, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 3600)
if redis.call('ZCARD', KEYS[2]) >= budget then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {'budget', tostring(tonumber(oldest[2]) + 3600 - now)}
end
if redis.call('ZCARD', KEYS[1]) >= max then return {'busy', '0'} end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[5])
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('EXPIRE', KEYS[1], 7200)
redis.call('EXPIRE', KEYS[2], 7200)
return {'ok', '0'}
"""


_RENEW = """
-- Only slots still held (ZADD XX), to Redis's time plus the TTL.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 'XX', now + tonumber(ARGV[1]), ARGV[i + 1]) end
return 0
"""


class RedisGovernor(_Base):
    def __init__(self, redis_url: str, *, prefix: str = "atrelay:quota", **kw: Any) -> None:
        import redis

        super().__init__(**kw)
        self._r = redis.Redis.from_url(redis_url)
        self._prefix = prefix
        self._acquire = self._r.register_script(_ACQUIRE)
        self._renew_script = self._r.register_script(_RENEW)

    def _renew(self, held: dict[str, str]) -> None:
        tokens = list(held)
        self._renew_script(keys=[f"{self._prefix}:slots:{held[t]}" for t in tokens], args=[self.slot_ttl, *tokens])

    def _try(self, endpoint: str, token: str, budget: int | None = None) -> tuple[str, float]:
        keys = [f"{self._prefix}:slots:{endpoint}", f"{self._prefix}:window"]
        outcome, wait = self._acquire(keys=keys, args=[0, self.slot_ttl, self.max_in_flight,  # 0: see TIME
                                                       self.budget if budget is None else budget, token])
        return outcome.decode(), float(wait)

    def _release(self, endpoint: str, token: str, turn: _Turn) -> None:
        # Wake one waiter at once: polling would leave a freed slot idle for tens of milliseconds,
        # a sixth of a 150 ms call, and the thread limit is what bounds throughput.
        wake = f"{self._prefix}:wake:{endpoint}"
        pipe = self._r.pipeline(transaction=False)
        pipe.zrem(f"{self._prefix}:slots:{endpoint}", token)
        pipe.rpush(wake, 1)
        pipe.ltrim(wake, -self.max_in_flight, -1)  # wake-ups nobody waited for do not pile up
        pipe.expire(wake, 60)
        pipe.execute()

    def _wait_for_release(self, endpoint: str) -> None:
        # A wake-up left by a release nobody waited for only costs one more try; the timeout bounds
        # the wait should a release never come (a holder killed: its slot expires instead).
        self._r.blpop([f"{self._prefix}:wake:{endpoint}"], timeout=0.05)

    def _now(self) -> float:
        """Redis's clock: every host measures slot expiry and ages against the same one."""
        seconds, micros = self._r.time()
        return float(seconds) + float(micros) / 1_000_000

    def _tenant(self) -> tuple[int | None, int | None, float | None]:
        count, threshold, at = self._r.hmget(f"{self._prefix}:tenant", "count", "threshold", "at")
        if count is None or threshold is None or at is None:
            return None, None, None
        return int(count), int(threshold), self._now() - float(at)

    def record_tenant(self, count: int, threshold: int) -> None:
        self._r.hset(f"{self._prefix}:tenant", mapping={"count": count, "threshold": threshold, "at": self._now()})
        self._tenant_seen = None  # this process's next call reads it at once

    def usage(self) -> Usage:
        now = self._now()
        in_flight = {}
        for key in self._r.scan_iter(f"{self._prefix}:slots:*"):
            in_flight[key.decode().rsplit(":", 1)[-1]] = int(self._r.zcount(key, now, "+inf"))
        used = int(self._r.zcount(f"{self._prefix}:window", now - WINDOW, "+inf"))
        count, threshold, _age = self._tenant()
        return Usage(in_flight, used, self.budget, count, threshold)


class _Waiter:
    """A thread of this process waiting for a permit of a lane; ``ready`` is set when it has one."""

    __slots__ = ("budget", "ready", "token")

    def __init__(self, budget: int) -> None:
        self.budget, self.ready = budget, threading.Event()
        self.token: str | None = None


@dataclass
class _Lane:
    """One endpoint's permits in this process: at most ``max_in_flight`` threads look for or hold a slot."""

    free: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    waiters: deque[_Waiter] = field(default_factory=deque)

    def give(self, token: str | None = None) -> None:
        """Pass a permit (and, with ``token``, the slot it held) to the first waiter, or free it."""
        with self.lock:
            if not self.waiters:
                self.free += 1
                return
            waiter = self.waiters.popleft()
        waiter.token = token
        waiter.ready.set()


#: A slot handed to a waiting thread of the same process costs no database transaction while this
#: process counted the hour's requests less than ``FAST_FRESH`` seconds ago and the count, with what it
#: handed over since, leaves at least :func:`fast_margin` of the budget: the requests so handed are
#: written with this process's next transaction (at the latest the slot renewal, every few seconds).
FAST_FRESH = 1.0


def fast_margin(budget: int) -> int:
    """The share of the budget a handover without the database must leave: more than every process
    together can spend in ``FAST_FRESH`` seconds under the in-flight limit (3 calls at once, each a
    round trip to Autotask: a few dozen a second at most), so the budget still holds across processes."""
    return max(100, budget // 20)


class DbGovernor(_Base):
    """The same rules on the audit database (embedded mode): one short write transaction per acquire."""

    def __init__(self, db: str, **kw: Any) -> None:
        super().__init__(**kw)
        self._db = db
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.Lock()
        self._pending: list[datetime] = []  # requests handed over without the database, not yet written
        self._counted: tuple[float, int] | None = None  # (when, the hour's requests then, ours included)
        self._pending_lock = threading.Lock()

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """A write transaction that also records the requests handed over since the last one."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        try:
            with session_scope(self._db) as s:
                if pending:
                    s.add_all([QuotaRequest(at=at) for at in pending])
                yield s
        except BaseException:
            with self._pending_lock:
                self._pending[:0] = pending  # not written: kept for the next transaction
            raise

    def _count(self, used: int) -> None:
        with self._pending_lock:
            self._counted = (time.monotonic(), used)

    def _fast_room(self, budget: int) -> bool:
        """May a handover count its request without the database? (Then it is counted, in memory.)"""
        with self._pending_lock:
            counted = self._counted
            if (counted is None or time.monotonic() - counted[0] >= FAST_FRESH
                    or counted[1] + len(self._pending) + 1 + fast_margin(budget) > budget):
                return False
            self._pending.append(db_now(self._db))
            return True

    def _try(self, endpoint: str, token: str, budget: int | None = None) -> tuple[str, float]:
        budget = self.budget if budget is None else budget
        now = db_now(self._db)
        with self._writing() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(7317)"))  # serialise acquirers
            # The first statement writes, so SQLite takes its write lock here: acquirers serialise.
            s.execute(delete(QuotaSlot).where(col(QuotaSlot.expires_at) < now))
            s.execute(delete(QuotaRequest).where(col(QuotaRequest.at) < now - timedelta(seconds=WINDOW)))
            spent = self._spent(s, now, budget)
            if spent is not None:
                return "budget", spent
            busy = s.exec(select(func.count()).select_from(QuotaSlot).where(QuotaSlot.endpoint == endpoint)).one()
            if busy >= self.max_in_flight:
                return "busy", 0.0
            s.add(QuotaSlot(token=token, endpoint=endpoint, expires_at=now + timedelta(seconds=self.slot_ttl)))
            s.add(QuotaRequest(at=now))
        return "ok", 0.0

    def _spent(self, s: Any, now: Any, budget: int) -> float | None:
        """Seconds until the rolling hour has room again, or None while it has room now (and counted:
        the request about to be added is included)."""
        used = s.exec(select(func.count()).select_from(QuotaRequest)
                      .where(col(QuotaRequest.at) >= now - timedelta(seconds=WINDOW))).one()
        self._count(int(used) + 1)
        if used < budget:
            return None
        oldest = s.exec(select(func.min(QuotaRequest.at))
                        .where(col(QuotaRequest.at) >= now - timedelta(seconds=WINDOW))).one()
        return (oldest + timedelta(seconds=WINDOW) - now).total_seconds() if oldest else WINDOW

    def _release(self, endpoint: str, token: str, turn: _Turn) -> None:
        """Free the slot, or hand it straight to a thread of this process that waits for one.

        The slot never stands free, the waiter asks the database nothing, and the number of slots is
        unchanged (so the limit holds without recounting them). The waiter's request is counted against
        the budget in memory while the budget has room to spare (:func:`fast_margin`), else in one
        transaction that also gives the slot row a new owner. Freeing and taking it again cost two write
        transactions and a read between one call and the next, and even one transaction waited for
        SQLite's one write lock behind the runs' own writes (its busy handler sleeps milliseconds at a
        time): time a held slot spent doing no Autotask work. Another process's threads still find a
        slot whenever this process has nobody waiting; none waits long in the default of one worker process.
        """
        lane = self._lane(endpoint)
        turn.done = True
        with lane.lock:
            waiter = lane.waiters.popleft() if lane.waiters else None
        if waiter is None:
            try:
                self._free(token)
            finally:
                lane.give()  # whatever the database said: a permit is never lost (the row expires instead)
            return
        handed: str | None = None
        try:
            # The same slot, the same token: nothing to write now while the budget has room to spare.
            handed = token if self._fast_room(waiter.budget) else self._hand_over(endpoint, token, waiter.budget)
        finally:
            try:
                if handed is None:
                    self._free(token)  # the waiter asks the database itself (and is told if the budget is spent)
            finally:
                waiter.token = handed
                waiter.ready.set()  # always: a waiter that was popped waits for this without a timeout

    def _hand_over(self, endpoint: str, token: str, budget: int) -> str | None:
        now = db_now(self._db)
        new = uuid.uuid4().hex
        with self._writing() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(7317)"))  # as _try: the budget is counted alone
            moved: Any = s.execute(update(QuotaSlot).where(col(QuotaSlot.token) == token)
                              .values(token=new, expires_at=now + timedelta(seconds=self.slot_ttl)))
            if not moved.rowcount:
                return None  # the row expired meanwhile (it was not renewed): take a slot the usual way
            if self._spent(s, now, budget) is not None:
                # Spent: the slot is freed here (the caller's own freeing then finds nothing), and the
                # requests handed over earlier are still written with this transaction.
                s.execute(delete(QuotaSlot).where(col(QuotaSlot.token) == new))
                return None
            s.add(QuotaRequest(at=now))
        return new

    def _free(self, token: str) -> None:
        with self._writing() as s:
            s.execute(delete(QuotaSlot).where(col(QuotaSlot.token) == token))

    def _lane(self, endpoint: str) -> _Lane:
        with self._lanes_lock:
            return self._lanes.setdefault(endpoint, _Lane(free=self.max_in_flight))

    @contextmanager
    def _admitted(self, endpoint: str, deadline: float, budget: int) -> Iterator[_Turn]:
        """At most ``max_in_flight`` of this process's threads look for a slot of ``endpoint`` at once.

        The database has no wake-up to offer: a waiter that polled it (a write transaction each time)
        left a freed slot idle for tens of milliseconds, a sixth of a 150 ms call, and every poll
        queued for SQLite's one write lock behind the runs' own writes. Waiting here instead, a thread
        of this process is handed its neighbour's slot the moment the call in it ends (:meth:`_release`),
        and the database is asked only by threads that can have a slot: in the embedded default's one
        worker process they find one at the first try unless another process holds slots. Other
        processes' slots are still counted by the database, which stays the only judge of the limit.
        Measured with the broker changes of ``workers/celery/broker_sqla.py`` (issue 24,
        bench/changes.md): a 200-form burst went from a median 77 % to 83 % of what the limit allows;
        left out alone, the figure fell in both rounds tried.
        """
        lane = self._lane(endpoint)
        turn = _Turn()
        with lane.lock:
            waiter = None
            if lane.free > 0 and not lane.waiters:
                lane.free -= 1
            else:
                waiter = _Waiter(budget)
                lane.waiters.append(waiter)
        if waiter is not None and not waiter.ready.wait(max(0.0, deadline - time.monotonic())):
            with lane.lock:
                if waiter in lane.waiters:  # not handed anything: leave the queue
                    lane.waiters.remove(waiter)
                    raise self._busy(endpoint)
            waiter.ready.wait()  # handed over just as the wait ended: it is ours, take it
        if waiter is not None:
            turn.token = waiter.token
        try:
            yield turn
        finally:
            if not turn.done:  # no slot was taken (budget spent, busy, an error): pass the permit on
                lane.give()

    def _renew(self, held: dict[str, str]) -> None:
        until = db_now(self._db) + timedelta(seconds=self.slot_ttl)
        with self._writing() as s:
            s.execute(update(QuotaSlot).where(col(QuotaSlot.token).in_(list(held))).values(expires_at=until))

    def _tenant(self) -> tuple[int | None, int | None, float | None]:
        with session_scope(self._db) as s:
            row = s.get(TenantUsage, 1)
        if row is None or row.read_at is None:
            return None, None, None
        return row.request_count, row.threshold, (db_now(self._db) - row.read_at).total_seconds()

    def record_tenant(self, count: int, threshold: int) -> None:
        with session_scope(self._db) as s:
            row = s.get(TenantUsage, 1) or TenantUsage(id=1)
            row.request_count, row.threshold, row.read_at = count, threshold, db_now(self._db)
            s.add(row)
        self._tenant_seen = None  # this process's next call reads it at once

    def usage(self) -> Usage:
        if self._pending:
            with self._writing():
                pass  # what this process handed over is counted before it is shown
        now = db_now(self._db)
        with session_scope(self._db) as s:
            rows = s.exec(select(QuotaSlot.endpoint, func.count()).where(col(QuotaSlot.expires_at) >= now)
                          .group_by(QuotaSlot.endpoint)).all()
            used = s.exec(select(func.count()).select_from(QuotaRequest)
                          .where(col(QuotaRequest.at) >= now - timedelta(seconds=WINDOW))).one()
        count, threshold, _age = self._tenant()
        return Usage({str(e): int(n) for e, n in rows}, int(used), self.budget, count, threshold)


def governor_for(*, broker_url: str, db: str, max_in_flight: int, hourly_budget: int,
                 write_reserve_percent: int = 30) -> Governor:
    """Redis when the broker is Redis (shared by every machine), else the audit database."""
    if broker_url.startswith(("redis://", "rediss://")):
        return RedisGovernor(broker_url, max_in_flight=max_in_flight, hourly_budget=hourly_budget,
                             write_reserve_percent=write_reserve_percent)
    return DbGovernor(db, max_in_flight=max_in_flight, hourly_budget=hourly_budget,
                      write_reserve_percent=write_reserve_percent)

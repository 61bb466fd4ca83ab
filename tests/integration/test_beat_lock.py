"""Beat's leader lock in Redis: a restart that empties Redis leaves the lock vacant, and the leader
takes it back instead of exiting (nothing would restart it, and the sweeper would stop)."""

from __future__ import annotations

import uuid

import redis

from workers.celery.beat_lock import BeatLock


def test_renew_keeps_retakes_a_vacant_lock_and_yields_to_another_owner(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url)
    key = f"atrelay:test-beat-lock:{uuid.uuid4().hex}"
    renew = r.register_script(BeatLock._RENEW)
    try:
        assert renew(keys=[key], args=["me", 30]) == 1  # vacant (Redis restarted): taken back
        assert r.get(key) == b"me" and 0 < r.ttl(key) <= 30
        assert renew(keys=[key], args=["me", 30]) == 1  # ours: renewed
        r.set(key, "another-beat")
        assert renew(keys=[key], args=["me", 30]) == 0  # another leader: lost, and left to it
        assert r.get(key) == b"another-beat"
    finally:
        r.delete(key)

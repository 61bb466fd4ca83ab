"""Liveness settings (issue 20.1): the defaults see a stopped worker within a minute; a heartbeat timeout
shorter than two heartbeats is refused with one line naming both variables."""

from __future__ import annotations

import pytest

from workers.settings import SettingsError, load_settings


def test_the_defaults_tell_a_stopped_worker_within_a_minute() -> None:
    s = load_settings()
    # Silent for the timeout, then at most one heartbeat until a process checks; the send (a critical
    # alert skips the digest wait) must fit in what is left of the minute.
    assert s.heartbeat_timeout_seconds + s.heartbeat_seconds <= 45
    assert s.stuck_after_seconds == 120 and s.alert_max_attempts >= 1


def test_a_timeout_shorter_than_two_heartbeats_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATRELAY_HEARTBEAT_SECONDS", "20")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value) == ("configuration error: ATRELAY_HEARTBEAT_TIMEOUT_SECONDS must be at least twice "
                              "ATRELAY_HEARTBEAT_SECONDS (one late heartbeat must not make a live process look dead)")

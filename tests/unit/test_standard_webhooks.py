"""Standard Webhooks verification through the reference library, with rotation and precise reasons."""

from __future__ import annotations

import time

import pytest

from connectors.common.standard_webhooks import VerificationFailed, sign, verify
from tests.support import WEBFORM_OLD_SECRET, WEBFORM_SECRET, WRONG_SECRET

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

BODY = b'{"type":"form.submitted"}'


def test_valid_signature_returns_the_webhook_id() -> None:
    headers = sign(BODY, WEBFORM_SECRET, msg_id="msg_1")
    assert verify(BODY, headers, [WEBFORM_SECRET]) == "msg_1"


def test_either_secret_works_during_rotation() -> None:
    old = sign(BODY, WEBFORM_OLD_SECRET)
    new = sign(BODY, WEBFORM_SECRET)
    both = [WEBFORM_SECRET, WEBFORM_OLD_SECRET]
    assert verify(BODY, old, both) and verify(BODY, new, both)
    with pytest.raises(VerificationFailed, match="does not match"):
        verify(BODY, old, [WEBFORM_SECRET])  # rotated out


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: h.pop("webhook-signature"), "missing header(s): webhook-signature"),
        (lambda h: h.pop("webhook-id"), "missing header(s): webhook-id"),
        (lambda h: h.update({"webhook-signature": "v1"}), "malformed webhook-signature header"),
        (lambda h: h.update({"webhook-signature": "v1,@@@"}), "signature does not match"),
        (lambda h: h.update({"webhook-timestamp": "yesterday"}), "webhook-timestamp is not a Unix time"),
        (lambda h: h.update({"webhook-id": "msg_other"}), "signature does not match"),
    ],
)
def test_rejections_say_why(mutate: object, reason: str) -> None:
    headers = sign(BODY, WEBFORM_SECRET)
    mutate(headers)  # type: ignore[operator]
    with pytest.raises(VerificationFailed) as exc:
        verify(BODY, headers, [WEBFORM_SECRET])
    assert reason in str(exc.value)


@pytest.mark.parametrize(("offset", "reason"), [(-301, "more than 5 minutes old"), (301, "in the future")])
def test_timestamp_tolerance(offset: int, reason: str) -> None:
    headers = sign(BODY, WEBFORM_SECRET, timestamp=time.time() + offset)
    with pytest.raises(VerificationFailed, match=reason):
        verify(BODY, headers, [WEBFORM_SECRET])


def test_wrong_secret_and_tampered_body() -> None:
    headers = sign(BODY, WRONG_SECRET)
    with pytest.raises(VerificationFailed, match="does not match"):
        verify(BODY, headers, [WEBFORM_SECRET])
    good = sign(BODY, WEBFORM_SECRET)
    with pytest.raises(VerificationFailed, match="does not match"):
        verify(BODY + b" ", good, [WEBFORM_SECRET])


def test_non_utf8_body_is_refused() -> None:
    headers = sign(BODY, WEBFORM_SECRET)
    with pytest.raises(VerificationFailed, match="not UTF-8"):
        verify(b"\xff\xfe", headers, [WEBFORM_SECRET])

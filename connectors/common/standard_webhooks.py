"""Standard Webhooks verification and signing, on the ``standardwebhooks`` reference library.

The library does the HMAC, the constant-time compare and the ±5 minute timestamp window; this module
adds what an ingress needs around it: several secrets during rotation, and one precise reason for
every refusal (it is recorded, and answered in the 401).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["REQUIRED_HEADERS", "VerificationFailed", "sign", "verify"]

REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class VerificationFailed(Exception):
    """The request is not authentic; ``str(exc)`` is the reason."""


def verify(body: bytes, headers: Mapping[str, str], secrets: list[str]) -> str:
    """Check the signature against every secret in turn; return the ``webhook-id``."""
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in REQUIRED_HEADERS if not lower.get(h)]
    if missing:
        raise VerificationFailed(f"missing header(s): {', '.join(missing)}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationFailed("body is not UTF-8, so its signature cannot match") from None
    last = "no secret configured"
    for secret in secrets:
        try:
            Webhook(secret).verify(text, lower, json_parse=False)
            return lower["webhook-id"]
        except WebhookVerificationError as exc:
            last = str(exc)
            if "timestamp" in last.lower() or "Invalid Signature Headers" in last:
                break  # the timestamp fails for every secret alike
        except (ValueError, TypeError):  # a malformed "v1,<b64>" list, bad base64
            last = "malformed webhook-signature header"
            break
    reason = {
        "No matching signature found": "signature does not match any configured secret",
        "Message timestamp too old": "webhook-timestamp is more than 5 minutes old",
        "Message timestamp too new": "webhook-timestamp is more than 5 minutes in the future",
        "Invalid Signature Headers": "webhook-timestamp is not a Unix time",
    }.get(last, last)
    raise VerificationFailed(reason)


def sign(body: bytes, secret: str, *, msg_id: str | None = None, timestamp: float | None = None) -> dict[str, str]:
    """Headers a partner would send with ``body`` (used by ``atrelay send``, tests and benchmarks)."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, tz=UTC)
    signature = Webhook(secret).sign(msg_id, ts, body.decode("utf-8"))
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }

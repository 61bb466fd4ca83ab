"""Web-form requests are signed with Standard Webhooks; secrets from ATRELAY_WEBFORM_WEBHOOK_SECRET."""

from __future__ import annotations

from collections.abc import Mapping

from connectors.common.standard_webhooks import verify as verify_standard

__all__ = ["SOURCE", "verify"]

SOURCE = "webform"


def verify(body: bytes, headers: Mapping[str, str], secrets: list[str]) -> str:
    """The ``webhook-id`` of a request signed with one of ``secrets`` (two during a rotation)."""
    return verify_standard(body, headers, secrets)

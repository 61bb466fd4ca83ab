"""Mission Control requests are signed with Standard Webhooks; secrets from ATRELAY_MC_WEBHOOK_SECRET."""

from __future__ import annotations

from collections.abc import Mapping

from connectors.common.standard_webhooks import verify as verify_standard
from workers.settings import Settings, webhook_secrets

__all__ = ["SOURCE", "verify"]

SOURCE = "mission-control"


def verify(body: bytes, headers: Mapping[str, str], settings: Settings) -> str:
    return verify_standard(body, headers, webhook_secrets(settings, SOURCE)[0])

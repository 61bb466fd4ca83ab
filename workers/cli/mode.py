"""``ATRELAY_MODE`` as every screen says it, and the switch between shadow and live when a process starts."""

from __future__ import annotations

import logging
import os
import socket

from rich.console import Console

from workers.settings import Settings

__all__ = ["mode_line", "record_start"]

log = logging.getLogger("atrelay.mode")


def mode_line(settings: Settings) -> str:
    """One line for the banner and the ingress's start line."""
    if settings.mode == "shadow":
        return ("SHADOW: nothing is written to Autotask; each write atrelay would make is recorded "
                "(`atrelay shadow report`, /ops/shadow)")
    return "live"


def record_start(settings: Settings, role: str, err: Console) -> None:
    """Record this process's mode (pipelines.shadow): the first shadow process opens a shadow period, the
    first live one closes it and says how many events accepted in shadow mode will never be written."""
    from pipelines.shadow import record_mode

    by = f"{role} on {socket.gethostname()} (pid {os.getpid()})"
    change = record_mode(settings.effective_database_url, shadow=settings.mode == "shadow", by=by)
    if change.switched == "shadow":
        log.warning("mode.shadow_started", extra={"by": by})
        err.print("[yellow]shadow mode on:[/] nothing is written to Autotask from now on; events accepted in "
                  "shadow mode are never written, even after going live. Compare with `atrelay shadow report`.",
                  highlight=False)
    elif change.switched == "live":
        since = f"{change.since:%Y-%m-%d %H:%M} UTC" if change.since else "?"
        log.warning("mode.live_after_shadow", extra={"by": by, "accepted_in_shadow": change.accepted,
                                                      "waiting": change.waiting})
        err.print(f"[yellow]shadow mode ended, live now:[/] the {change.accepted} event(s) accepted in shadow mode "
                  f"since {since} are never written to Autotask ({change.waiting} of them still waiting: they end "
                  "without writing). Events from now on are written.", highlight=False)

"""``ATRELAY_NOTIFY_URLS`` checked against the apprise that is installed, before anything relies on it.

An URL apprise cannot use is skipped by apprise at send time with a log line: alerts then go nowhere
while the dashboard says they were sent (the README once suggested ``msteams://``, which the pinned
apprise no longer has; Teams is ``workflows://`` there). So an URL is tried at start-up, and one with
an unknown scheme is named together with the schemes this apprise does support.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["notify_url_problems", "supported_schemes"]


@contextmanager
def _quiet() -> Iterator[None]:
    """apprise logs a warning for each URL it refuses; the caller reports it in one line instead."""
    logger = logging.getLogger("apprise")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def supported_schemes() -> list[str]:
    """Every URL scheme the installed apprise's enabled plugins accept, sorted."""
    import apprise  # an edge dependency, imported where it is used

    schemes: set[str] = set()
    for plugin in apprise.Apprise().details()["schemas"]:
        for key in ("protocols", "secure_protocols"):
            value = plugin.get(key) or ()
            schemes.update([value] if isinstance(value, str) else value)
    return sorted(s.lower() for s in schemes)


def notify_url_problems(value: str) -> list[str]:
    """One sentence per URL in ``value`` (space-separated) that apprise cannot use; empty if all can.

    The URLs are credentials (webhook tokens): a problem names the scheme and the URL's position,
    never the URL.
    """
    urls = value.split()
    if not urls:
        return []
    import apprise

    problems: list[str] = []
    known: list[str] | None = None
    with _quiet():
        for n, url in enumerate(urls, 1):
            scheme, sep, _ = url.partition("://")
            if not sep or not scheme:
                problems.append(f"URL {n} has no scheme (like slack://... or json://host/path)")
                continue
            if apprise.Apprise.instantiate(url) is not None:
                continue
            known = known if known is not None else supported_schemes()  # only once something is wrong
            if scheme.lower() not in known:
                problems.append(f"URL {n}: the installed apprise has no {scheme.lower()}:// "
                                f"(it supports: {', '.join(known)})")
            else:
                problems.append(f"URL {n}: apprise cannot use this {scheme.lower()}:// URL "
                                "(see its page in the apprise wiki for the URL's parts)")
    return problems

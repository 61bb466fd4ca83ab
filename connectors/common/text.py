"""Sender-supplied text inside atrelay's own one-line messages (reasons, refusals): shown, never obeyed.

A value taken from a request (an ``EntityType``, a ``Guid``, a header) may hold NUL, which PostgreSQL
text columns refuse, a lone surrogate (``\\ud800`` in JSON), which no UTF-8 database can store, or line
breaks and terminal escapes that would forge lines in a log or a report. :func:`one_line` writes each
such character as a visible escape, keeps everything else as sent, and bounds the length.
"""

from __future__ import annotations

import re

__all__ = ["one_line"]

# C0 and C1 controls, DEL, lone surrogates, and the Unicode line and paragraph separators.
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(value: object, limit: int = 200) -> str:
    """``value`` as text of at most about ``limit`` characters (cut first, so the work is bounded),
    with every control character, lone surrogate and line separator written as an escape."""
    text = value if isinstance(value, str) else str(value)
    cut = text[:limit]
    shown = _UNSHOWABLE.sub(_escape, cut)
    return shown + ("..." if len(text) > limit else "")

"""``X-Hook-Signature`` on Autotask's callouts: verified over the raw bytes, or over their .NET escaping.

Autotask signs *its own* serialization (Autotask REST docs, "Secret key payload verification"): .NET's
default JSON encoder, which writes, inside
strings, ``" & ' + < > ``` `` (and DEL) and every non-ASCII character as ``\\uXXXX`` (UTF-16 code units,
so a character beyond the BMP is a surrogate pair). A proxy, or Autotask itself on some tenants, may
deliver the same JSON with those characters as they are: the signature then matches only once the
escaping is applied again. The parsed JSON is never re-serialized to verify: key order, spacing and
number formats would differ, and a verifier that normalises can be fooled.

Refusing must cost less than accepting (issue 19): anyone can post a bad signature, so the work is
bounded before any HMAC is computed, and the escaped candidate is built only when

1. the raw bytes do not verify, and
2. the body holds something the escaping changes, and
3. building it stays within caps predicted from byte counts: at most :data:`MAX_ESCAPED_BYTES` long,
   at most :data:`MAX_PIECES` strings and runs of non-ASCII characters.

It is then built in one pass of C-level string operations (no per-character Python), for upper- and
lower-case hex (.NET writes upper case; other serializers lower). :func:`verify_callout` says which
form verified, so an operator can see what the tenant really sends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Literal

__all__ = [
    "MAX_ESCAPED_BYTES",
    "MAX_PIECES",
    "SIGNATURE_HEADER",
    "CalloutVerificationFailed",
    "SignatureForm",
    "autotask_escape",
    "autotask_escapes",
    "escaped_candidates",
    "verify_callout",
]

SIGNATURE_HEADER = "x-hook-signature"
_SHA1_BYTES = 20
#: Which bytes the signature was found to cover: as received, or once .NET's escaping is applied.
SignatureForm = Literal["raw", "escaped"]
#: The longest escaped candidate built. A genuine callout's text is at most a 32,000-character note
#: (about 390 KB escaped even if every character were an emoji); 256 KiB of ``&`` would be 1.5 MB.
MAX_ESCAPED_BYTES = 512 * 1024
#: The most pieces escaped one by one (runs of non-ASCII characters, and strings): the one cost that
#: grows with their number, about a microsecond each. A 32,000-character note in a language written
#: with non-ASCII words separated by spaces has about 5,000 runs; a callout has tens of strings.
MAX_PIECES = 16_384

# Inside JSON strings: the ASCII characters .NET's default encoder writes as \uXXXX (besides `"`,
# which arrives as \" and is handled with the backslashes), and what each becomes.
_ASCII_ESCAPES = (("&", "0026"), ("'", "0027"), ("+", "002B"), ("<", "003C"), (">", "003E"), ("`", "0060"),
                  ("\x7f", "007F"))
# Each byte's class, for counting with one translate: plain ASCII; a byte escaping may grow (an ASCII
# special, or a backslash that may start \"); a quote; a byte of a non-ASCII character.
_PLAIN, _SPECIAL, _QUOTE, _HIGH = 0, 1, 2, 0x80
_CLASS = bytes(_HIGH if b >= 0x80 else _SPECIAL if chr(b) in "&'+<>`\x7f\\" else _QUOTE if b == 0x22 else _PLAIN
               for b in range(256))
# A JSON string, quotes included ("unrolled" so the C engine never backtracks per character).
_STRING = re.compile(r'("[^"\\]*(?:\\.[^"\\]*)*")', re.DOTALL)
_NON_ASCII = re.compile("([\x80-\U0010ffff]+)")  # a positive class: the C engine scans past ASCII faster
# Placeholders: neither can occur in a body that is valid JSON (control characters must be escaped
# in strings), and a body holding either gets no candidate.
_SEP, _PAIR = "\x00", "\x01"


class CalloutVerificationFailed(Exception):
    """The callout's signature is missing, malformed or does not match any configured secret."""


def _escape_non_ascii(text: str) -> tuple[str, str]:
    """Every non-ASCII character as \\uXXXX: (upper-case hex, lower-case hex).

    C-level steps whatever the number of characters: one split into runs, one UTF-16 encode and one
    hex() for all the runs together; the Python work is per call, not per character (per run, the
    list items only: hence :data:`MAX_PIECES`).
    """
    if text.isascii():
        return text, text
    parts = _NON_ASCII.split(text)  # odd items: the runs of non-ASCII characters
    runs = _SEP.join(parts[1::2])  # one string for one encode; NUL (unit 0000) separates the runs
    hexed = runs.encode("utf-16-be", "surrogatepass").hex("-", 2)
    out = []
    for digits in (hexed.upper(), hexed):
        parts[1::2] = ("\\u" + digits.replace("-", "\\u")).split("\\u0000")
        out.append("".join(parts))
    return out[0], out[1]


def _escape_strings(strings: str) -> tuple[str, str]:
    """The contents of JSON strings (joined by ``_SEP``) as .NET's default encoder writes them:
    (upper-case hex, lower-case hex)."""
    # A `"` inside a string arrives as \" (or \u0022 already). Escaped backslashes are set aside
    # first so that in \\" the quote is seen as the string's end, not as an escaped quote.
    out = strings.replace("\\\\", _PAIR).replace('\\"', "\\u0022").replace(_PAIR, "\\\\")
    lettered = []  # codes with hex letters (+ < > DEL) that occurred: lower-cased in the second form
    for char, code in _ASCII_ESCAPES:
        if char in out:
            out = out.replace(char, "\\u" + code)
            if code != code.lower():
                lettered.append(code)
    upper, lower = _escape_non_ascii(out)
    for code in lettered:
        lower = lower.replace("\\u" + code, "\\u" + code.lower())
    return upper, lower


def autotask_escapes(text: str) -> tuple[str, str]:
    """``text`` (JSON) with every string's contents escaped as .NET's default encoder writes them, with
    upper- and with lower-case hex. Only strings are touched: structural quotes stay, and so does a
    ``+`` in a number's exponent."""
    parts = _STRING.split(text)
    strings = parts[1::2]
    if not strings:
        return text, text
    out = []
    for escaped in _escape_strings(_SEP.join(strings)):
        parts[1::2] = escaped.split(_SEP)
        out.append("".join(parts))
    return out[0], out[1]


def autotask_escape(text: str, *, upper: bool = False) -> str:
    """:func:`autotask_escapes`, one hex case."""
    return autotask_escapes(text)[0 if upper else 1]


def _predicted(body: bytes) -> tuple[int, int]:
    """From byte counts only (C speed, about 1 ms for 256 KiB): an upper bound of the escaped form's
    length (the body's own length: escaping changes nothing), and how many pieces building it handles
    one by one (runs of non-ASCII characters, and strings)."""
    classes = body.translate(_CLASS)
    specials, quotes, high = classes.count(_SPECIAL), classes.count(_QUOTE), classes.count(_HIGH)
    runs = 0
    if high:
        runs = classes.count(bytes((_PLAIN, _HIGH))) + classes.count(bytes((_SPECIAL, _HIGH))) \
            + classes.count(bytes((_QUOTE, _HIGH))) + (1 if classes[0] == _HIGH else 0)
    # An ASCII special (or a backslash, which may start \"): 1 -> 6 bytes; a non-ASCII character of k
    # UTF-8 bytes: 6 (or 12 for k = 4) bytes, so at most 2 more per byte.
    return len(body) + 5 * specials + 2 * high, runs + quotes // 2


def _over_caps(length: int, pieces: int) -> bool:
    return length > MAX_ESCAPED_BYTES or pieces > MAX_PIECES


def escaped_candidates(body: bytes, predicted: tuple[int, int] | None = None) -> tuple[bytes, bytes] | None:
    """The body as Autotask would have signed it (upper-, lower-case hex), or None when escaping changes
    nothing, the body is not UTF-8 text, or building it is over the caps (:data:`MAX_ESCAPED_BYTES`,
    :data:`MAX_PIECES`). ``predicted``: :func:`_predicted`'s answer, when the caller has it."""
    length, pieces = predicted or _predicted(body)
    if length == len(body) or _over_caps(length, pieces):
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _SEP in text or _PAIR in text:
        return None
    upper, lower = (t.encode("ascii", "backslashreplace") for t in autotask_escapes(text))
    return (upper, lower) if upper != body or lower != body else None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _expected(headers: Mapping[str, str]) -> bytes:
    given = _header(headers, SIGNATURE_HEADER)
    if not given:
        raise CalloutVerificationFailed("missing X-Hook-Signature header")
    scheme, sep, value = given.strip().partition("=")
    if not sep or scheme.strip().lower() != "sha1":
        raise CalloutVerificationFailed("X-Hook-Signature must look like 'sha1=<base64>'")
    try:
        expected = base64.b64decode(value.strip(), validate=True)
    except (ValueError, binascii.Error):
        raise CalloutVerificationFailed("X-Hook-Signature is not valid base64") from None
    if len(expected) != _SHA1_BYTES:
        raise CalloutVerificationFailed("X-Hook-Signature is not a SHA-1 digest (20 bytes)")
    return expected


def _signed_by_one(candidate: bytes, expected: bytes, keys: list[bytes]) -> bool:
    ok = False
    for key in keys:  # every secret is tried: the same work whichever matches
        ok |= hmac.compare_digest(hmac.new(key, candidate, hashlib.sha1).digest(), expected)
    return ok


def verify_callout(body: bytes, headers: Mapping[str, str], secrets: list[str]) -> SignatureForm:
    """Which form of ``body`` one of ``secrets`` signed; :class:`CalloutVerificationFailed` if none did."""
    if not secrets:
        raise CalloutVerificationFailed("no Autotask webhook secret is configured")
    expected = _expected(headers)  # a malformed header costs no HMAC at all
    keys = [s.encode("utf-8") for s in secrets]
    if _signed_by_one(body, expected, keys):
        return "raw"
    predicted = _predicted(body)
    candidates = escaped_candidates(body, predicted)
    for candidate in candidates or ():
        if candidate != body and _signed_by_one(candidate, expected, keys):
            return "escaped"
    if candidates is None and _over_caps(*predicted):
        raise CalloutVerificationFailed("signature does not match (its escaped form is over the caps: not tried)")
    raise CalloutVerificationFailed("signature does not match")

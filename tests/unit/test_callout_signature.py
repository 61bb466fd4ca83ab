"""The escaped-signature fallback completes .NET's default encoder (issue 21.4), and costs little (19.3).

Every vector is written out here by hand: the body as delivered (characters as they are) and the body
as Autotask signs it (``\\uXXXX`` typed literally, in the hex case named). The expected signature is
computed in the test with Python's ``hmac`` over that hand-written text, never with atrelay's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from connectors.autotask.verify import (
    MAX_ESCAPED_BYTES,
    CalloutVerificationFailed,
    autotask_escapes,
    verify_callout,
)

SECRET = "unit-vector-secret-0123456789abcdef"


def _sig(signed_bytes: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), signed_bytes, hashlib.sha1).digest()
    return {"X-Hook-Signature": "sha1=" + base64.b64encode(digest).decode()}


def _callout(title: str) -> str:
    """A note callout whose title is ``title``, written as JSON text by hand (no serializer involved)."""
    return ('{"Action":"Create","EntityType":"TicketNote","Id":900017,"Fields":{"TicketID":50001,'
            f'"Title":"{title}"}}}}')


# (what is in the note as delivered, as .NET writes it with upper-case hex, with lower-case hex)
VECTORS = [
    pytest.param('say \\"hi\\"', "say \\u0022hi\\u0022", "say \\u0022hi\\u0022", id="double-quote"),
    pytest.param("R&D", "R\\u0026D", "R\\u0026D", id="ampersand"),
    pytest.param("it's", "it\\u0027s", "it\\u0027s", id="apostrophe"),
    pytest.param("+1 555 0100", "\\u002B1 555 0100", "\\u002b1 555 0100", id="plus"),
    pytest.param("<b>", "\\u003Cb\\u003E", "\\u003cb\\u003e", id="angle-brackets"),
    pytest.param("`cmd`", "\\u0060cmd\\u0060", "\\u0060cmd\\u0060", id="backtick"),
    pytest.param("Ren\u00e9e", "Ren\\u00E9e", "Ren\\u00e9e", id="latin-1"),
    pytest.param("5 \u20ac", "5 \\u20AC", "5 \\u20ac", id="bmp"),
    pytest.param("ok \U0001f600", "ok \\uD83D\\uDE00", "ok \\ud83d\\ude00", id="astral-surrogate-pair"),
    pytest.param("a\u007fb", "a\\u007Fb", "a\\u007fb", id="delete"),
]


@pytest.mark.parametrize(("plain", "upper", "lower"), VECTORS)
@pytest.mark.parametrize("case", ["upper", "lower"])
def test_each_character_verifies_when_signed_escaped_and_sent_as_is(plain: str, upper: str, lower: str,
                                                                   case: str) -> None:
    delivered = _callout(plain).encode("utf-8")
    signed_as = _callout(upper if case == "upper" else lower).encode("ascii")
    assert signed_as != delivered
    assert verify_callout(delivered, _sig(signed_as), [SECRET]) == "escaped"
    # Sent as signed: the raw bytes verify, and say so.
    assert verify_callout(signed_as, _sig(signed_as), [SECRET]) == "raw"


@pytest.mark.parametrize(("plain", "upper", "lower"), VECTORS)
def test_each_escape_matches_the_hand_written_form(plain: str, upper: str, lower: str) -> None:
    assert autotask_escapes(_callout(plain)) == (_callout(upper), _callout(lower))


def test_only_strings_are_escaped_structure_and_exponents_stay() -> None:
    delivered = '{"n":1E+20,"k":"a+b","p":"C:\\\\","q":"\\\\\\"x"}'
    # 1E+20 is a number: .NET writes its exponent sign as is. "C:\\" ends in an escaped backslash, so
    # its closing quote is structure; in "\\\"x" the backslash pair is followed by an escaped quote.
    signed_as = '{"n":1E+20,"k":"a\\u002Bb","p":"C:\\\\","q":"\\\\\\u0022x"}'
    assert json.loads(delivered) == json.loads(signed_as)
    assert verify_callout(delivered.encode(), _sig(signed_as.encode()), [SECRET]) == "escaped"


def test_the_escaped_form_of_a_different_body_is_refused() -> None:
    signed_as = _callout("R\\u0026D").encode()
    with pytest.raises(CalloutVerificationFailed, match="does not match"):
        verify_callout(_callout("R&E").encode(), _sig(signed_as), [SECRET])


def test_a_wrong_secret_is_refused_in_both_forms() -> None:
    signed_as = _callout("R\\u0026D").encode()
    with pytest.raises(CalloutVerificationFailed):
        verify_callout(_callout("R&D").encode(), _sig(signed_as, "another-secret-0123456789abcdef"), [SECRET])


def test_a_malformed_or_short_signature_costs_no_hmac() -> None:
    with pytest.raises(CalloutVerificationFailed, match="not a SHA-1 digest"):
        verify_callout(b"{}", {"X-Hook-Signature": "sha1=AAAA"}, [SECRET])


def test_a_body_whose_escaped_form_is_over_the_cap_is_refused_without_building_it() -> None:
    body = b"&" * (256 * 1024 - 64)  # 1.5 MB once escaped
    assert len(body) * 6 > MAX_ESCAPED_BYTES
    started = time.perf_counter()
    with pytest.raises(CalloutVerificationFailed, match="over the caps: not tried"):
        verify_callout(body, _sig(b"something else"), [SECRET])
    # Before issue 19 this rewrote the body character by character, twice: about 1.4 s here.
    assert time.perf_counter() - started < 0.1


def test_refusing_the_worst_body_under_the_caps_costs_milliseconds() -> None:
    """Many short strings, each with a character to escape: the escaped form is built, within the caps."""
    body = json.dumps({"Fields": {f"k{i}": "R&D é" for i in range(3000)}}, ensure_ascii=False).encode()
    started = time.perf_counter()
    with pytest.raises(CalloutVerificationFailed, match=r"does not match$"):
        verify_callout(body, _sig(b"something else"), [SECRET])
    assert time.perf_counter() - started < 0.1


def test_a_valid_raw_signature_builds_no_escaped_form() -> None:
    """Accepting is not made dearer by the fallback: raw bytes are tried first, alone."""
    body = json.dumps({"Action": "Update", "EntityType": "Ticket", "Id": 1,
                       "Fields": {"Description": "&" * 200_000}}).encode()
    started = time.perf_counter()
    assert verify_callout(body, _sig(body), [SECRET]) == "raw"
    assert time.perf_counter() - started < 0.05  # the code before issue 19 escaped it first: about 1 s

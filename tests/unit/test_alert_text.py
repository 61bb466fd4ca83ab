"""What an alert says (issue 20.3): ticket, what happened, partner words quoted and escaped for the target's
markup, what to do, a severity; markdown for Slack and Teams, plain text for e-mail; a digest takes the worst
severity. And what start-up says when Autotask cannot be reached: the host and the error."""

from __future__ import annotations

import re

import httpx
from apprise import NotifyFormat
from apprise.conversion import convert_between
from apprise.plugins.slack import NotifySlack

from connectors.autotask.errors import from_transport_error
from pipelines.alert_text import Message, TicketFacts, escape_markdown, from_fields, markdown, plain, render, to_fields
from workers.celery.alerts import _targets
from workers.celery.startup import autotask_problem

HOSTILE = "<!channel> @here <https://evil.example/x|click> [Re-login](https://evil.example/at-login) *bold* `x`"
TICKET = TicketFacts(ticket_id=50003, number="T20261126.0003", title="Printer <!here> on fire", company="Northwind",
                     link="https://ww5.autotask.net/Autotask/AutotaskExtend/ExecuteCommand.aspx?Code=OpenTicketDetail"
                          "&TicketNumber=T20261126.0003", status="Sent from MC")


def _message(severity: str = "warning", title: str = "Escalated by Mission Control: T20261126.0003") -> Message:
    return Message(title=title, severity=severity, ticket=TICKET, happened="Mission Control escalated the ticket.",
                   todo="Assign a primary resource.", partner=[("Mission Control", f"line one\n{HOSTILE}")])


def test_partner_text_cannot_become_markup_in_slack() -> None:
    text = markdown(_message())
    slack = NotifySlack._commonmark_to_slack(text)  # type: ignore[no-untyped-call]
    assert "<!channel>" not in slack and "<!here>" not in slack and "<https://evil" not in slack
    assert not NotifySlack._re_channel_support.search(slack) and not NotifySlack._re_user_id_support.search(slack)
    assert "|Re-login>" not in slack
    assert "<https://ww5.autotask.net/Autotask/AutotaskExtend/" in slack  # atrelay's own link stays a link
    assert "> line one" in text and "**Mission Control wrote** (their words, quoted)" in text
    assert escape_markdown("@channel") == "@\u200bchannel"


def test_atrelays_own_lines_cannot_render_a_disguised_link_or_a_ping_anywhere() -> None:
    """A dead letter's reason is what Autotask or a partner answered, inside atrelay's own sentence: in no
    markdown target may it become a link whose text hides its address, or a ping, whatever it tries (an
    escaped escape, a code span Teams cards do not know, a reference link)."""
    tricks = (f"{HOSTILE} \\[esc\\](https://evil.example/esc) `[code](https://evil.example/code)` "
              "https://evil.example/y|bare> !channel> [ref][1]\n\n[1]: https://evil.example/ref")
    m = Message(title="Dead letter: event #7 (form.submitted)", severity="warning", ticket=TICKET,
                happened=f"Autotask answered: {tricks}", todo=f"Replay it; {tricks}", facts=[("By reason", tricks)])
    text = markdown(m)
    ours = str(TICKET.link).replace("&", "&amp;")
    # How markdown targets (a Teams card) show it: atrelay's ticket link is the only link.
    html = convert_between(NotifyFormat.MARKDOWN, NotifyFormat.HTML, text)  # type: ignore[no-untyped-call]
    assert [target for target, _ in re.findall(r'<a href="([^"]*)"[^>]*>(.*?)</a>', html)] == [ours]
    assert "Re-login" in html and "evil.example/at-login" in html  # shown as written, not obeyed
    slack = NotifySlack._commonmark_to_slack(text)  # type: ignore[no-untyped-call]  # what Slack receives
    assert [url for _, url, _ in NotifySlack._re_url_support.findall(slack)] == [ours]
    assert "<https://evil" not in slack and "|Re-login>" not in slack and "|click>" not in slack
    assert not NotifySlack._re_channel_support.search(slack) and not NotifySlack._re_user_id_support.search(slack)
    assert tricks in plain(m)  # e-mail is plain text: nothing to obey, the words as written


def test_a_digest_names_each_ticket_by_number_with_its_link() -> None:
    other = TicketFacts(ticket_id=50009)  # only its id known: named by it, no link
    m = Message(title="3 dead letters", severity="warning", happened="3 events ...", todo="See `atrelay dlq`.",
                tickets=[TICKET, other])
    assert f"**Tickets** [T20261126.0003]({TICKET.link}), \\#50009" in markdown(m)
    assert f"Tickets: T20261126.0003 ({TICKET.link}), #50009" in plain(m)
    assert from_fields(to_fields(m)) == m  # stored with the alert, written per target when sent


def test_plain_text_for_email_quotes_partner_words_as_written() -> None:
    text = plain(_message())
    assert "Ticket: T20261126.0003 - Printer <!here> on fire" in text
    assert "Company: Northwind" in text and "Link: https://ww5.autotask.net/" in text
    assert f"Mission Control wrote (their words, quoted):\n  > line one\n  > {HOSTILE}" in text
    assert text.startswith("Severity: warning") and "What to do: Assign a primary resource." in text


def test_a_digest_counts_its_alerts_and_takes_the_worst_severity() -> None:
    title, body, severity = render([_message("info", "a"), _message("critical", "b"), _message("warning", "c")],
                                   "liveness", as_markdown=True)
    assert title == "atrelay: 3 alerts (liveness)" and severity == "critical"
    assert body.index("### b") < body.index("### c") < body.index("### a")  # most serious first
    one = render([_message()], "mc_escalation", as_markdown=False)
    assert one == ("Escalated by Mission Control: T20261126.0003", plain(_message()), "warning")


def test_each_target_gets_the_markup_it_renders() -> None:
    targets = _targets(["slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#alerts",
                        "workflows://example.com:443/abcdef/ghijkl/", "mailto://user:pass@example.com",
                        "json://127.0.0.1:9/alerts"])
    assert [t.markdown for t, _ in targets] == [True, True, False, True]
    labels = " ".join(t.label for t, _ in targets)
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in labels and "pass" not in labels  # tokens never shown
    assert len({t.key for t, _ in targets}) == 4


def test_an_unreachable_autotask_is_named_with_its_host_and_the_error() -> None:
    request = httpx.Request("GET", "https://webservices99.autotask.net/ATServicesRest/V1.0/Tickets/entityInformation")
    err = from_transport_error(httpx.ConnectError("[Errno 111] Connection refused", request=request), "GET",
                               "/ATServicesRest/V1.0/Tickets/entityInformation")
    said = autotask_problem(err)
    assert "webservices99.autotask.net" in said and "Connection refused" in said and "cannot reach Autotask" in said

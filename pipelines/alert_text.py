"""What an alert says, and how it is written for each target.

An alert a person can act on says which ticket (number, title, company, a link into Autotask), what
happened (with the partner's own words when it sent any, quoted as theirs), what to do, and how
serious it is. :class:`Message` holds those parts; :func:`markdown` writes them for Slack and Teams
(apprise turns CommonMark into Slack's mrkdwn or a Teams card) and :func:`plain` for e-mail.

Text atrelay did not write (a partner's summary, a ticket title a customer typed) is escaped for the
markup it lands in: in markdown, angle brackets become look-alikes (Slack reads ``<!channel>`` and
``<url|text>`` as a channel-wide ping and a disguised link, and apprise would restore them), ``@`` gets
a zero-width space (no mention), and markdown's link and emphasis characters are backslash-escaped (no
``[text](url)``). atrelay's own lines are escaped too, for links and pings only (they may quote what
Autotask or a partner answered, a dead letter's reason). Text from an unauthenticated request never reaches
a message at all: its callers count such requests, they never quote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "SEVERITIES",
    "Message",
    "TicketFacts",
    "escape_markdown",
    "from_fields",
    "markdown",
    "plain",
    "render",
    "to_fields",
    "worst",
]

SEVERITIES = ("info", "warning", "critical")
#: Partner text longer than this is cut (with a line saying how much more there was): an alert is a
#: pointer to the ticket, not a copy of it.
PARTNER_LIMIT = 1500
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#~|])")
#: What opens a markdown link in atrelay's own lines: brackets, and the backslash that could escape an escape.
_MD_LINK = re.compile(r"([\\\[\]])")


@dataclass(frozen=True)
class TicketFacts:
    """The ticket an alert concerns, as Autotask showed it (title and company are customer-typed text)."""

    ticket_id: int | None = None
    number: str | None = None
    title: str | None = None
    company: str | None = None
    link: str | None = None
    status: str | None = None

    @property
    def name(self) -> str:
        return self.number or (f"#{self.ticket_id}" if self.ticket_id is not None else "?")


@dataclass(frozen=True)
class Message:
    """One alert: ``title``, ``happened``, ``todo`` and ``facts`` are atrelay's own words; ``partner``
    holds (who, their words) pairs, always quoted and escaped; the ticket's title and company too.
    ``tickets`` are the tickets a digest concerns (a burst of dead letters), each by number and linked
    where known."""

    title: str
    severity: str
    happened: str
    todo: str
    ticket: TicketFacts | None = None
    partner: list[tuple[str, str]] = field(default_factory=list)
    facts: list[tuple[str, str]] = field(default_factory=list)
    tickets: list[TicketFacts] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.severity in SEVERITIES, self.severity


def worst(severities: list[str]) -> str:
    return max(severities, key=SEVERITIES.index, default="info")


def _clean(text: str) -> str:
    """Controls and lone surrogates out (they break a chat message or a database); newlines kept."""
    return _CONTROLS.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))


def _cut(text: str, limit: int = PARTNER_LIMIT) -> tuple[str, int]:
    return (text, 0) if len(text) <= limit else (text[:limit], len(text) - limit)


def escape_markdown(text: str) -> str:
    """``text`` shown as written in a markdown message, never obeyed as markup or as a mention."""
    text = _clean(text).replace("<", "\u2039").replace(">", "\u203a").replace("@", "@\u200b")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _ours_md(text: str) -> str:
    """atrelay's own sentences may carry what Autotask or a partner answered (a dead letter's reason): never
    a ping, a Slack ``<url|text>`` or a markdown ``[text](url)`` link, whatever that text holds.

    Brackets (and backslashes, so ``\\[`` cannot undo the escape) are escaped inside backticks too: Teams
    cards know no code spans, so a link there would render. atrelay's own commands hold neither."""
    text = text.replace("<", "\u2039").replace(">", "\u203a").replace("@", "@\u200b")
    return _MD_LINK.sub(r"\\\1", text)


def _one_line_md(text: str) -> str:
    return escape_markdown(" ".join(text.split()))


def _quote_md(text: str) -> str:
    body, more = _cut(_clean(text))
    lines = [f"> {escape_markdown(line)}" if line.strip() else ">" for line in body.split("\n")]
    if more:
        lines.append(f"> ... {more} more characters (see the ticket)")
    return "\n".join(lines)


def _quote_plain(text: str) -> str:
    body, more = _cut(_clean(text))
    lines = [f"  > {line}".rstrip() for line in body.split("\n")]
    if more:
        lines.append(f"  > ... {more} more characters (see the ticket)")
    return "\n".join(lines)


def _ticket_md(t: TicketFacts) -> str:
    """The ticket's number (escaped), a link to it when atrelay could build one."""
    number = _one_line_md(t.name)
    return f"[{number}]({t.link})" if t.link else number


def _ticket_plain(t: TicketFacts) -> str:
    name = " ".join(_clean(t.name).split())
    return f"{name} ({t.link})" if t.link else name


def markdown(m: Message) -> str:
    """CommonMark for apprise's Slack (mrkdwn) and Teams (card) targets."""
    out = [f"**Severity: {m.severity}**"]
    t = m.ticket
    if t is not None:
        line = f"**Ticket** {_ticket_md(t)}"
        if t.title:
            line += f": {_one_line_md(t.title)}"
        out.append(line)
        if t.company:
            out.append(f"**Company** {_one_line_md(t.company)}")
        if t.status:
            out.append(f"**Status** {_one_line_md(t.status)}")
    if m.tickets:
        out.append(f"**Tickets** {', '.join(_ticket_md(x) for x in m.tickets)}")
    out.append(f"**What happened** {_ours_md(m.happened)}")
    for label, value in m.facts:
        out.append(f"**{label}** {_ours_md(value)}")
    for who, words in m.partner:
        out.append(f"**{who} wrote** (their words, quoted):\n{_quote_md(words)}")
    out.append(f"**What to do** {_ours_md(m.todo)}")
    return "\n\n".join(out)


def plain(m: Message) -> str:
    """Plain text for e-mail (and the dashboard)."""
    out = [f"Severity: {m.severity}"]
    t = m.ticket
    if t is not None:
        line = f"Ticket: {' '.join(_clean(t.name).split())}"
        if t.title:
            line += f" - {' '.join(_clean(t.title).split())}"
        out.append(line)
        if t.company:
            out.append(f"Company: {' '.join(_clean(t.company).split())}")
        if t.status:
            out.append(f"Status: {t.status}")
        if t.link:
            out.append(f"Link: {t.link}")
    if m.tickets:
        out.append(f"Tickets: {', '.join(_ticket_plain(x) for x in m.tickets)}")
    out.append(f"What happened: {m.happened}")
    for label, value in m.facts:
        out.append(f"{label}: {value}")
    for who, words in m.partner:
        out.append(f"{who} wrote (their words, quoted):\n{_quote_plain(words)}")
    out.append(f"What to do: {m.todo}")
    return "\n".join(out)


def render(messages: list[Message], kind: str, *, as_markdown: bool) -> tuple[str, str, str]:
    """(title, body, severity) of one message for one target: a single alert as itself, several of one
    kind as one digest that counts them, most serious first, with the worst severity."""
    write = markdown if as_markdown else plain
    if len(messages) == 1:
        (m,) = messages
        return m.title, write(m), m.severity
    ordered = sorted(messages, key=lambda m: -SEVERITIES.index(m.severity))
    severity = worst([m.severity for m in messages])
    head = f"{len(messages)} alerts ({kind}), the most serious {severity}; each one follows."
    if as_markdown:
        parts = [f"**Severity: {severity}**\n\n{head}"] + [f"### {m.title}\n\n{write(m)}" for m in ordered]
    else:
        parts = [f"Severity: {severity}\n{head}"] + [f"== {m.title} ==\n{write(m)}" for m in ordered]
    return f"atrelay: {len(messages)} alerts ({kind})", "\n\n---\n\n".join(parts), severity


def to_fields(m: Message) -> dict[str, Any]:
    """The message as JSON for the ``alerts`` row, so each target's form is written when it is sent."""
    return {"title": m.title, "severity": m.severity, "happened": m.happened, "todo": m.todo,
            "partner": [list(p) for p in m.partner], "facts": [list(f) for f in m.facts],
            "ticket": None if m.ticket is None else _ticket_fields(m.ticket),
            "tickets": [_ticket_fields(t) for t in m.tickets]}


def _ticket_fields(t: TicketFacts) -> dict[str, Any]:
    return {"ticket_id": t.ticket_id, "number": t.number, "title": t.title, "company": t.company, "link": t.link,
            "status": t.status}


def from_fields(data: dict[str, Any]) -> Message | None:
    """The message stored by :func:`to_fields`, or None for an older row (its title and body are sent)."""
    if not isinstance(data, dict) or "happened" not in data:
        return None
    t = data.get("ticket")
    return Message(title=str(data["title"]), severity=str(data.get("severity") or "info"),
                   happened=str(data["happened"]), todo=str(data.get("todo") or ""),
                   ticket=TicketFacts(**t) if isinstance(t, dict) else None,
                   partner=[(str(a), str(b)) for a, b in data.get("partner") or []],
                   facts=[(str(a), str(b)) for a, b in data.get("facts") or []],
                   tickets=[TicketFacts(**x) for x in data.get("tickets") or [] if isinstance(x, dict)])

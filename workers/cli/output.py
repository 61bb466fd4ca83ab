"""How listing commands print: a table on a terminal, a table that never wraps when piped, or json/csv.

Rich sizes a table to the terminal, and with no terminal (a pipe, a file, ``| grep``) to 80 columns,
folding cells mid-word ("form.submit / ted"). A console writing to anything but a terminal therefore
gets a width no table reaches, so each row stays one line; ``--format json|csv`` gives a script the
rows without any drawing at all.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum

from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["PIPE_WIDTH", "Format", "emit", "make_console"]

#: The width of a console that is not a terminal: wider than any row atrelay prints.
PIPE_WIDTH = 4000


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def make_console(*, stderr: bool = False, **kwargs: object) -> Console:
    """A console for the CLI: a terminal's own width, or :data:`PIPE_WIDTH` when output is piped."""
    stream = sys.stderr if stderr else sys.stdout
    if not stream.isatty():
        kwargs.setdefault("width", PIPE_WIDTH)
    return Console(stderr=stderr, **kwargs)  # type: ignore[arg-type]


def emit(console: Console, *, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]],
         fmt: Format = Format.table, style: Callable[[str, str], str] | None = None) -> None:
    """Print ``rows`` under ``columns``. Cells are plain text (never read as markup: partner text);
    ``style(column, value)`` may colour a cell in the table form."""
    if fmt == Format.json:
        # Straight to stdout: the JSON must not be re-wrapped or highlighted by the console.
        sys.stdout.write(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], indent=2) + "\n")
        return
    if fmt == Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(rows)
        return
    table = Table(title=title, header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell, style=style(name, cell) if style else "") for name, cell in zip(columns, row,
                                                                                                   strict=True)))
    console.print(table)

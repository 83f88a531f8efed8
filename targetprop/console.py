"""How the command line prints to its console: plain lines that are never wrapped or marked up (paths and commands
stay whole, to be copied), and tables that a file or a pipe gets whole, however wide."""

from __future__ import annotations

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table


def print_line(out: Console, text: str) -> None:
    """``text`` as it is: no markup, no highlighting, no wrapping."""
    out.print(text, highlight=False, markup=False, soft_wrap=True)


def print_table(out: Console, table: Table) -> None:
    """``table`` fitted to a terminal's width, or (to a file or a pipe) at its full width: no cell is wrapped."""
    if not out.is_terminal:
        out.width = max(out.width, Measurement.get(out, out.options.update_width(10_000), table).maximum)
    out.print(table)

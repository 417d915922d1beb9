"""What every command shares: the error-handling Typer subclass, the store, and stdout as table or JSON."""

import functools
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console

from healer import paths
from healer.cli.tables import Column, render_table
from healer.errors import HealerError
from healer.store import Store, describe_db_error
from healer.store.views import Reader, to_json

WHOLE_LINES = 100_000  # the width of piped output: every column, every line whole, for grep and awk


def _screen_width() -> int | None:
    """The width output must fit: $COLUMNS when set, else the terminal's; None when stdout is piped or captured."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    return shutil.get_terminal_size().columns if sys.stdout.isatty() else None


SCREEN_WIDTH = _screen_width()
out = Console(highlight=False, soft_wrap=SCREEN_WIDTH is None, width=SCREEN_WIDTH or WHOLE_LINES)
err = Console(stderr=True, highlight=False, soft_wrap=SCREEN_WIDTH is None, width=SCREEN_WIDTH or WHOLE_LINES)
_wide = False


class App(typer.Typer):
    """A Typer app whose commands turn HealerError into one line on stderr and exit code 2."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("rich_markup_mode", None)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        register = super().command(*args, **kwargs)
        return lambda fn: register(user_errors(fn))


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HealerError as exc:
            fail(str(exc))
        except sqlite3.Error as exc:  # a lock held past the busy timeout, a full disk: one line, the store intact
            fail(describe_db_error(exc, paths.db_path()))

    return wrapper


def fail(message: str, code: int = 2) -> None:
    err.print(f"error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def open_store(read_only: bool = False) -> Store:
    """The store; a write creates it (and the home) on first use. A read of a store not created yet gets an empty
    one in memory, so it prints what an empty store gives and creates no file or folder."""
    path = paths.db_path()
    if read_only and not path.exists():
        store = Store(":memory:")
        store.path = path  # messages name the real file
        return store
    return Store(path)


def open_reader() -> Reader:
    """The store, read-only: a read command never writes, migrates or creates a file (a missing one reads empty)."""
    return Reader(paths.db_path())


def print_json(data: Any) -> None:
    """A view (or plain data) as JSON: field names are the contract, rows one per line, the rest indented."""
    sys.stdout.write(to_json(data) + "\n")


WideOption = Annotated[bool, typer.Option("--wide", help="every column, however wide the table gets")]


def show_wide(wide: bool) -> None:
    """`--wide`: tables keep every column whatever the terminal's width."""
    global _wide
    _wide = wide


def print_table(columns: Sequence[str | Column], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    """A table that fits the terminal (columns drop out and text folds, in each Column's order), whole when piped;
    every cell is plain text, never Rich markup."""
    limit = None if _wide else SCREEN_WIDTH
    table, hidden = render_table(columns, rows, limit)
    if title:
        out.print(title, markup=False, style="italic")
    screen, out.width = out.width, limit or WHOLE_LINES  # --wide: as wide as the table, past the screen's edge
    try:
        if out.is_terminal:
            out.print(table)
        else:  # no padding to the column's width at the end of a line, for diff, grep and awk
            with out.capture() as captured:
                out.print(table)
            out.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    finally:
        out.width = screen
    if hidden:
        err.print(f"hidden at {limit} columns: {', '.join(hidden)} (--wide shows them)", markup=False, style="dim")


def fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"

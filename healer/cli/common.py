"""What every command shares: the error-handling Typer subclass, the store, and stdout as table or JSON."""

import functools
import json
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from healer import paths
from healer.errors import HealerError
from healer.store import Store, describe_db_error

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:
    out.width = max(out.width, 160)  # piped or captured output: wide tables, not rows wrapped at 80 columns
err = Console(stderr=True, highlight=False, soft_wrap=True)


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


def open_store() -> Store:
    return Store(paths.db_path())


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> None:
    table = Table(*columns, title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    out.print(table)


def fmt(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}g}"

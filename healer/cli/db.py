"""`healer db path` and `healer sql`: where the store is, and read-only SQL over it."""

from typing import Annotated

import typer

from healer import paths
from healer.cli.common import App, Column, out, print_json, print_table
from healer.errors import HealerError
from healer.store import Store, query_read_only
from healer.store.schema import schema_version

app = App(help="The SQLite store.")


@app.command("path")
def db_path() -> None:
    """Print the path of the database file."""
    out.print(str(paths.db_path()), markup=False)


@app.command("migrate")
def migrate() -> None:
    """Bring the database's schema up to this healer version (any write does it too; reads never do)."""
    path = paths.db_path()
    if not path.exists():
        raise HealerError(f"no database at {path}; run something first or pass --db")
    with Store(path) as store:
        version = schema_version(store.conn)
    out.print(f"{path}: schema {version}", markup=False)


def sql(
    query: Annotated[str, typer.Argument(help="one SELECT statement")],
    json_out: Annotated[bool, typer.Option("--json", help="print a JSON list of objects")] = False,
) -> None:
    """Run one read-only SELECT against the database; writes are rejected."""
    columns, rows = query_read_only(paths.db_path(), query)
    if json_out:
        print_json([dict(zip(columns, row, strict=True)) for row in rows])
    else:
        print_table([Column(c, fold=True, min_width=8) for c in columns], rows)


def register(root: App) -> None:
    root.add_typer(app, name="db")
    root.command("sql")(sql)

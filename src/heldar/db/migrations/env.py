"""Alembic environment. The kernel passes its own connection (see heldar.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from heldar.db.schema import metadata

config = context.config
connection = config.attributes.get("connection")


def _configure_and_run(conn: object) -> None:
    context.configure(
        connection=conn,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite needs batch mode for ALTER
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _configure_and_run(connection)
else:
    # Standalone use (`alembic revision --autogenerate` during development): a sync URL.
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("set sqlalchemy.url (a sync SQLite URL) to run Alembic standalone")
    engine = create_engine(url.replace("+aiosqlite", ""), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _configure_and_run(conn)

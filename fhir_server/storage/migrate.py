"""Bring a database up to date with Alembic (called by `serve` and the tests)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


# pg_advisory_lock key shared by every process that migrates or seeds at start-up
STARTUP_LOCK_KEY = 0x0F41_2001


@contextmanager
def startup_lock(engine: Engine) -> Iterator[None]:
    """Serialise start-up work (migrations, seeding) across processes.

    PostgreSQL: a session-level advisory lock held on a connection of its own
    while the work runs on others, so any number of `serve --workers N`
    processes (or servers) can start at once. SQLite: its writers already
    queue (`BEGIN IMMEDIATE`) but give up after the busy timeout, so start-up work
    also takes an exclusive file lock beside the database file."""
    if engine.dialect.name == "sqlite":
        with _sqlite_file_lock(engine):
            yield
        return
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": STARTUP_LOCK_KEY})
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": STARTUP_LOCK_KEY})


@contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """An exclusive lock on `<database file>.startup-lock` (waits as long as it takes:
    SQLite's own busy timeout would fail a process whose turn comes after 30 s)."""
    import fcntl

    path = engine.url.database
    if not path or path == ":memory:" or path.startswith("file:"):
        yield
        return
    with open(f"{path}.startup-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (one process at a time, see startup_lock)."""
    with startup_lock(engine), engine.connect() as conn:
        conn.info["write"] = True
        command.upgrade(alembic_config(conn), revision)
        conn.commit()
        conn.info["write"] = False


def autogenerate(engine: Engine, message: str) -> None:
    """Developer helper: write a new revision from the schema's difference."""
    with engine.connect() as conn:
        command.revision(alembic_config(conn), message=message, autogenerate=True)

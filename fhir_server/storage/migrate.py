"""Bring a database up to date with Alembic (called by `serve` and the tests)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection=None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.connect() as conn:
        conn.info["write"] = True
        command.upgrade(alembic_config(conn), revision)
        conn.commit()
        conn.info["write"] = False


def autogenerate(engine: Engine, message: str) -> None:
    """Developer helper: write a new revision from the schema's difference."""
    with engine.connect() as conn:
        command.revision(alembic_config(conn), message=message, autogenerate=True)

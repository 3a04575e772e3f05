"""A database no other test touches: a new SQLite file, or a new PostgreSQL schema (a
schema, not a database, so the suite needs no CREATEDB right), dropped afterwards."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from sqlalchemy import create_engine, text


@contextmanager
def isolated_database_url(database_url: str, sqlite_file: Path, prefix: str) -> Iterator[str]:
    """Yield a URL of a fresh, empty database beside the suite's `database_url`."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{sqlite_file}"
        return
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in database_url else "?"
    try:
        yield f"{database_url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

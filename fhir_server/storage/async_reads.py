"""Read-by-id on PostgreSQL without a thread: an asyncio psycopg pool.

Reading one resource by id is the hottest request a FHIR server serves. Run
through SQLAlchemy on the thread pool it costs two thread hand-offs and the
GIL contention of many threads; awaited on the event loop with psycopg's async
driver it costs one round trip. Everything else still uses the sync engine.
"""

from __future__ import annotations

from datetime import timezone

from sqlalchemy.engine import make_url

from .repository import StoredResource

_SQL = (
    "SELECT pk, res_type, res_id, version_id, last_updated, deleted, content "
    "FROM resources WHERE res_type = %s AND res_id = %s"
)


def _conninfo(url: str) -> str:
    u = make_url(url)
    parts = {
        "host": u.host or "localhost",
        "port": str(u.port or 5432),
        "dbname": u.database or "",
        "user": u.username or "",
        "password": u.password or "",
    }
    from .db import _pg_options

    parts["options"] = _pg_options(url)
    return " ".join(f"{k}='{v}'" for k, v in parts.items() if v)


class AsyncReader:
    def __init__(self, url: str, size: int):
        from psycopg_pool import AsyncConnectionPool

        self.pool = AsyncConnectionPool(
            _conninfo(url), min_size=2, max_size=size, open=False, kwargs={"autocommit": True}
        )

    async def open(self) -> None:
        await self.pool.open()

    async def close(self) -> None:
        await self.pool.close()

    async def read_current(self, res_type: str, res_id: str) -> StoredResource | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_SQL, (res_type, res_id))
            row = await cur.fetchone()
        if row is None:
            return None
        pk, rtype, rid, vid, updated, deleted, content = row
        updated = updated.astimezone(timezone.utc) if updated.tzinfo else updated.replace(tzinfo=timezone.utc)
        return StoredResource(pk, rtype, rid, vid, updated, bool(deleted), bytes(content) if content is not None else None)

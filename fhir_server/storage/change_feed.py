"""A change feed in commit order: what a registry pulls without gaps or repeats.

Why not `_lastUpdated=gt<last>`: a version's timestamp (and its sequence
number) is taken before its transaction commits, so a transaction that started
earlier can commit later, with an older stamp than rows the reader has already
seen; the reader's next `gt` then skips it for ever.

The feed: every write of a feed type adds a row (seq, txid, type, id, version)
in the write's transaction.
- PostgreSQL: txid is the writer's transaction id (`pg_current_xact_id()`).
  A read returns only rows with txid below `pg_snapshot_xmin` of its own
  snapshot: every transaction with a smaller id has finished (committed or
  rolled back), and every transaction still running or yet to start has an id
  at or above it. Rows are ordered by (txid, seq) and the cursor is the last
  (txid, seq) returned, so a row appears after the cursor exactly once. A
  long-running write transaction holds the feed back (lag), never loses rows.
- SQLite: writers commit one at a time (BEGIN IMMEDIATE), so seq is already
  commit order; txid is 0.
"""

from __future__ import annotations

import base64

import orjson
from sqlalchemy import Connection, and_, literal_column, or_, select, text

from ..errors import FhirError
from .schema import change_feed, resource_versions

_TXID = "change_feed_txid"


def _txid(conn: Connection) -> int:
    """The writing transaction's id, asked once per transaction (0 on SQLite)."""
    if conn.dialect.name != "postgresql":
        return 0
    tx = conn.get_transaction()
    cached = conn.info.get(_TXID)
    if cached is not None and cached[0] is tx:
        return cached[1]
    txid = int(conn.execute(text("SELECT pg_current_xact_id()::text::bigint")).scalar_one())
    conn.info[_TXID] = (tx, txid)
    return txid


def record(conn: Connection, res_type: str, res_id: str, version_id: int) -> None:
    """Add a written version to the feed (inside the write's transaction; buffered
    with the version rows, so a transaction Bundle pays one round trip for its txid)."""
    from .repository import buffer_rows

    buffer_rows(conn, change_feed, [{"txid": _txid(conn), "res_type": res_type, "res_id": res_id, "version_id": version_id}])


def encode_cursor(txid: int, seq: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"t": txid, "s": seq})).decode().rstrip("=")


def decode_cursor(token: str | None) -> tuple[int, int]:
    if not token:
        return (-1, -1)
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return int(data["t"]), int(data["s"])
    except Exception:
        raise FhirError.of(400, "invalid", "Invalid _cursor: pass the value from the previous answer's next link", "_cursor") from None


def read_after(conn: Connection, cursor: tuple[int, int], types: list[str], limit: int, res_ids: list[str] | None = None) -> list:
    """Up to `limit` feed rows after `cursor`, in commit order, joined with their
    versions: (txid, seq, res_type, res_id, version_id, last_updated, method, deleted, content).
    `res_ids` restricts to those ids (at most a few thousand)."""
    f, v = change_feed.c, resource_versions.c
    txid, seq = cursor
    conds = [or_(f.txid > txid, and_(f.txid == txid, f.seq > seq)), f.res_type.in_(types)]
    if res_ids is not None:
        conds.append(f.res_id.in_(res_ids[:5000]))
    if conn.dialect.name == "postgresql":
        conds.append(f.txid < literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint"))
    stmt = (
        select(f.txid, f.seq, v.res_type, v.res_id, v.version_id, v.last_updated, v.method, v.deleted, v.content)
        .join(resource_versions, and_(v.res_type == f.res_type, v.res_id == f.res_id, v.version_id == f.version_id))
        .where(*conds)
        .order_by(f.txid, f.seq)
        .limit(limit)
    )
    return list(conn.execute(stmt))

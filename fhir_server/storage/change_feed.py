"""A change feed in commit order: what a registry pulls without gaps or repeats.

Why not `_lastUpdated=gt<last>`: a version's timestamp (and its sequence
number) is taken before its transaction commits, so a transaction that started
earlier can commit later, with an older stamp than rows the reader has already
seen; the reader's next `gt` then skips it for ever.

The feed: every write of a feed type adds a row (seq, txid, type, id, version)
in the write's transaction.
- PostgreSQL: txid is the writer's transaction id (`pg_current_xact_id()`).
  A read first computes a bound B in one statement, then reads rows with
  txid < B in a second statement (a later snapshot). B is the smallest of
  the xmax of the first statement's snapshot (every id at or above it is
  still running or not yet handed out) and the ids of the transactions still
  running in THIS database (pg_stat_activity.backend_xid where datname is the
  current database, plus prepared transactions of this database), read after
  that snapshot was taken (pg_stat_activity shows datid and backend_xid of
  every session to every role: no monitoring privilege needed). An id below
  xmax was handed out before the snapshot, so if its transaction still runs
  when pg_stat_activity is read, it is seen there. So every transaction of
  this database with an id below B had finished before the second
  statement's snapshot: its rows are
  there (committed) or never will be (rolled back). Transactions of other
  databases on the same cluster do not hold the feed back (the cluster-wide
  pg_snapshot_xmin did: a long transaction anywhere on a shared server
  stalled the feed). Rows are ordered by (txid, seq) and the cursor is the
  last (txid, seq) returned, so a row appears after the cursor exactly once.
  A long-running transaction of this database that has an id (it wrote
  something) holds the feed back (lag), never loses rows.
- SQLite: writers commit one at a time (BEGIN IMMEDIATE), so seq is already
  commit order; txid is 0.
"""

from __future__ import annotations

import base64

import orjson
from sqlalchemy import Connection, and_, or_, select, text

from ..errors import FhirError
from .database import transaction_memo
from .schema import change_feed, resource_versions

_TXID = "change_feed_txid"


def _txid(conn: Connection) -> int:
    """The writing transaction's id, asked once per transaction (0 on SQLite)."""
    if conn.dialect.name != "postgresql":
        return 0
    memo = transaction_memo(conn, _TXID)
    if "txid" not in memo:
        memo["txid"] = int(conn.execute(text("SELECT pg_current_xact_id()::text::bigint")).scalar_one())
    return memo["txid"]


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
        conds.append(f.txid < visible_bound(conn))
    stmt = (
        select(f.txid, f.seq, v.res_type, v.res_id, v.version_id, v.last_updated, v.method, v.deleted, v.content)
        .join(resource_versions, and_(v.res_type == f.res_type, v.res_id == f.res_id, v.version_id == f.version_id))
        .where(*conds)
        .order_by(f.txid, f.seq)
        .limit(limit)
    )
    return list(conn.execute(stmt))


# The bound, in one statement: its snapshot is taken before pg_stat_activity is
# read. backend_xid is a 32-bit xid; it is widened to the 64-bit id (epoch
# included) by its signed distance from the snapshot's xmax (running ids are
# always within 2^31 of it: PostgreSQL's wraparound protection).
_BOUND_SQL = text("""
WITH s AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax),
running AS (
    SELECT backend_xid AS xid FROM pg_stat_activity
     WHERE datname = current_database() AND backend_xid IS NOT NULL
    UNION ALL
    SELECT transaction FROM pg_prepared_xacts WHERE database = current_database()
)
SELECT LEAST(s.xmax, MIN(s.xmax + ((r.xid::text::bigint - s.xmax % 4294967296) % 4294967296
                                   + 4294967296 + 2147483648) % 4294967296 - 2147483648))
  FROM s LEFT JOIN running r ON true GROUP BY s.xmax
""")


def visible_bound(conn: Connection) -> int:
    """PostgreSQL: the 64-bit transaction id B below which every transaction of
    this database has finished (see the module docstring). Must be followed by
    the statement that reads the feed (a new snapshot: reads run in autocommit;
    inside a READ COMMITTED write each statement has its own snapshot too)."""
    if conn.info.get("write"):
        # pg_stat_activity is cached for the rest of a transaction once read
        conn.execute(text("SELECT pg_stat_clear_snapshot()"))
    return int(conn.execute(_BOUND_SQL).scalar_one())

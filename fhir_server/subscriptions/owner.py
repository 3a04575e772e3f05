"""What a subscription's owner may see: the authz seam asked about ONE resource version.

A subscription delivers only what the principal that created (or last changed) it
may read (issue 17, "Security"). Asking the seam's `authorize` answers that at the
level of the type (does the token hold `r` on Observation?); a `patient/` token, a
`user/` token of a Patient, a granular scope (`?category=...`) or a consent policy
narrows it further to criteria (`security.authz.visibility`). Those criteria are
search criteria, so the question "is this version within them" is asked the way a
read asks it, through the search index:

- the version just written (a create/update in its own transaction) or the current
  live version at delivery: `search.access.visible` on the stored index;
- any other version (a deletion's last version, an older version when the resource
  has changed since): that version is indexed inside a SAVEPOINT which is rolled
  back (`indexed_as`), then the same query runs.

No criteria (a `system/` owner, staff) costs nothing beyond `authorize`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, select, update

from ..errors import FhirError
from ..security.authz import AccessRequest, Principal, authorize, visibility


@contextmanager
def indexed_as(conn: Connection, res_type: str, res_id: str, content: dict) -> Iterator[bool]:
    """Within the block, the search index shows (res_type, res_id) as live with `content`.

    Everything is undone when the block ends (a SAVEPOINT rolled back). Yields False
    when the resource has no row at all (nothing can then match)."""
    from ..search.indexer import delete_index, index_resource
    from ..storage import repository as repo
    from ..storage.schema import resources

    repo.flush(conn)
    pk = conn.execute(select(resources.c.pk).where(resources.c.res_type == res_type,
                                                   resources.c.res_id == res_id)).scalar()
    if pk is None:
        yield False
        return
    savepoint = conn.begin_nested()
    try:
        conn.execute(update(resources).where(resources.c.pk == pk).values(deleted=False))
        delete_index(conn, pk)
        index_resource(conn, pk, res_type, content)
        yield True
    finally:
        conn.info.pop(repo._BUFFER_KEY, None)  # rows buffered in the savepoint die with it
        savepoint.rollback()


def restricted(owner: Principal, res_type: str) -> bool:
    """Whether the owner's reach into `res_type` is narrower than the whole type
    (then a check needs the database, and a version other than the current one a
    writable connection)."""
    return not owner.unrestricted and bool(visibility(owner, res_type, "r"))  # None: all; []: nothing (no query either way)


def may_see(conn: Connection, owner: Principal, res_type: str, res_id: str, content: dict | None,
            current: bool) -> bool:
    """Whether `owner` may read this version of `res_type/res_id`.

    `content` is the version's JSON (None for a version without content);
    `current` says the version is the resource's live, indexed one in `conn`'s view.
    Otherwise the version is indexed in a rolled-back savepoint, so `conn` must be
    able to write (a read-only autocommit connection answers False for it)."""
    try:
        authorize(owner, AccessRequest("read", res_type, res_id, content))
    except FhirError:
        return False
    vis = visibility(owner, res_type, "r")
    if vis is None:
        return True
    if not vis:
        return False
    from ..search.access import visible

    if current:
        return visible(conn, res_type, res_id, vis)
    if content is None:
        return False
    with indexed_as(conn, res_type, res_id, content) as present:
        return present and visible(conn, res_type, res_id, vis)


def event_focus(conn: Connection, owner: Principal, res_type: str, res_id: str, version_id: int,
                method: str | None) -> tuple[bytes | None, bool]:
    """(the stored version's content, whether `owner` may see it) for an outbox event.

    A deletion is judged on the version it deleted. Needs a writable `conn` when
    `restricted(owner, res_type)` (see may_see)."""
    import json

    from ..storage import repository as repo

    stored = repo.read_version(conn, res_type, res_id, version_id)
    content = stored.content if stored is not None else None
    doc = json.loads(content) if content else None
    if doc is None and method == "delete" and version_id > 1:
        prior = repo.read_version(conn, res_type, res_id, version_id - 1)
        doc = json.loads(prior.content) if prior is not None and prior.content else None
    latest = repo.read_current(conn, res_type, res_id)
    current = latest is not None and not latest.deleted and latest.version_id == version_id
    return content, may_see(conn, owner, res_type, res_id, doc, current)

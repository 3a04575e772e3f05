"""Load the shipped terminology (``terminology/``) into the database, once per package version.

Runs at start-up (the ``on_database`` plugin hook). The files' combined
SHA-256 is recorded in ``load_progress``; while it is there nothing is read,
so a normal start costs one SELECT. A new package (re-derived files) is loaded
again in one transaction: every CodeSystem, ValueSet and ConceptMap is written
with PUT semantics (same ids), validated and indexed like any client write,
so ``CodeSystem?url=...`` and the rest of search work on them. Clients add
their own terminology resources with ordinary creates and updates.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone

from sqlalchemy import select

from ..storage import repository as repo
from ..storage.schema import load_progress, resources
from .package import iter_resources, package_paths

log = logging.getLogger("fhir_server.terminology")
TERMINOLOGY_TYPES = ("CodeSystem", "ValueSet", "ConceptMap")


def package_digest() -> str:
    h = hashlib.sha256()
    for path in package_paths():
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _loaded(conn, digest: str) -> bool:
    row = conn.execute(select(load_progress.c.done).where(load_progress.c.content_hash == digest)).first()
    return bool(row and row[0])


def load_package(db) -> int:
    """Write the package into the database unless this version is there already; returns resources written."""
    from ..rest import interactions as ix
    from ..rest.context import RequestContext

    paths = package_paths()
    if not paths:
        return 0
    digest = package_digest()
    with db.read() as conn:
        if _loaded(conn, digest):
            return 0
    ctx = RequestContext(base_url="")
    written = 0
    with db.write() as conn:
        repo.lock_key(conn, "terminology-package")
        if _loaded(conn, digest):  # another worker process loaded it meanwhile
            return 0
        present = set(tuple(r) for r in conn.execute(select(resources.c.res_type, resources.c.res_id)
                                   .where(resources.c.res_type.in_(TERMINOLOGY_TYPES))).all())
        for resource in iter_resources(paths):
            rt, rid = resource["resourceType"], resource["id"]
            parsed = ix.ParsedResource.from_preserving(resource)
            # derived from the official definitions and checked by tests/terminology/test_package.py:
            # the write skips re-validating 2,400 resources at start-up
            parsed.validated_as = rt
            if (rt, rid) in present:
                ix.update(conn, ctx, rt, rid, parsed)
            else:  # a create needs no read of the current version, so rows stay buffered until COMMIT
                ix.create(conn, ctx, rt, parsed, res_id=rid)
            written += 1
        now = datetime.now(timezone.utc)
        conn.execute(load_progress.insert().values(content_hash=digest, path="terminology/", units_done=written,
                                                   done=True, updated=now))
    log.info("terminology package loaded: %d resources", written)
    return written

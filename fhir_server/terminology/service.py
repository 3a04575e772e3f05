"""Canonical terminology resources for the operations, from the database first, then the shipped package.

``DbResolver(conn)`` answers ``code_system(url)`` / ``value_set(url)`` /
``concept_map(url)`` for the expansion engine and the operations: a
resource stored on the server (found through the ``url`` search index, so
clients' own CodeSystems and ValueSets count) wins over the shipped package,
which answers when the database has none (e.g. with
``FHIR_SERVER_TERMINOLOGY_LOAD=false``). Compiled CodeSystems are cached per
(type, id, versionId), so a change to a stored resource is seen at once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import orjson
from sqlalchemy import Connection, select

from ..storage.schema import resources
from .codesystem import CodeSystemIndex
from .expand import split_canonical
from .package import package_resolver

_CACHE_SIZE = 256
_cache: OrderedDict[tuple, object] = OrderedDict()
_lock = threading.Lock()


def _cached(key: tuple, build):
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = build()
    with _lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


class DbResolver:
    """Resolver over one database connection (see module docstring)."""

    def __init__(self, conn: Connection | None) -> None:
        self.conn = conn

    def _stored(self, res_type: str, url: str, version: str | None) -> tuple[tuple, dict | None] | None:
        if self.conn is None:
            return None
        from ..search.engine import find_matches

        params = [("url", url)] + ([("version", version)] if version else [])
        matches = find_matches(self.conn, res_type, params, limit=20)
        if not matches:
            return None
        pks = [pk for pk, _ in matches]
        rows = self.conn.execute(select(resources.c.pk, resources.c.res_id, resources.c.version_id, resources.c.last_updated)
                                 .where(resources.c.pk.in_(pks))).all()
        pk, res_id, version_id, _ = max(rows, key=lambda r: (r.last_updated, r.pk))  # the latest written wins
        key = (self.conn.engine.url.render_as_string(hide_password=True), res_type, res_id, version_id)

        def load():
            content = self.conn.execute(select(resources.c.content).where(resources.c.pk == pk)).scalar_one()
            return orjson.loads(content)

        return key, _cached(key + ("json",), load)

    def resource(self, res_type: str, canonical: str) -> dict | None:
        url, version = split_canonical(canonical)
        found = self._stored(res_type, url, version)
        if found is not None:
            return found[1]
        return package_resolver().resource(res_type, url)

    def code_system(self, url: str, version: str | None = None) -> CodeSystemIndex | None:
        found = self._stored("CodeSystem", url, version)
        if found is not None:
            key, doc = found
            return _cached(key + ("index",), lambda: CodeSystemIndex(doc))
        return package_resolver().code_system(url, version)

    def value_set(self, url: str, version: str | None = None) -> dict | None:
        found = self._stored("ValueSet", url, version)
        if found is not None:
            return found[1]
        return package_resolver().value_set(url, version)

    def concept_map(self, url: str, version: str | None = None) -> dict | None:
        found = self._stored("ConceptMap", url, version)
        if found is not None:
            return found[1]
        return package_resolver().resource("ConceptMap", url)

"""`fhir-server load`: bulk-load bundles, single resources and NDJSON files.

Runs in-process on the database (no HTTP), through the same transaction code
as `POST /fhir`, so every resource is validated and indexed as usual. Re-runs
are resumable: a finished file (by content hash) is skipped, and an NDJSON
file continues after its last committed chunk.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import select

from .config import Settings
from .errors import FhirError
from .model import jsonio
from .rest import interactions as ix
from .rest.bundles import process_batch, process_transaction
from .rest.context import RequestContext
from .storage.database import Database
from .storage.schema import load_progress

NDJSON_CHUNK = 200


@dataclass
class FileResult:
    path: str
    resources: int = 0
    skipped: bool = False
    failures: list[str] = field(default_factory=list)


def discover(paths: list[str]) -> list[Path]:
    """Files to load: given files, and *.json / *.ndjson below given folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(x for x in p.rglob("*") if x.suffix in (".json", ".ndjson") and x.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(p)
    # Synthea: shared practitioners/organisations must exist before patients refer to them.
    out.sort(key=lambda x: (0 if x.name.startswith(("hospitalInformation", "practitionerInformation")) else 1, str(x)))
    return out


def _progress(db: Database, digest: str):
    with db.read() as conn:
        return conn.execute(select(load_progress).where(load_progress.c.content_hash == digest)).first()


def _record(conn, digest: str, path: Path, units: int, done: bool) -> None:
    now = datetime.now(timezone.utc)
    exists = conn.execute(select(load_progress.c.content_hash).where(load_progress.c.content_hash == digest)).first()
    if exists:
        conn.execute(load_progress.update().where(load_progress.c.content_hash == digest).values(units_done=units, done=done, updated=now))
    else:
        conn.execute(load_progress.insert().values(content_hash=digest, path=str(path), units_done=units, done=done, updated=now))


def _load_resource(conn, ctx: RequestContext, resource: dict) -> int:
    """One resource: PUT when it has an id (idempotent on re-run), else POST."""
    parsed = ix.ParsedResource.from_preserving(resource)
    rtype = parsed.plain.get("resourceType")
    if not isinstance(rtype, str):
        raise FhirError.of(400, "invalid", "resourceType missing")
    if rtype == "AuditEvent" and isinstance(parsed.plain.get("id"), str):
        # the access log is append-only (no update): an event is added once under its own id
        from .audit.log import read as read_event

        if read_event(conn, parsed.plain["id"]) is None:
            ix.create(conn, ctx, rtype, parsed, res_id=parsed.plain["id"])
    elif parsed.plain.get("id"):
        ix.update(conn, ctx, rtype, parsed.plain["id"], parsed)
    else:
        ix.create(conn, ctx, rtype, parsed)
    return 1


def load_file(db: Database, settings: Settings, path: Path) -> FileResult:
    result = FileResult(str(path))
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    prior = _progress(db, digest)
    if prior is not None and prior.done:
        result.skipped = True
        return result
    ctx = RequestContext(base_url="")
    if path.suffix == ".ndjson":
        lines = [ln for ln in raw.splitlines() if ln.strip()]
        start = prior.units_done if prior is not None else 0
        for i in range(start, len(lines), NDJSON_CHUNK):
            chunk = lines[i : i + NDJSON_CHUNK]
            try:
                with db.write() as conn:
                    loaded = sum(_load_resource(conn, ctx, jsonio.parse_preserving(ln)) for ln in chunk)
                    _record(conn, digest, path, i + len(chunk), i + len(chunk) >= len(lines))
                result.resources += loaded
            except FhirError:
                # fall back to one line at a time so one bad line does not sink its chunk
                for j, ln in enumerate(chunk):
                    try:
                        with db.write() as conn:
                            result.resources += _load_resource(conn, ctx, jsonio.parse_preserving(ln))
                    except FhirError as e:
                        result.failures.append(f"line {i + j + 1}: {e.issues[0].diagnostics if e.issues else e}")
                with db.write() as conn:
                    _record(conn, digest, path, i + len(chunk), i + len(chunk) >= len(lines))
        return result
    try:
        doc = jsonio.parse_preserving(raw)
        if isinstance(doc, dict) and doc.get("resourceType") == "Bundle" and doc.get("type") in ("transaction", "batch"):
            if doc["type"] == "transaction":
                with db.write() as conn:
                    response = process_transaction(conn, ctx, doc, settings)
                    result.resources += len(response["entry"])
                    _record(conn, digest, path, 1, True)
            else:
                response = process_batch(db, ctx, doc, settings)
                for k, e in enumerate(response["entry"]):
                    if e["response"]["status"][:1] in ("2",):
                        result.resources += 1
                    else:
                        result.failures.append(f"entry {k}: {e['response'].get('outcome', {}).get('issue', [{}])[0].get('diagnostics')}")
                with db.write() as conn:
                    _record(conn, digest, path, 1, True)
        elif isinstance(doc, dict) and "resourceType" in doc:
            with db.write() as conn:
                result.resources += _load_resource(conn, ctx, doc)
                _record(conn, digest, path, 1, True)
        else:
            result.failures.append("not a FHIR resource, Bundle or NDJSON file")
    except FhirError as exc:
        result.failures.append("; ".join(i.diagnostics for i in exc.issues) or str(exc))
    return result


def _worker_load(database_url: str, path: str) -> FileResult:
    from .plugins import install

    settings = Settings(database_url=database_url)
    install(settings)
    key = (os.getpid(), database_url)  # never share a connection pool across fork()
    db = _worker_db.get(key) or _worker_db.setdefault(key, Database(database_url))
    return load_file(db, settings, Path(path))


_worker_db: dict[tuple[int, str], Database] = {}


def load_paths(settings: Settings, paths: list[str], workers: int = 1, on_file=None) -> list[FileResult]:
    """Load everything under `paths`; `on_file(result)` is called as each file finishes."""
    files = discover(paths)
    url = settings.resolved_database_url()
    results: list[FileResult] = []
    if workers <= 1:
        from .plugins import install

        install(settings)
        db = Database(url)
        for f in files:
            r = load_file(db, settings, f)
            results.append(r)
            if on_file:
                on_file(r)
        _refresh_statistics(db)
        return results
    # Shared reference data first, in order; the rest in parallel.
    first = [f for f in files if f.name.startswith(("hospitalInformation", "practitionerInformation"))]
    rest = [f for f in files if f not in first]
    for f in first:
        r = _worker_load(url, str(f))
        results.append(r)
        if on_file:
            on_file(r)
    for db in _worker_db.values():
        db.dispose()
    _worker_db.clear()
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_worker_load, url, str(f)) for f in rest]
        for fut in as_completed(futures):
            r = fut.result()
            results.append(r)
            if on_file:
                on_file(r)
    _refresh_statistics(Database(url))
    return results


def _refresh_statistics(db: Database) -> None:
    """PostgreSQL: the planner statistics of the tables the load filled, taken before the
    server plans its first search on them (storage.planner_statistics)."""
    from .storage.planner_statistics import analyze_grown_tables, wait_idle

    wait_idle(db.engine)  # this process's own looks, before their connections close
    db.dispose()  # each connection's counts of changed rows reach PostgreSQL's statistics as it closes
    if db.dialect != "postgresql":
        return
    time.sleep(0.5)  # ... which its backend does as it exits, a moment after the client has gone
    try:
        analyze_grown_tables(db.engine)
    finally:
        db.dispose()


def count_resources(paths: list[str]) -> int:
    """Rough total for the progress bar: entries in bundles, lines in NDJSON."""
    total = 0
    for f in discover(paths):
        if f.suffix == ".ndjson":
            total += sum(1 for ln in f.read_bytes().splitlines() if ln.strip())
        else:
            try:
                doc = jsonio.parse_plain(f.read_bytes())
            except FhirError:
                continue
            total += len(doc.get("entry") or []) if isinstance(doc, dict) and doc.get("resourceType") == "Bundle" else 1
    return total


__all__ = ["load_paths", "load_file", "discover", "count_resources"]

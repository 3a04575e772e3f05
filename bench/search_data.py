"""Synthetic search-benchmark data: Synthea bundles cloned with new ids, bulk-loaded.

The expensive part of the normal write path is the search-value extraction
(about 1.5 ms per resource). Here it runs once per *template* resource: every
Synthea bundle is turned into a template (urn:uuid references resolved to
``Type/id`` as a transaction would store them, plus synthetic Schedules, Slots
and Appointments since Synthea has none), its stored JSON and its index rows
are rendered once into ``str.format`` strings whose fields are the bundle's
*tokens* (resource ids and the patient's identifier values) and the rows'
``res_pk``. A clone ``(c, b)`` of bundle ``b`` is then one ``format`` call per
resource and index table, with every token rewritten for that clone:

* ids (36-char uuids) keep their length: the first 8 hex digits become
  ``f"{c:05x}{b:03x}"``, unique per (clone, bundle);
* other identifier values (SSN, driver's licence, passport) get ``-<prefix>``.

Rows go in with ``COPY ... FROM STDIN`` on PostgreSQL (text format for the
index tables, binary for the ``content`` bytes) and ``executemany`` on SQLite,
with the secondary indexes dropped during the load and rebuilt afterwards, and
foreign-key triggers off (``session_replication_role = replica``): the data is
consistent by construction. ``resources.pk`` is assigned here and the sequence
reset afterwards.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import orjson

SYNTHEA_DIR = Path("/work/shared/data/synthea-r4")
LOAD_TIME = datetime(2025, 1, 15, 12, 0, 0, tzinfo=timezone.utc)
SCHEDULE_EPOCH = date(2024, 1, 1)  # a Monday; bundle b's schedules start b % 52 weeks later
SLOT_DAYS = (0, 1, 2, 3, 4, 7, 8, 9, 10, 11)  # two working weeks
SLOTS_PER_DAY = 4  # 09:00, 09:15, 09:30, 09:45
SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
SYNTHEA_SYSTEM = "https://github.com/synthetichealth/synthea"
LOINC = "http://loinc.org"

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Column order of the COPY / INSERT for each index table (the id column is left to its default).
INDEX_COLUMNS = {
    "string": ("value_norm", "value_exact"),
    "token": ("system", "code", "text_norm", "type_system", "type_code"),
    "date": ("low", "high"),
    "number": ("value", "low", "high"),
    "quantity": ("system", "code", "unit", "value", "low", "high", "canon_code", "canon_value"),
    "uri": ("uri",),
    "reference": ("target_type", "target_id", "url", "ident_system", "ident_value"),
    "composite": ("components",),
}
COMMON_COLUMNS = ("res_pk", "res_type", "param", "grp")


# --------------------------------------------------------------------------- templates


@dataclass
class ResTemplate:
    res_type: str
    id_token: int  # index of the resource id in the bundle's tokens
    content: str  # stored JSON with tokens as {k}-fields ({{ }} escaped)
    rows: dict[str, list[tuple]]  # kind -> rows (res_type/param/grp/columns), values raw Python


@dataclass
class BundleTemplate:
    index: int
    tokens: list[str]
    resources: list[ResTemplate]
    # what the benchmark queries need, as token indices / constants
    patient_token: int
    ssn_token: int | None
    schedules: list[tuple[int, str]]  # (schedule id token, first day yyyy-mm-dd)
    obs_query: tuple[str, str] | None  # (loinc code, date) with matches for this patient
    counts: dict[str, int] = field(default_factory=dict)


def _rewrite_refs(node: Any, urn_map: dict[str, str]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v in urn_map:
                node[k] = urn_map[v]
            else:
                _rewrite_refs(v, urn_map)
    elif isinstance(node, list):
        for v in node:
            _rewrite_refs(v, urn_map)


def _stored(res: dict) -> dict:
    """Shape of the stored JSON: resourceType, id, meta first (as the write path does)."""
    meta = dict(res.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    out = {
        "resourceType": res["resourceType"],
        "id": res["id"],
        "meta": {"versionId": "1", "lastUpdated": LOAD_TIME.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 **meta},
    }
    out.update({k: v for k, v in res.items() if k not in out})
    return out


def _sid(b: int, *parts: Any) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fhir-bench/{b}/" + "/".join(map(str, parts))))


def _scheduling(b: int, patient_id: str, practitioners: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Per Practitioner: a Schedule, 40 Slots of 15 min (25 % busy), an Appointment per busy Slot."""
    out, schedules = [], []
    first = SCHEDULE_EPOCH + timedelta(weeks=b % 52)
    for k, pr in enumerate(practitioners):
        sched_id = _sid(b, "Schedule", k)
        pref = f"Practitioner/{pr['id']}"
        name = " ".join(pr.get("name", [{}])[0].get("prefix", []) + [pr.get("name", [{}])[0].get("family", "")])
        horizon_end = first + timedelta(days=max(SLOT_DAYS) + 1)
        out.append({
            "resourceType": "Schedule", "id": sched_id, "active": True,
            "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-type",
                                         "code": "124", "display": "General Practice"}]}],
            "actor": [{"reference": pref, "display": name}],
            "planningHorizon": {"start": f"{first}T00:00:00Z", "end": f"{horizon_end}T00:00:00Z"},
        })
        schedules.append((sched_id, first.isoformat()))
        for d in SLOT_DAYS:
            day = first + timedelta(days=d)
            for j in range(SLOTS_PER_DAY):
                start = datetime(day.year, day.month, day.day, 9, 15 * j, tzinfo=timezone.utc)
                end = start + timedelta(minutes=15)
                busy = (j + d) % SLOTS_PER_DAY == 0
                slot_id = _sid(b, "Slot", k, d, j)
                s, e = start.isoformat().replace("+00:00", "Z"), end.isoformat().replace("+00:00", "Z")
                out.append({
                    "resourceType": "Slot", "id": slot_id, "schedule": {"reference": f"Schedule/{sched_id}"},
                    "status": "busy" if busy else "free", "start": s, "end": e,
                    "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-type",
                                                 "code": "124"}]}],
                })
                if busy:
                    out.append({
                        "resourceType": "Appointment", "id": _sid(b, "Appointment", k, d, j), "status": "booked",
                        "serviceType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/service-type",
                                                     "code": "124"}]}],
                        "start": s, "end": e, "minutesDuration": 15,
                        "slot": [{"reference": f"Slot/{slot_id}"}],
                        "participant": [
                            {"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"},
                            {"actor": {"reference": pref}, "status": "accepted"},
                        ],
                    })
    return out, schedules


def _fmt_escape(s: str) -> str:
    return s.replace("{", "{{").replace("}", "}}")


class _Tokenizer:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = {t: i for i, t in enumerate(tokens)}
        self.pattern = re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))

    def fmt(self, text: str) -> str:
        """`text` as a format string: tokens become {k}, braces are escaped."""
        out, last = [], 0
        for m in self.pattern.finditer(text):
            out.append(_fmt_escape(text[last:m.start()]))
            out.append("{%d}" % self.pos[m.group(0)])
            last = m.end()
        out.append(_fmt_escape(text[last:]))
        return "".join(out)

    def has(self, text: str) -> bool:
        return self.pattern.search(text) is not None


def build_bundle_template(b: int, path: Path) -> BundleTemplate:
    from fhir_server.search.indexer import extract

    bundle = json.loads(path.read_text(encoding="utf-8"))
    entries = [e for e in bundle.get("entry", []) if isinstance(e.get("resource"), dict)]
    urn_map = {}
    for e in entries:
        r = e["resource"]
        if e.get("fullUrl", "").startswith("urn:uuid:"):
            urn_map[e["fullUrl"]] = f"{r['resourceType']}/{r['id']}"
    res_list = [e["resource"] for e in entries]
    for r in res_list:
        _rewrite_refs(r, urn_map)
    patient = next((r for r in res_list if r["resourceType"] == "Patient"), None)
    practitioners = [r for r in res_list if r["resourceType"] == "Practitioner"]
    schedules: list[tuple[str, str]] = []
    if patient is not None:  # (a few bundles hold only Organizations / Practitioners)
        extra, schedules = _scheduling(b, patient["id"], practitioners)
        res_list += extra

    ids = [r["id"] for r in res_list]
    assert all(UUID_RE.match(i) for i in ids), "expected uuid ids"
    idents = []
    ssn = None
    for ident in (patient or {}).get("identifier", []):
        v = ident.get("value")
        if isinstance(v, str) and v not in ids and len(v) >= 6:
            idents.append(v)
            if ident.get("system") == SSN_SYSTEM:
                ssn = v
    tokens = list(dict.fromkeys(ids + idents))
    tk = _Tokenizer(tokens)

    templates = []
    counts: dict[str, int] = {}
    obs_by_code: dict[str, list[str]] = {}
    for r in res_list:
        rt = r["resourceType"]
        counts[rt] = counts.get(rt, 0) + 1
        content = orjson.dumps(_stored(r)).decode()
        index = extract(rt, r)
        rows: dict[str, list[tuple]] = {}
        for kind, krows in index.items():
            if not krows:
                continue
            cols = INDEX_COLUMNS[kind]
            rows[kind] = [(rt, row["param"], row.get("grp")) + tuple(row.get(c) for c in cols) for row in krows]
        templates.append(ResTemplate(rt, tk.pos[r["id"]], tk.fmt(content), rows))
        if rt == "Observation" and isinstance(r.get("effectiveDateTime"), str):
            for c in r.get("code", {}).get("coding", []):
                if c.get("system") == LOINC:
                    obs_by_code.setdefault(c["code"], []).append(r["effectiveDateTime"][:10])
    obs_query = None
    if obs_by_code:
        code, dates = max(obs_by_code.items(), key=lambda kv: len(kv[1]))
        dates.sort()
        obs_query = (code, dates[len(dates) // 2])
    return BundleTemplate(
        index=b, tokens=tokens, resources=templates, patient_token=tk.pos[patient["id"]] if patient else -1,
        ssn_token=tk.pos[ssn] if ssn else None, schedules=[(tk.pos[s], d) for s, d in schedules],
        obs_query=obs_query, counts=counts,
    )


def load_templates(data_dir: Path = SYNTHEA_DIR, cache_dir: Path | None = None, log=print) -> list[BundleTemplate]:
    files = sorted(glob.glob(str(data_dir / "*.json")))
    if not files:
        raise SystemExit(f"no Synthea bundles in {data_dir}")
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
    src = Path(__file__).read_bytes() + Path(__import__("fhir_server.search.indexer", fromlist=["x"]).__file__).read_bytes()
    h.update(hashlib.sha256(src).digest())
    cache = (cache_dir or Path("/tmp")) / f"fhir-search-bench-templates-{h.hexdigest()[:16]}.pickle"
    if cache.exists():
        log(f"templates: cached {cache}")
        return pickle.loads(cache.read_bytes())
    t0 = time.perf_counter()
    out = [build_bundle_template(b, Path(f)) for b, f in enumerate(files)]
    n = sum(len(t.resources) for t in out)
    log(f"templates: {len(out)} bundles, {n} resources, extracted in {time.perf_counter() - t0:.1f}s")
    cache.write_bytes(pickle.dumps(out, protocol=pickle.HIGHEST_PROTOCOL))
    return out


# --------------------------------------------------------------------------- clones


def clone_prefix(c: int, b: int) -> str:
    return f"{c:05x}{b:03x}"


def clone_tokens(t: BundleTemplate, c: int) -> list[str]:
    p = clone_prefix(c, t.index)
    return [p + tok[8:] if len(tok) == 36 and UUID_RE.match(tok) else f"{tok}-{p}" for tok in t.tokens]


def plan_clones(templates: list[BundleTemplate], size: int) -> list[tuple[int, int]]:
    """(clone, bundle) pairs, round robin over bundles, until at least `size` resources."""
    out, total, c = [], 0, 0
    while total < size:
        for t in templates:
            out.append((c, t.index))
            total += len(t.resources)
            if total >= size:
                break
        c += 1
    return out


@dataclass
class QuerySample:
    patient_id: str
    ssn: str | None
    schedule_id: str
    schedule_first_day: str
    obs_code: str | None
    obs_date: str | None


def query_samples(templates: list[BundleTemplate], clones: list[tuple[int, int]], n: int, seed: int = 7) -> list[QuerySample]:
    import random

    rng = random.Random(seed)
    by_index = {t.index: t for t in templates}
    usable = [cb for cb in clones if by_index[cb[1]].schedules and by_index[cb[1]].patient_token >= 0]
    picks = [usable[rng.randrange(len(usable))] for _ in range(n)]
    out = []
    for c, b in picks:
        t = by_index[b]
        toks = clone_tokens(t, c)
        if not t.schedules or t.patient_token < 0:
            continue
        s_tok, first = t.schedules[rng.randrange(len(t.schedules))]
        out.append(QuerySample(
            patient_id=toks[t.patient_token], ssn=toks[t.ssn_token] if t.ssn_token is not None else None,
            schedule_id=toks[s_tok], schedule_first_day=first,
            obs_code=t.obs_query[0] if t.obs_query else None, obs_date=t.obs_query[1] if t.obs_query else None,
        ))
    return out


def most_common_loinc(templates: list[BundleTemplate]) -> str:
    counts: dict[str, int] = {}
    for t in templates:
        if t.obs_query:
            counts[t.obs_query[0]] = counts.get(t.obs_query[0], 0) + 1
    return max(counts.items(), key=lambda kv: kv[1])[0]


# --------------------------------------------------------------------------- value rendering


def _pg_text(v: Any) -> str:
    """A value in PostgreSQL COPY text format."""
    if v is None:
        return "\\N"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float):
        return repr(v)
    s = str(v)
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _sqlite_value(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(v, bool):
        return int(v)
    return v


@dataclass
class _Rendered:
    """One bundle template prepared for one backend."""

    template: BundleTemplate
    content: list[str]  # format strings (tokens)
    ids: list[int]  # id token per resource
    types: list[str]
    # PostgreSQL: kind -> per resource a format string of COPY lines ({n} = res_pk, n = len(tokens))
    pg_lines: dict[str, list[str | None]] | None = None
    # SQLite: kind -> per resource list of (constant row list, [(column, format string)])
    sq_rows: dict[str, list[list[tuple[list, list[tuple[int, str]]]]]] | None = None


def _render(t: BundleTemplate, backend: str) -> _Rendered:
    tk = _Tokenizer(t.tokens)
    pk_field = "{%d}" % len(t.tokens)
    r = _Rendered(t, [x.content for x in t.resources], [x.id_token for x in t.resources],
                  [x.res_type for x in t.resources])
    if backend == "postgres":
        r.pg_lines = {k: [] for k in INDEX_COLUMNS}
        for res in t.resources:
            for kind in INDEX_COLUMNS:
                rows = res.rows.get(kind)
                if not rows:
                    r.pg_lines[kind].append(None)
                    continue
                lines = []
                for row in rows:
                    lines.append(pk_field + "\t" + tk.fmt("\t".join(_pg_text(v) for v in row)) + "\n")
                r.pg_lines[kind].append("".join(lines))
    else:
        r.sq_rows = {k: [] for k in INDEX_COLUMNS}
        for res in t.resources:
            for kind in INDEX_COLUMNS:
                out = []
                for row in res.rows.get(kind, ()):
                    vals = [None] + [_sqlite_value(v) for v in row]
                    subs = [(i, tk.fmt(v)) for i, v in enumerate(vals) if isinstance(v, str) and tk.has(v)]
                    out.append((vals, subs))
                r.sq_rows[kind].append(out)
    return r


# --------------------------------------------------------------------------- loaders


@dataclass
class LoadStats:
    resources: int = 0
    index_rows: int = 0
    seconds_generate: float = 0.0  # rendering + COPY/INSERT of the rows
    seconds_index: float = 0.0  # rebuilding the secondary indexes
    seconds_analyze: float = 0.0
    by_type: dict[str, int] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return self.seconds_generate + self.seconds_index + self.seconds_analyze


TABLES = {k: f"idx_{k}" for k in INDEX_COLUMNS}


def load_postgres(url: str, templates: list[BundleTemplate], clones: list[tuple[int, int]], versions: bool = True,
                  batch_resources: int = 20000, log: Callable[[str], None] = print) -> LoadStats:
    """COPY the clones into a freshly migrated PostgreSQL database (named by `url`)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conninfo = psycopg.conninfo.make_conninfo(host=u.host or "localhost", port=u.port or 5432,
                                              user=u.username or "postgres", password=u.password or None,
                                              dbname=u.database)
    stats = LoadStats()
    rendered = {t.index: _render(t, "postgres") for t in templates}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK triggers: consistent by construction
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        tables = ["resources", "resource_versions"] + list(TABLES.values())
        idx_defs = conn.execute(
            "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' AND i.tablename = ANY(%s) "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)", (tables,)).fetchall()
        for name, _ in idx_defs:
            conn.execute(f'DROP INDEX "{name}"')
        pk = conn.execute("SELECT coalesce(max(pk), 0) FROM resources").fetchone()[0]
        ts = LOAD_TIME
        t0 = time.perf_counter()
        buf_res: list[tuple] = []
        buf_idx: dict[str, list[str]] = {k: [] for k in INDEX_COLUMNS}
        n_rows = {k: 0 for k in INDEX_COLUMNS}

        def flush() -> None:
            with conn.transaction():
                with conn.cursor() as cur:
                    with cur.copy("COPY resources (pk, res_type, res_id, version_id, last_updated, deleted, content) "
                                  "FROM STDIN WITH (FORMAT BINARY)") as cp:
                        cp.set_types(["int8", "varchar", "varchar", "int4", "timestamptz", "bool", "bytea"])
                        for row in buf_res:
                            cp.write_row(row)
                    if versions:
                        with cur.copy("COPY resource_versions (res_pk, res_type, res_id, version_id, last_updated, "
                                      "method, deleted, content) FROM STDIN WITH (FORMAT BINARY)") as cp:
                            cp.set_types(["int8", "varchar", "varchar", "int4", "timestamptz", "varchar", "bool",
                                          "bytea"])
                            for row in buf_res:
                                cp.write_row((row[0], row[1], row[2], 1, row[4], "POST", False, row[6]))
                    for kind, chunks in buf_idx.items():
                        if not chunks:
                            continue
                        cols = ", ".join(COMMON_COLUMNS + INDEX_COLUMNS[kind])
                        with cur.copy(f"COPY {TABLES[kind]} ({cols}) FROM STDIN") as cp:
                            data = "".join(chunks).encode()
                            for i in range(0, len(data), 1 << 20):
                                cp.write(data[i:i + (1 << 20)])
                        chunks.clear()
            buf_res.clear()

        last_log = time.perf_counter()
        for c, b in clones:
            r = rendered[b]
            subs = clone_tokens(r.template, c)
            subs.append("")
            pk_slot = len(subs) - 1
            assert r.pg_lines is not None
            for i, fmt in enumerate(r.content):
                pk += 1
                subs[pk_slot] = str(pk)
                buf_res.append((pk, r.types[i], subs[r.ids[i]], 1, ts, False, fmt.format(*subs).encode()))
                for kind, per_res in r.pg_lines.items():
                    lines = per_res[i]
                    if lines is not None:
                        buf_idx[kind].append(lines.format(*subs))
                        n_rows[kind] += lines.count("\n")
            stats.resources += len(r.content)
            for rt, n in r.template.counts.items():
                stats.by_type[rt] = stats.by_type.get(rt, 0) + n
            if len(buf_res) >= batch_resources:
                flush()
                now = time.perf_counter()
                if now - last_log > 15:
                    last_log = now
                    log(f"  loaded {stats.resources} resources, {stats.resources / (now - t0):.0f}/s")
        flush()
        stats.index_rows = sum(n_rows.values())
        conn.execute("SELECT setval(pg_get_serial_sequence('resources', 'pk'), %s)", (max(pk, 1),))
        stats.seconds_generate = time.perf_counter() - t0
        t1 = time.perf_counter()
        for name, ddl in idx_defs:
            conn.execute(ddl)
        stats.seconds_index = time.perf_counter() - t1
        t2 = time.perf_counter()
        conn.execute("VACUUM (ANALYZE)")
        stats.seconds_analyze = time.perf_counter() - t2
    return stats


def load_sqlite(path: str, templates: list[BundleTemplate], clones: list[tuple[int, int]], versions: bool = True,
                batch_resources: int = 20000, log: Callable[[str], None] = print) -> LoadStats:
    """executemany the clones into a freshly migrated SQLite database file."""
    stats = LoadStats()
    rendered = {t.index: _render(t, "sqlite") for t in templates}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA cache_size=-400000")
    tables = ["resources", "resource_versions"] + list(TABLES.values())
    idx_defs = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL AND tbl_name IN (%s)"
        % ",".join("?" * len(tables)), tables).fetchall()
    for name, _ in idx_defs:
        conn.execute(f'DROP INDEX "{name}"')
    pk = conn.execute("SELECT coalesce(max(pk), 0) FROM resources").fetchone()[0]
    ts = _sqlite_value(LOAD_TIME)
    t0 = time.perf_counter()
    buf_res: list[tuple] = []
    buf_idx: dict[str, list[list]] = {k: [] for k in INDEX_COLUMNS}
    sql_idx = {k: f"INSERT INTO {TABLES[k]} ({', '.join(COMMON_COLUMNS + INDEX_COLUMNS[k])}) VALUES "
                  f"({', '.join('?' * (len(COMMON_COLUMNS) + len(INDEX_COLUMNS[k])))})" for k in INDEX_COLUMNS}

    def flush() -> None:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO resources (pk, res_type, res_id, version_id, last_updated, deleted, content) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", buf_res)
        if versions:
            conn.executemany("INSERT INTO resource_versions (res_pk, res_type, res_id, version_id, last_updated, "
                             "method, deleted, content) VALUES (?, ?, ?, 1, ?, 'POST', 0, ?)",
                             [(x[0], x[1], x[2], x[4], x[6]) for x in buf_res])
        for kind, rows in buf_idx.items():
            if rows:
                conn.executemany(sql_idx[kind], rows)
                stats.index_rows += len(rows)
                rows.clear()
        conn.execute("COMMIT")
        buf_res.clear()

    for c, b in clones:
        r = rendered[b]
        subs = clone_tokens(r.template, c)
        assert r.sq_rows is not None
        for i, fmt in enumerate(r.content):
            pk += 1
            buf_res.append((pk, r.types[i], subs[r.ids[i]], 1, ts, 0, fmt.format(*subs).encode()))
            for kind, per_res in r.sq_rows.items():
                out = buf_idx[kind]
                for vals, sub in per_res[i]:
                    row = list(vals)
                    row[0] = pk
                    for col, f in sub:
                        row[col] = f.format(*subs)
                    out.append(row)
        stats.resources += len(r.content)
        for rt, n in r.template.counts.items():
            stats.by_type[rt] = stats.by_type.get(rt, 0) + n
        if len(buf_res) >= batch_resources:
            flush()
    flush()
    stats.seconds_generate = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _, ddl in idx_defs:
        conn.execute(ddl)
    stats.seconds_index = time.perf_counter() - t1
    t2 = time.perf_counter()
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stats.seconds_analyze = time.perf_counter() - t2
    conn.close()
    return stats

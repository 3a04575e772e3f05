"""`Observation/$lastn` (http://hl7.org/fhir/R4/observation-operation-lastn.html).

The most recent `max` (default 1) Observations per subject and per code, among
those the other parameters select. The request names a subject (`patient` or
`subject`) and a `category` and/or `code`; every other Observation search
parameter filters as in a search. Grouping is by equivalent `Observation.code`:
two codes are equivalent when they share a coding (system and code), text-only
codes by their exact text, and equivalence is transitive across translations.
"Most recent" orders by `effective[x]` (dateTime, instant, Period start), then
`issued`, then lastUpdated; Observations with no time sort last.

Answer: a searchset Bundle, groups in order of their newest Observation, each
group newest first. GET with query parameters, or POST with a Parameters body.
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, body_parameters, operation
from ..search import local_base
from ..search.engine import find_matches
from ..search.values import parse_date_range
from ..security.authz import AccessRequest, authorize
from ..storage import repository as repo

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Observation-lastn"
MAX_MATCHES = 20_000  # Observations considered per request; beyond: narrow the criteria (413)
_NEVER = datetime.min.replace(tzinfo=timezone.utc)
_SKIP = {"_count", "_sort", "_total", "_summary", "_elements", "_cursor", "_format", "_pretty"}


def _when(obs: dict) -> datetime:
    for value in (obs.get("effectiveDateTime"), obs.get("effectiveInstant"),
                  (obs.get("effectivePeriod") or {}).get("start"), (obs.get("effectivePeriod") or {}).get("end"),
                  obs.get("issued")):
        if isinstance(value, str):
            try:
                low, _high = parse_date_range(value)
                if low is not None:
                    return low
            except ValueError:
                continue
    return _NEVER


def _code_keys(obs: dict) -> list[str]:
    code = obs.get("code") or {}
    keys = [f"c|{c.get('system') or ''}|{c.get('code')}" for c in code.get("coding") or [] if isinstance(c, dict) and c.get("code")]
    if not keys and code.get("text"):
        keys = [f"t|{code['text']}"]
    return keys or ["none"]


class _Groups:
    """Union-find over code keys: codings shared through translations join groups."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, k: str) -> str:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def join(self, keys: list[str]) -> str:
        roots = [self.find(k) for k in keys]
        for r in roots[1:]:
            self.parent[r] = roots[0]
        return roots[0]


def _max(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise FhirError.of(400, "invalid", f"max must be a positive integer, not '{value}'", "max")
    return n


@operation("lastn", ("type",), types=("Observation",), definition=DEFINITION)
def lastn(call: OperationCall) -> Outcome:
    if call.method not in ("GET", "POST"):
        raise FhirError.of(405, "not-supported", f"$lastn does not accept {call.method}")
    pairs = list(call.params) + body_parameters(call)
    n = 1
    criteria: list[tuple[str, str]] = []
    for name, value in pairs:
        if name == "max":
            n = _max(value)
        elif name.split(":", 1)[0] not in _SKIP:
            criteria.append((name, value))
    names = {k.split(":", 1)[0].split(".", 1)[0] for k, _ in criteria}
    if not names & {"patient", "subject"}:
        raise FhirError.of(400, "required", "$lastn needs a subject: the 'patient' or 'subject' parameter", "patient")
    if not names & {"category", "code"}:
        raise FhirError.of(400, "required", "$lastn needs a 'category' and/or a 'code' parameter", "category")
    authorize(call.ctx.principal, AccessRequest("search-type", "Observation", None))
    with call.db.read() as conn:
        matches = find_matches(conn, "Observation", criteria, limit=MAX_MATCHES + 1, base_url=call.ctx.base_url, access=call.ctx.access())
        if len(matches) > MAX_MATCHES:
            raise FhirError.of(413, "too-costly", f"$lastn would consider more than {MAX_MATCHES} Observations; narrow the criteria (date, code)")
        stored = repo.read_by_pks(conn, [pk for pk, _ in matches])
    groups = _Groups()
    docs = []
    for s in stored:
        obs = orjson.loads(s.content)
        keys = _code_keys(obs)
        groups.join(keys)
        subject = (obs.get("subject") or {}).get("reference") or ""
        subject = local_base.local_form(subject, call.ctx.base_url) or subject  # one patient, however written
        docs.append((subject, keys[0], _when(obs), s))
    by_group: dict[tuple[str, str], list] = {}
    for subject, key, when, s in docs:
        by_group.setdefault((subject, groups.find(key)), []).append((when, s.last_updated, s))
    chosen = []
    for items in by_group.values():
        items.sort(key=lambda x: (x[0], x[1]), reverse=True)
        chosen.append(items[:n])
    chosen.sort(key=lambda g: (g[0][0], g[0][1]), reverse=True)
    base = call.ctx.base_url
    entries = [{"fullUrl": f"{base}/Observation/{s.res_id}", "resource": orjson.Fragment(s.content), "search": {"mode": "match"}}
               for group in chosen for _w, _u, s in group]
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries),
              "link": [{"relation": "self", "url": f"{base}/Observation/$lastn"}], "entry": entries}
    return Outcome(status=200, body=jsonio.dumps(bundle))

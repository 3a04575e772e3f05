"""`ValueSet/$expand` (http://hl7.org/fhir/R4/valueset-operation-expand.html).

The value set is the instance of an instance call, the one with canonical
``url`` (``valueSetVersion`` optional), or a ``valueSet`` resource POSTed in
a Parameters. Supported inputs: ``filter`` (every word of it must begin a word
of the display, or the code must begin with it; case and accents ignored),
``offset`` and ``count`` (paging; ``total`` is always given),
``displayLanguage`` (displays from matching designations),
``includeDesignations``, ``activeOnly``. Compose include/exclude with concept
lists, whole systems, imported value sets and the filters of
``terminology/expand.py``.

Out: the ValueSet with an ``expansion`` (identifier, timestamp, total,
offset, the parameters used, contains). 404 for an unknown value set or code
system; 422 (too-costly) for a system that cannot be enumerated.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.operations import OperationCall, operation
from ..search.values import normalize
from ..terminology.expand import Entry, TerminologyError, expand
from ..terminology.params import OpParams, fail
from ..terminology.service import DbResolver
from ._terminology import instance_resource
from .lookup import display_in

DEFINITION = "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"


def value_set_of(conn, call: OperationCall, p: OpParams) -> dict:
    """The ValueSet a ValueSet operation is about (instance, `url`, or a `valueSet` resource)."""
    own = instance_resource(conn, call)
    if own is not None:
        return own
    given = p.resource("valueSet", "ValueSet")
    if given is not None:
        return given
    url = p.str("url")
    if not url:
        raise FhirError.of(400, "required", f"${call.name} needs 'url' or 'valueSet', or call it on ValueSet/[id]", "url")
    version = p.str("valueSetVersion")
    vs = DbResolver(conn).value_set(url.partition("|")[0], version or url.partition("|")[2] or None)
    if vs is None:
        raise FhirError.of(404, "not-found", f"ValueSet {url} is not known to this server", "url")
    return vs


def _matches(entry: Entry, words: list[str]) -> bool:
    if not words:
        return True
    code = normalize(entry.code)
    if code.startswith(" ".join(words)):
        return True
    display_words = normalize(entry.display or "").replace("-", " ").replace("/", " ").split()
    return all(any(w.startswith(q) for w in display_words) for q in words)


def _contains(entry: Entry, language: str | None, designations: bool) -> dict:
    out: dict = {"system": entry.system}
    if entry.version:
        out["version"] = entry.version
    concept = entry.concept
    if concept is not None and concept.abstract:
        out["abstract"] = True
    if concept is not None and concept.inactive:
        out["inactive"] = True
    out["code"] = entry.code
    display = display_in(concept, language) if concept is not None and language else None
    if display or entry.display:
        out["display"] = display or entry.display
    if designations:
        desig = list(entry.designations or []) or (list(concept.designations) if concept is not None else [])
        if desig:
            out["designation"] = desig
    return out


@operation("expand", ("type", "instance"), types=("ValueSet",), definition=DEFINITION)
def expand_op(call: OperationCall) -> Outcome:
    p = OpParams(call)
    offset = p.int("offset", 0) or 0
    count = p.int("count")
    text = p.str("filter")
    language = p.str("displayLanguage")
    designations = p.bool("includeDesignations")
    active_only = p.bool("activeOnly")
    with call.db.read() as conn:
        vs = value_set_of(conn, call, p)
        try:
            entries = expand(vs, DbResolver(conn))
        except TerminologyError as exc:
            raise fail(exc) from None
    if active_only:
        entries = [e for e in entries if not (e.concept is not None and e.concept.inactive)]
    words = normalize(text).split() if text else []
    if words:
        entries = [e for e in entries if _matches(e, words)]
    total = len(entries)
    page = entries[offset: offset + count if count is not None else None]
    used = [{"name": "offset", "valueInteger": offset}]
    if count is not None:
        used.append({"name": "count", "valueInteger": count})
    if text:
        used.append({"name": "filter", "valueString": text})
    if language:
        used.append({"name": "displayLanguage", "valueCode": language})
    if designations:
        used.append({"name": "includeDesignations", "valueBoolean": True})
    if active_only:
        used.append({"name": "activeOnly", "valueBoolean": True})
    expansion: dict = {
        "identifier": f"urn:uuid:{uuid.uuid4()}",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "total": total,
        "offset": offset,
        "parameter": used,
    }
    if page:
        expansion["contains"] = [_contains(e, language, designations) for e in page]
    out = {k: v for k, v in vs.items() if k not in ("expansion", "meta", "text")}
    out["expansion"] = expansion
    return Outcome(status=200, body=jsonio.dumps(out))

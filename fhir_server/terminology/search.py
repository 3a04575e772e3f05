"""Token search modifiers that need terminology (http://hl7.org/fhir/R4/search.html#modifiers).

* ``:in`` / ``:not-in`` ``=[value set]``: codings whose (system, code) is / no
  coding is in the expansion of the value set, named by canonical URL
  (``|version`` allowed) or as ``ValueSet/[id]``;
* ``:below`` ``=[system]|[code]``: the code and every code it subsumes;
* ``:above`` ``=[system]|[code]``: the code and every code that subsumes it.

``token_codes`` returns the (system, code) pairs to match; the query builder
turns them into chunked ``IN`` lists. Unknown value sets or systems, and value
sets that cannot be expanded, are 400s (404 would say the search endpoint is missing), as are
sets of more than ``MAX_CODES`` codes (bind-parameter limits).
"""

from __future__ import annotations

import orjson

from ..errors import FhirError
from ..storage import repository as repo
from .expand import TerminologyError, expand, split_canonical
from .service import DbResolver


# Each code becomes a bound parameter (twice: with its system and without); SQLite allows 32,766 per statement.
MAX_CODES = 10_000


def _bad(message: str, expression: str) -> FhirError:
    return FhirError.of(400, "invalid", message, expression)


def _value_set(conn, resolver: DbResolver, value: str, name: str) -> dict:
    if value.startswith("ValueSet/"):
        stored = repo.read_current(conn, "ValueSet", value.split("/", 1)[1]) if conn is not None else None
        if stored is None or stored.deleted:
            raise _bad(f"{value} is not known to this server", name)
        return orjson.loads(stored.content)
    url, version = split_canonical(value)
    vs = resolver.value_set(url, version)
    if vs is None:
        raise _bad(f"ValueSet {value} is not known to this server", name)
    return vs


def token_codes(conn, modifier: str, value: str, name: str) -> list[tuple[str | None, str]]:
    """(system, code) pairs a token search with `modifier` (in, not-in, above, below) matches."""
    resolver = DbResolver(conn)
    try:
        if modifier in ("in", "not-in"):
            vs = _value_set(conn, resolver, value, name)
            pairs = [(e.system, e.code) for e in expand(vs, resolver)]
            if len(pairs) > MAX_CODES:
                raise FhirError.of(400, "too-costly", f"'{name}': the value set has {len(pairs)} codes; "
                                                      f"at most {MAX_CODES} can be searched with :{modifier}", name)
            return pairs
        system, sep, code = value.partition("|")
        if not sep or not system or not code:
            raise _bad(f"':{modifier}' takes system|code, got '{value}'", name)
        cs = resolver.code_system(system)
        if cs is None:
            raise _bad(f"CodeSystem {system} is not known to this server, so ':{modifier}' cannot be answered", name)
        concept = cs.get(code)
        if concept is None:
            raise _bad(f"Code '{code}' is not in CodeSystem {system}", name)
        related = cs.descendants(concept.code) if modifier == "below" else cs.ancestors(concept.code)
        pairs = [(system, concept.code)] + [(system, c) for c in related]
        if len(pairs) > MAX_CODES:
            raise FhirError.of(400, "too-costly", f"'{name}': {code} has {len(pairs)} related codes; "
                                                  f"at most {MAX_CODES} can be searched", name)
        return pairs
    except TerminologyError as exc:
        raise _bad(f"'{name}': {exc.message}", name) from None

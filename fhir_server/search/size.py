"""How big one search may be: its control parameters, and the limits on criteria and includes.

Each criterion (a parameter that filters; every occurrence counts) is a subquery the database
plans and joins with the others. `Observation?patient=1&patient=2&...` repeated 100 times took
3 s of PostgreSQL's CPU, 150 times 12 s, and 2,000 times ran for more than ten minutes in 4 GB
(found by trying to break the server, session 9). Real searches use a handful, and values of one
parameter combine with commas (`search.query.MAX_OR_VALUES` of them). More than these limits
is a 400 before any SQL is built, and `Prefer: handling=lenient` does not waive it.
"""

from __future__ import annotations

from ..errors import FhirError

CONTROL_PARAMS = {"_count", "_sort", "_include", "_revinclude", "_total", "_summary", "_elements", "_cursor",
                  "_totalMethod"}  # _totalMethod: the spelling fhirpy's count() sends
IGNORED_PARAMS = {"_format", "_pretty"}
MAX_CRITERIA = 20
MAX_INCLUDES = 20


def check_size(params: list[tuple[str, str]]) -> None:
    """400 for a search with more than `MAX_CRITERIA` criteria or `MAX_INCLUDES` includes,
    before any SQL is built (not ignorable with `Prefer: handling=lenient`)."""
    criteria = includes = 0
    for name, value in params:
        base = name.split(":", 1)[0]
        if base in ("_include", "_revinclude"):
            includes += 1
        elif base not in CONTROL_PARAMS and name not in IGNORED_PARAMS and value != "":
            criteria += 1
    if criteria > MAX_CRITERIA:
        raise FhirError.of(400, "too-costly", f"Too many search criteria ({criteria}): at most {MAX_CRITERIA} per search "
                           "(each occurrence of a parameter counts; combine values of one parameter with commas)")
    if includes > MAX_INCLUDES:
        raise FhirError.of(400, "too-costly", f"Too many _include/_revinclude parameters ({includes}): at most {MAX_INCLUDES}")

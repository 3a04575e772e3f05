"""Sorting by a code from an ordered code system follows the codes' rank.

`_sort=priority` on Task (and the other request resources) orders by the
request-priority rank routine < urgent < asap < stat, not alphabetically;
`_sort=-priority` puts stat first. Data: terminology/ordered-codes.json
(derived from the R4 definitions by scripts/derive_ordered_codes.py). A code
outside the system sorts after every ranked code, like a missing value.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from sqlalchemy import ColumnElement, case, null

DATA = Path(__file__).resolve().parents[2] / "terminology" / "ordered-codes.json"


@lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(DATA.read_text(encoding="utf-8")) if DATA.exists() else {}


def codes_of(system: str) -> list[str]:
    """The codes of an ordered code system, lowest rank first."""
    return list(((_data().get("codeSystems") or {}).get(system) or {}).get("codes") or [])


def system_for_param(res_type: str | None, code: str) -> str | None:
    """The ordered code system a token search parameter's values come from, if any."""
    return ((_data().get("searchParameters") or {}).get(res_type or "") or {}).get(code)


def system_for_element(path: str) -> str | None:
    """The ordered code system an element (e.g. 'Task.priority') is bound to (required), if any."""
    return (_data().get("elements") or {}).get(path)


def params_by_type() -> dict[str, dict[str, str]]:
    return dict(_data().get("searchParameters") or {})


def rank_expression(system: str, code_col: ColumnElement, system_col: ColumnElement) -> ColumnElement:
    """SQL: the rank (0 = lowest) of an indexed token, NULL when it is not a code of `system`."""
    whens = [((code_col == c) & ((system_col.is_(None)) | (system_col == system)), i) for i, c in enumerate(codes_of(system))]
    return case(*whens, else_=null())

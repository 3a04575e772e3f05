"""One answer of a QuestionnaireResponse against its Questionnaire item.

Checks the answer's value[x] against `item.type`, the allowed options
(`answerOption`, or an enumerable `answerValueSet`), `maxLength` and the SDC
extensions minValue / maxValue / minLength / regex / maxDecimalPlaces.
Rules: http://hl7.org/fhir/R4/questionnaire.html#Questionnaire.item.type,
http://hl7.org/fhir/R4/questionnaireresponse.html (qrs-* invariants) and
http://hl7.org/fhir/uv/sdc/ (the extensions).

Also the value comparison used by `enableWhen` (`compare`), so that both
speak the same notion of equality between two FHIR values.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

EXT_MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
EXT_MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"
EXT_MIN_LENGTH = "http://hl7.org/fhir/StructureDefinition/minLength"
EXT_REGEX = "http://hl7.org/fhir/StructureDefinition/regex"
EXT_MAX_DECIMALS = "http://hl7.org/fhir/StructureDefinition/maxDecimalPlaces"

# item.type -> the value[x] kinds an answer may carry (R4 table under
# Questionnaire.item.type; choice/open-choice also take the kinds their
# answerOptions use).
ANSWER_KINDS: dict[str, tuple[str, ...]] = {
    "boolean": ("valueBoolean",),
    "decimal": ("valueDecimal",),
    "integer": ("valueInteger",),
    "date": ("valueDate",),
    "dateTime": ("valueDateTime", "valueDate"),  # a dateTime may be partial; SDC renderers send dates
    "time": ("valueTime",),
    "string": ("valueString",),
    "text": ("valueString",),
    "url": ("valueUri",),
    "choice": ("valueCoding",),
    "open-choice": ("valueCoding", "valueString"),
    "attachment": ("valueAttachment",),
    "reference": ("valueReference",),
    "quantity": ("valueQuantity",),
}
# Types that carry no answers at all.
NO_ANSWER_TYPES = {"group", "display"}
TEXTUAL = {"valueString", "valueUri"}


def value_of(answer: dict) -> tuple[str, Any] | None:
    """The single (valueX, value) of an answer, or None when it has none."""
    keys = [k for k in answer if k.startswith("value")]
    if len(keys) != 1:
        return None
    return keys[0], answer[keys[0]]


def extension_value(item: dict, url: str) -> tuple[str, Any] | None:
    for ext in item.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            found = value_of(ext)
            if found:
                return found
    return None


# --------------------------------------------------------------------------- comparison


def _as_decimal(v: Any) -> Decimal | None:
    if isinstance(v, bool):
        return None
    try:
        return Decimal(str(v))
    except (InvalidOperation, ValueError):
        return None


def _as_temporal(kind: str, v: Any):
    if not isinstance(v, str):
        return None
    try:
        if kind in ("valueTime",):
            return time.fromisoformat(v)
        if len(v) == 4:
            return (int(v),)
        if len(v) == 7:
            return (int(v[:4]), int(v[5:7]))
        if len(v) == 10:
            return date.fromisoformat(v)
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def _coding_equal(a: dict, b: dict) -> bool:
    if not isinstance(a, dict) or not isinstance(b, dict) or a.get("code") is None:
        return False
    if a.get("code") != b.get("code"):
        return False
    # a Coding without system matches on code (options are often written that way)
    return a.get("system") is None or b.get("system") is None or a.get("system") == b.get("system")


def compare(kind_a: str, a: Any, kind_b: str, b: Any) -> int | None:
    """-1/0/1 when two values are comparable (same kind family), else None.
    Codings, References and booleans only compare for equality (0 or None)."""
    numeric = {"valueInteger", "valueDecimal"}
    if kind_a in numeric and kind_b in numeric:
        da, db = _as_decimal(a), _as_decimal(b)
        if da is None or db is None:
            return None
        return (da > db) - (da < db)
    if kind_a == "valueQuantity" and kind_b == "valueQuantity" and isinstance(a, dict) and isinstance(b, dict):
        if (a.get("code") or a.get("unit")) != (b.get("code") or b.get("unit")):
            return None
        return compare("valueDecimal", a.get("value"), "valueDecimal", b.get("value"))
    temporal = {"valueDate", "valueDateTime", "valueTime", "valueInstant"}
    if kind_a in temporal and kind_b in temporal:
        ta, tb = _as_temporal(kind_a, a), _as_temporal(kind_b, b)
        if ta is None or tb is None or type(ta) is not type(tb):
            return None
        try:
            return (ta > tb) - (ta < tb)
        except TypeError:  # naive vs aware datetimes
            return None
    if kind_a in TEXTUAL and kind_b in TEXTUAL:
        return (a > b) - (a < b) if isinstance(a, str) and isinstance(b, str) else None
    if kind_a == kind_b == "valueBoolean":
        return 0 if a == b else None
    if kind_a == kind_b == "valueCoding":
        return 0 if _coding_equal(a, b) else None
    if kind_a == kind_b == "valueReference":
        return 0 if isinstance(a, dict) and isinstance(b, dict) and a.get("reference") == b.get("reference") else None
    return None


def equal(kind_a: str, a: Any, kind_b: str, b: Any) -> bool:
    return compare(kind_a, a, kind_b, b) == 0


# --------------------------------------------------------------------------- answer checks

Problem = tuple[str, str, str]  # (issue code, diagnostics, expression suffix)


def check_answer(
    item: dict,
    answer: dict,
    options_of: Callable[[dict], list[tuple[str, Any]] | None],
) -> list[Problem]:
    """Problems of one answer to `item`; suffix '' is the answer, '.value' its value.

    `options_of(item)` returns the allowed (valueX, value) pairs of a choice item
    ([] / None when the value set cannot be enumerated here)."""
    qtype = item.get("type")
    link = item.get("linkId")
    found = value_of(answer)
    if found is None:
        return [("structure", f"Answer to '{link}' must carry exactly one value[x]", "")]
    kind, value = found
    allowed = ANSWER_KINDS.get(qtype)
    options = options_of(item) if qtype in ("choice", "open-choice") else None
    if qtype in ("choice", "open-choice") and options:
        allowed = tuple(dict.fromkeys((*allowed, *(k for k, _ in options))))
    if allowed is None:
        return [("structure", f"Item '{link}' of type {qtype} cannot carry an answer", "")]
    if kind not in allowed:
        want = " or ".join(allowed)
        return [("value", f"Answer to '{link}' ({qtype}) must be {want}, not {kind}", ".value")]

    problems: list[Problem] = []
    if qtype in ("choice", "open-choice") and not (qtype == "open-choice" and kind == "valueString"):
        if options is not None and options and not any(equal(kind, value, ok, ov) for ok, ov in options):
            problems.append(("code-invalid", f"Answer to '{link}' is not one of the item's answer options: {_show(kind, value)}", ".value"))
    problems.extend(_check_constraints(item, kind, value))
    return problems


def _show(kind: str, value: Any) -> str:
    if kind == "valueCoding" and isinstance(value, dict):
        return f"{value.get('system') or ''}|{value.get('code')}"
    return repr(value)


def _text_length(kind: str, value: Any) -> int | None:
    if kind in TEXTUAL and isinstance(value, str):
        return len(value)
    if kind in ("valueInteger", "valueDecimal") and not isinstance(value, bool):
        return len(str(value))
    return None


def _check_constraints(item: dict, kind: str, value: Any) -> list[Problem]:
    link = item.get("linkId")
    problems: list[Problem] = []
    length = _text_length(kind, value)
    max_length = item.get("maxLength")
    if isinstance(max_length, int) and length is not None and length > max_length:
        problems.append(("too-long", f"Answer to '{link}' is {length} characters long; maxLength is {max_length}", ".value"))
    min_length = extension_value(item, EXT_MIN_LENGTH)
    if min_length and isinstance(min_length[1], int) and length is not None and length < min_length[1]:
        problems.append(("value", f"Answer to '{link}' is {length} characters long; minLength is {min_length[1]}", ".value"))
    regex = extension_value(item, EXT_REGEX)
    if regex and isinstance(regex[1], str) and kind in TEXTUAL and isinstance(value, str):
        try:
            if not re.fullmatch(regex[1], value):
                problems.append(("value", f"Answer to '{link}' does not match the pattern {regex[1]}", ".value"))
        except re.error:
            pass  # a Questionnaire's broken pattern is not the respondent's fault
    subject = (kind, value) if kind != "valueQuantity" else ("valueDecimal", (value or {}).get("value"))
    for url, sign, word in ((EXT_MIN_VALUE, -1, "below the minimum"), (EXT_MAX_VALUE, 1, "above the maximum")):
        bound = extension_value(item, url)
        if not bound:
            continue
        bkind, bvalue = bound
        if bkind == "valueQuantity":
            bkind, bvalue = "valueDecimal", (bvalue or {}).get("value")
        c = compare(subject[0], subject[1], bkind, bvalue)
        if c == sign:
            problems.append(("value", f"Answer to '{link}' ({subject[1]}) is {word} {bvalue}", ".value"))
    places = extension_value(item, EXT_MAX_DECIMALS)
    if places and isinstance(places[1], int) and subject[0] == "valueDecimal":
        d = _as_decimal(subject[1])
        if d is not None and d.as_tuple().exponent < 0 and -d.as_tuple().exponent > places[1]:
            problems.append(("value", f"Answer to '{link}' has more than {places[1]} decimal places", ".value"))
    return problems

"""Scores of a completed QuestionnaireResponse, stored as Observations.

Where a score comes from (SDC, http://hl7.org/fhir/uv/sdc/):
- an item with an `sdc-questionnaire-calculatedExpression` (text/fhirpath) is
  evaluated with fhirpathpy on the response (`%resource`, `%questionnaire`);
  the expression may call `weight()` (alias `ordinal()`): the ordinalValue /
  itemWeight of each Coding answer, looked up in the Questionnaire's
  answerOptions; numbers pass through. One Observation per such item, coded
  with the item's `code` (else the Questionnaire's).
- a Questionnaire without calculated items whose answer options carry weights
  gets one total: the sum of the weights answered, coded with Questionnaire.code.

Each score is an Observation (status final, category survey, subject and
encounter of the response, effective = authored, derivedFrom the response,
value an integer or a decimal Quantity of unit {score}) written in the same
database transaction as the response. Its id is derived from the response id
and the score's linkId, so an amended response updates its scores instead of
adding more.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from decimal import Decimal
from typing import Any

import fhirpathpy
from fhirpathpy.models import models as fhirpath_models

from ...model.qr_answers import value_of
from ...model.qr_validation import EXT_CALCULATED

log = logging.getLogger("fhir_server.proms")

WEIGHT_URLS = ("http://hl7.org/fhir/StructureDefinition/ordinalValue", "http://hl7.org/fhir/StructureDefinition/itemWeight")
SURVEY = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey", "display": "Survey"}]}


@dataclass(frozen=True)
class Score:
    link_id: str  # the calculated item, or "total"
    code: list[dict]  # Codings
    value: Decimal
    text: str | None = None


def _walk(items: list):
    for it in items or []:
        if isinstance(it, dict):
            yield it
            yield from _walk(it.get("item") or [])


def _weight_of(option: dict) -> Decimal | None:
    for holder in (option, option.get("valueCoding") or {}):
        for ext in holder.get("extension") or []:
            if isinstance(ext, dict) and ext.get("url") in WEIGHT_URLS:
                v = value_of(ext)
                if v and v[0] in ("valueDecimal", "valueInteger"):
                    return Decimal(str(v[1]))
    return None


def weights(questionnaire: dict) -> dict[tuple[str | None, str], Decimal]:
    """(system, code) -> weight of every weighted Coding answer option."""
    out: dict[tuple[str | None, str], Decimal] = {}
    for item in _walk(questionnaire.get("item") or []):
        for opt in item.get("answerOption") or []:
            if isinstance(opt, dict) and isinstance(opt.get("valueCoding"), dict):
                w = _weight_of(opt)
                c = opt["valueCoding"]
                if w is not None and c.get("code"):
                    out[(c.get("system"), c["code"])] = w
    return out


def _lookup(table: dict, coding: dict) -> Decimal | None:
    code = coding.get("code")
    if (coding.get("system"), code) in table:
        return table[(coding.get("system"), code)]
    if coding.get("system") is None:  # option codes matched by code alone, as the validator does
        found = [w for (s, c), w in table.items() if c == code]
        return found[0] if len(set(found)) == 1 else None
    return table.get((None, code))


_table: ContextVar[dict] = ContextVar("weights", default={})


def _weight(coll: list) -> list:
    """FHIRPath weight()/ordinal(): the weights of Coding answers in the
    Questionnaire being scored (held in a context variable, so that compiled
    expressions are shared between Questionnaires); numbers pass through."""
    table = _table.get()
    out = []
    for v in coll:
        if isinstance(v, dict) and "code" in v:
            w = _lookup(table, v)
            if w is not None:
                out.append(int(w) if w == w.to_integral_value() else float(w))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(v)
    return out


_OPTIONS = {"userInvocationTable": {name: {"fn": _weight, "arity": {0: []}} for name in ("weight", "ordinal")}}


@lru_cache(maxsize=256)
def compiled(expression: str):
    """A FHIRPath expression parsed once (parsing costs more than evaluating)."""
    return fhirpathpy.compile(expression, fhirpath_models["r4"], _OPTIONS)


def _number(result: list) -> Decimal | None:
    for v in result:
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float, Decimal)):
            return Decimal(str(v))
    return None


def compute_scores(response: dict, questionnaire: dict) -> list[Score]:
    """The scores of `response` (any status); [] when the Questionnaire defines none."""
    table = weights(questionnaire)
    token = _table.set(table)
    try:
        return _compute(response, questionnaire, table)
    finally:
        _table.reset(token)


def _compute(response: dict, questionnaire: dict, table: dict) -> list[Score]:
    q_code = [c for c in questionnaire.get("code") or [] if isinstance(c, dict)]
    scores: list[Score] = []
    for item in _walk(questionnaire.get("item") or []):
        for ext in item.get("extension") or []:
            if not (isinstance(ext, dict) and ext.get("url") == EXT_CALCULATED):
                continue
            expr = (ext.get("valueExpression") or {})
            if expr.get("language") != "text/fhirpath" or not isinstance(expr.get("expression"), str):
                continue
            try:
                subject = copy.deepcopy(response)  # fhirpathpy annotates what it is given
                result = compiled(expr["expression"])(subject, {"resource": subject, "questionnaire": copy.deepcopy(questionnaire)})
            except Exception as exc:  # a Questionnaire's broken expression must not fail the patient's write
                log.warning("calculatedExpression of %s/%s failed: %s", questionnaire.get("url"), item.get("linkId"), exc)
                continue
            value = _number(result)
            if value is not None:
                code = [c for c in item.get("code") or [] if isinstance(c, dict)] or q_code
                scores.append(Score(item.get("linkId"), code, value, item.get("text")))
    if scores or not table:
        return scores
    answered = [value_of(a) for it in _walk(response.get("item") or []) for a in _answers(it)]
    total = [_lookup(table, v[1]) for v in answered if v and v[0] == "valueCoding" and isinstance(v[1], dict)]
    total = [w for w in total if w is not None]
    if not total:
        return []
    return [Score("total", q_code, sum(total, Decimal(0)), questionnaire.get("title"))]


def _answers(item: dict) -> list[dict]:
    out = []
    for a in item.get("answer") or []:
        if isinstance(a, dict):
            out.append(a)
            for child in _walk(a.get("item") or []):
                out.extend(_answers(child))
    return out


SCORE_ID_PREFIX = "score-"


def observation_id(response_id: str, link_id: str) -> str:
    return SCORE_ID_PREFIX + hashlib.sha256(f"{response_id}|{link_id}".encode()).hexdigest()[:40]


def observation_for(response: dict, questionnaire: dict, score: Score) -> dict:
    """The Observation (JSON) that records one score of a response."""
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(response["id"], score.link_id),
        "status": "final" if response.get("status") != "amended" else "amended",
        "category": [SURVEY],
        "code": {"coding": score.code} if score.code else {"text": score.text or "score"},
    }
    if score.text:
        obs["code"]["text"] = score.text
    for key in ("subject", "encounter"):
        if isinstance(response.get(key), dict):
            obs[key] = response[key]
    if isinstance(response.get("authored"), str):
        obs["effectiveDateTime"] = response["authored"]
    if score.value == score.value.to_integral_value():
        obs["valueInteger"] = int(score.value)
    else:
        obs["valueQuantity"] = {"value": float(score.value), "unit": "{score}", "system": "http://unitsofmeasure.org", "code": "{score}"}
    obs["derivedFrom"] = [{"reference": f"QuestionnaireResponse/{response['id']}"}]
    return obs

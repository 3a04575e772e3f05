"""A QuestionnaireResponse checked against the Questionnaire it answers.

`validate_response(response, questionnaire, value_set_options)` returns one
Issue per problem, each with a FHIRPath `expression` into the response such as
`QuestionnaireResponse.item[2].answer[0].value`. It enforces
(http://hl7.org/fhir/R4/questionnaireresponse.html, R4 Questionnaire.item.*):

- every item's linkId exists at the same place of the item tree (children of a
  group under `item.item`, children of a question under `item.answer.item`);
- a linkId appears once per level unless its item `repeats` (repeating groups),
  and a question that does not repeat has at most one answer;
- answer values match `item.type` and the options (qr_answers);
- `display` items carry no answers, `group` items no `answer`;
- `enableWhen` (every operator, `enableBehavior` all|any; unanswered questions
  make every operator but `exists` false, as SDC says): an answer to a disabled
  item is an error, and a disabled item's children are disabled too; a
  condition's question is its nearest occurrence (R4 enableWhen.question: the
  ancestor axis first), so inside a repeating group each instance is judged
  by its own answers;
- `readOnly`: an answer must equal the item's `initial` values, or the item
  must be computed (SDC initialExpression / calculatedExpression);
- `required` items are answered (a required group has an answered descendant)
  when the status is `completed` or `amended`, in every enabled context that is
  present (a required item inside an absent optional group is not demanded).

The R4 operator definitions for > < >= <= read "at least no answer"; that is
an erratum (fixed in R4B): they are true when at least one answer compares so.
"""

from __future__ import annotations

from typing import Any, Callable

from ..errors import Issue
from .qr_answers import NO_ANSWER_TYPES, check_answer, compare, equal, value_of

EXT_CALCULATED = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
EXT_INITIAL_EXPR = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-initialExpression"
FINAL_STATUSES = {"completed", "amended"}

OptionsOf = Callable[[dict], "list[tuple[str, Any]] | None"]


def answer_options(item: dict) -> list[tuple[str, Any]]:
    """The (valueX, value) pairs of an item's answerOption list."""
    out = []
    for opt in item.get("answerOption") or []:
        if isinstance(opt, dict) and value_of(opt):
            out.append(value_of(opt))
    return out


class NearestAnswers:
    """linkId -> the answers of the question's nearest occurrence, seen from one level
    of the response (R4 Questionnaire.item.enableWhen.question: the ancestor axis
    first). `scopes` are (response items, Questionnaire items) of each level from the
    root down; the innermost level whose Questionnaire items define the linkId
    decides, with the answers under that level of the response (none when it is
    absent there). Inside a repeating group each instance is so judged by its own
    answers; a question outside the group by the enclosing levels."""

    def __init__(self, scopes: tuple[tuple[list, list], ...], cache: dict[int, tuple[list, dict]]):
        self.scopes = scopes
        self.cache = cache

    def _index(self, items: list, fill) -> dict:
        key = id(items)
        if key not in self.cache:  # the list is kept with its index, so its id is not reused
            found: dict = {}
            fill(items, found)
            self.cache[key] = (items, found)
        return self.cache[key][1]

    def get(self, link: Any, default: Any = None) -> Any:
        for qr_items, q_items in reversed(self.scopes):
            if link in self._index(q_items, _defined_into):
                return self._index(qr_items, _index_into).get(link, [])
        return default


def _defined_into(q_items: list, into: dict) -> None:
    for it in q_items or []:
        if isinstance(it, dict):
            if isinstance(it.get("linkId"), str):
                into[it["linkId"]] = True
            _defined_into(it.get("item") or [], into)


def _index_into(items: list, into: dict[str, list]) -> None:
    """Every linkId present under `items` -> its answers' (valueX, value) (maybe none)."""
    for it in items or []:
        if not isinstance(it, dict):
            continue
        link = it.get("linkId")
        bucket = into.setdefault(link, []) if isinstance(link, str) else []
        for ans in it.get("answer") or []:
            if isinstance(ans, dict):
                v = value_of(ans)
                if v:
                    bucket.append(v)
                _index_into(ans.get("item") or [], into)
        _index_into(it.get("item") or [], into)


def _condition_holds(cond: dict, answers: dict[str, list[tuple[str, Any]]]) -> bool:
    given = answers.get(cond.get("question"), [])
    op = cond.get("operator")
    expected = value_of({"value" + k[len("answer"):]: v for k, v in cond.items() if k.startswith("answer")})
    if op == "exists":
        want = expected[1] if expected else True
        return bool(given) == bool(want)
    if not given or expected is None:
        return False
    ek, ev = expected
    if op == "=":
        return any(equal(k, v, ek, ev) for k, v in given)
    if op == "!=":
        return not any(equal(k, v, ek, ev) for k, v in given)
    tests = {">": lambda c: c == 1, "<": lambda c: c == -1, ">=": lambda c: c in (0, 1), "<=": lambda c: c in (0, -1)}
    test = tests.get(op)
    if test is None:
        return False
    return any((c := compare(k, v, ek, ev)) is not None and test(c) for k, v in given)


def is_enabled(item: dict, answers: dict[str, list[tuple[str, Any]]]) -> bool:
    conds = [c for c in item.get("enableWhen") or [] if isinstance(c, dict)]
    if not conds:
        return True
    results = [_condition_holds(c, answers) for c in conds]
    return any(results) if item.get("enableBehavior") == "any" else all(results)


def _has_answer(qr_item: dict) -> bool:
    if any(isinstance(a, dict) and value_of(a) for a in qr_item.get("answer") or []):
        return True
    return any(isinstance(c, dict) and _has_answer(c) for c in qr_item.get("item") or []) or any(
        isinstance(c, dict) and _has_answer(c) for a in qr_item.get("answer") or [] if isinstance(a, dict) for c in a.get("item") or []
    )


def _find_anywhere(items: list, link: str, path: str = "") -> str | None:
    for it in items or []:
        if not isinstance(it, dict):
            continue
        here = f"{path}/{it.get('linkId')}"
        if it.get("linkId") == link:
            return here
        found = _find_anywhere(it.get("item") or [], link, here)
        if found:
            return found
    return None


def _is_computed(item: dict) -> bool:
    urls = {e.get("url") for e in item.get("extension") or [] if isinstance(e, dict)}
    return bool(urls & {EXT_CALCULATED, EXT_INITIAL_EXPR})


class _Walker:
    def __init__(self, response: dict, questionnaire: dict, options_of: OptionsOf):
        self.q_root = questionnaire.get("item") or []
        self.index_cache: dict[int, tuple[list, dict]] = {}
        self.final = response.get("status") in FINAL_STATUSES
        self.options_of = options_of
        self.issues: list[Issue] = []

    def error(self, code: str, message: str, expression: str) -> None:
        self.issues.append(Issue("error", code, message, [expression]))

    def walk(self, q_items: list, qr_items: Any, path: str, enabled: bool, scopes: tuple[tuple[list, list], ...] = ()) -> None:
        if qr_items is None:
            qr_items = []
        if not isinstance(qr_items, list):
            return
        scopes = scopes + ((qr_items, q_items),)
        answers = NearestAnswers(scopes, self.index_cache)
        by_link = {q.get("linkId"): q for q in q_items if isinstance(q, dict)}
        seen: dict[str, int] = {}
        for i, qr_item in enumerate(qr_items):
            here = f"{path}.item[{i}]"
            if not isinstance(qr_item, dict):
                continue
            link = qr_item.get("linkId")
            q_item = by_link.get(link)
            if q_item is None:
                elsewhere = _find_anywhere(self.q_root, link) if isinstance(link, str) else None
                hint = f"; the Questionnaire has it at {elsewhere}" if elsewhere else ""
                self.error("structure", f"linkId '{link}' is not an item of the Questionnaire at this place{hint}", f"{here}.linkId")
                continue
            seen[link] = seen.get(link, 0) + 1
            if seen[link] == 2 and not q_item.get("repeats"):
                self.error("structure", f"Item '{link}' does not repeat: its answers belong in one item, which appears more than once", here)
            self.item(q_item, qr_item, here, enabled and is_enabled(q_item, answers), scopes)
        if self.final and enabled:
            self.required(q_items, qr_items, path, answers)

    def item(self, q_item: dict, qr_item: dict, here: str, enabled: bool, scopes: tuple[tuple[list, list], ...]) -> None:
        link, qtype = q_item.get("linkId"), q_item.get("type")
        answers = [a for a in qr_item.get("answer") or [] if isinstance(a, dict)]
        if not enabled and _has_answer(qr_item):
            self.error("business-rule", f"Item '{link}' is disabled by its enableWhen conditions and may not be answered", here)
            return
        if qtype in NO_ANSWER_TYPES and answers:
            self.error("structure", f"Item '{link}' is a {qtype} item and carries no answers", f"{here}.answer[0]")
        if qtype == "display":
            if qr_item.get("item"):
                self.error("structure", f"Display item '{link}' has no child items", f"{here}.item[0]")
            return
        if qtype == "group":
            self.walk(q_item.get("item") or [], qr_item.get("item"), here, enabled, scopes)
            return
        if qr_item.get("item"):
            self.error("structure", f"The children of question '{link}' belong under its answers (item.answer.item), not item.item", f"{here}.item[0]")
        if len(answers) > 1 and not q_item.get("repeats"):
            self.error("structure", f"Item '{link}' does not repeat: it takes one answer, not {len(answers)}", f"{here}.answer[1]")
        if answers and q_item.get("readOnly"):
            self.read_only(q_item, answers, here)
        for j, ans in enumerate(answers):
            for code, message, suffix in check_answer(q_item, ans, self.options_of):
                self.error(code, message, f"{here}.answer[{j}]{suffix}")
            if "item" in ans or q_item.get("item"):
                self.walk(q_item.get("item") or [], ans.get("item"), f"{here}.answer[{j}]", enabled, scopes)

    def read_only(self, q_item: dict, answers: list[dict], here: str) -> None:
        initial = [value_of(x) for x in q_item.get("initial") or [] if isinstance(x, dict) and value_of(x)]
        if initial:
            for j, ans in enumerate(answers):
                v = value_of(ans)
                if v and not any(equal(v[0], v[1], k, iv) for k, iv in initial):
                    self.error("business-rule", f"Item '{q_item.get('linkId')}' is read-only: its answer must be its initial value", f"{here}.answer[{j}].value")
        elif not _is_computed(q_item):
            self.error("business-rule", f"Item '{q_item.get('linkId')}' is read-only and has no initial or computed value to carry", f"{here}.answer[0]")

    def required(self, q_items: list, qr_items: list, path: str, answers: NearestAnswers) -> None:
        present = {}
        for qr_item in qr_items:
            if isinstance(qr_item, dict):
                present.setdefault(qr_item.get("linkId"), []).append(qr_item)
        for q_item in q_items:
            if not isinstance(q_item, dict) or not q_item.get("required") or q_item.get("type") == "display":
                continue
            if not is_enabled(q_item, answers):
                continue
            if not any(_has_answer(x) for x in present.get(q_item.get("linkId"), [])):
                self.error("required", f"Item '{q_item.get('linkId')}' is required in a completed response but has no answer", f"{path}.item")

    def run(self, response: dict) -> list[Issue]:
        self.walk(self.q_root, response.get("item") or [], "QuestionnaireResponse", True, ())
        return self.issues


def validate_response(response: dict, questionnaire: dict, options_of: OptionsOf | None = None) -> list[Issue]:
    """Issues (severity error) of `response` against `questionnaire`; [] when it conforms.

    `options_of(item)` lists the allowed values of a choice item; by default the
    item's own answerOption list (an answerValueSet is then not checked)."""
    return _Walker(response, questionnaire, options_of or answer_options).run(response)

"""Table-driven: each QuestionnaireResponse rule, valid and invalid, nested items."""

from __future__ import annotations

import copy

import pytest

from fhir_server.model.qr_validation import validate_response

EXT = "http://hl7.org/fhir/StructureDefinition/"
Y = {"system": "http://example.org/yn", "code": "Y"}
N = {"system": "http://example.org/yn", "code": "N"}

Q = {
    "resourceType": "Questionnaire",
    "status": "active",
    "item": [
        {"linkId": "intro", "type": "display", "text": "Welcome"},
        {"linkId": "smoker", "type": "boolean", "required": True},
        {"linkId": "cigs", "type": "integer", "enableWhen": [{"question": "smoker", "operator": "=", "answerBoolean": True}],
         "extension": [{"url": EXT + "minValue", "valueInteger": 1}, {"url": EXT + "maxValue", "valueInteger": 100}]},
        {"linkId": "weight", "type": "decimal", "extension": [{"url": EXT + "maxDecimalPlaces", "valueInteger": 1}]},
        {"linkId": "born", "type": "date"},
        {"linkId": "seen", "type": "dateTime"},
        {"linkId": "wake", "type": "time"},
        {"linkId": "name", "type": "string", "maxLength": 10,
         "extension": [{"url": EXT + "minLength", "valueInteger": 2}, {"url": EXT + "regex", "valueString": "[A-Za-z ]+"}]},
        {"linkId": "story", "type": "text"},
        {"linkId": "home", "type": "url"},
        {"linkId": "yn", "type": "choice", "answerOption": [{"valueCoding": Y}, {"valueCoding": N}]},
        {"linkId": "sev", "type": "choice", "answerOption": [{"valueInteger": 1}, {"valueInteger": 2}]},
        {"linkId": "other", "type": "open-choice", "answerOption": [{"valueCoding": Y}]},
        {"linkId": "height", "type": "quantity"},
        {"linkId": "photo", "type": "attachment"},
        {"linkId": "gp", "type": "reference"},
        {"linkId": "meds", "type": "string", "repeats": True},
        {"linkId": "form", "type": "string", "readOnly": True, "initial": [{"valueString": "v1"}]},
        {"linkId": "calc", "type": "integer", "readOnly": True},
        {"linkId": "grp", "type": "group", "required": True, "item": [
            {"linkId": "grp.a", "type": "boolean", "required": True},
            {"linkId": "grp.b", "type": "string", "enableWhen": [
                {"question": "grp.a", "operator": "exists", "answerBoolean": True},
                {"question": "cigs", "operator": ">", "answerInteger": 10}], "enableBehavior": "any"},
        ]},
        {"linkId": "pain", "type": "boolean", "item": [
            {"linkId": "pain.where", "type": "string", "required": True},
        ]},
        {"linkId": "opt", "type": "group", "item": [{"linkId": "opt.x", "type": "string", "required": True}]},
        {"linkId": "rep", "type": "group", "repeats": True, "item": [{"linkId": "rep.x", "type": "string"}]},
        {"linkId": "ge", "type": "integer", "enableWhen": [{"question": "sev", "operator": ">=", "answerInteger": 2}]},
        {"linkId": "le", "type": "integer", "enableWhen": [{"question": "weight", "operator": "<=", "answerDecimal": 50}]},
        {"linkId": "lt", "type": "integer", "enableWhen": [{"question": "born", "operator": "<", "answerDate": "2000-01-01"}]},
        {"linkId": "ne", "type": "integer", "enableWhen": [{"question": "yn", "operator": "!=", "answerCoding": Y}]},
        {"linkId": "nx", "type": "integer", "enableWhen": [{"question": "story", "operator": "exists", "answerBoolean": False}]},
        {"linkId": "both", "type": "integer", "enableWhen": [
            {"question": "smoker", "operator": "=", "answerBoolean": True},
            {"question": "sev", "operator": "=", "answerInteger": 2}]},
    ],
}

BASE = [
    {"linkId": "smoker", "answer": [{"valueBoolean": True}]},
    {"linkId": "grp", "item": [{"linkId": "grp.a", "answer": [{"valueBoolean": False}]}]},
]


def qr(*extra, status="completed", base=True):
    items = (copy.deepcopy(BASE) if base else []) + [copy.deepcopy(x) for x in extra]
    return {"resourceType": "QuestionnaireResponse", "status": status, "item": items}


def a(link, *answers, **more):
    return {"linkId": link, "answer": [dict(x) for x in answers], **more}


VALID = {
    "minimal": qr(),
    "every type": qr(
        a("cigs", {"valueInteger": 5}), a("weight", {"valueDecimal": 72.5}), a("born", {"valueDate": "1980-02-03"}),
        a("seen", {"valueDateTime": "2024-05-01T10:00:00Z"}), a("wake", {"valueTime": "07:30:00"}),
        a("name", {"valueString": "Ann Li"}), a("story", {"valueString": "long text"}), a("home", {"valueUri": "https://x.se"}),
        a("yn", {"valueCoding": Y}), a("sev", {"valueInteger": 2}), a("other", {"valueString": "free"}),
        a("height", {"valueQuantity": {"value": 180, "unit": "cm"}}), a("photo", {"valueAttachment": {"contentType": "image/png"}}),
        a("gp", {"valueReference": {"reference": "Practitioner/1"}}),
    ),
    "dateTime item takes a partial date": qr(a("seen", {"valueDate": "2024-05"})),
    "coding option matched without system in answer": qr(a("yn", {"valueCoding": {"code": "N"}})),
    "open-choice coding from options": qr(a("other", {"valueCoding": Y})),
    "repeating item with several answers": qr(a("meds", {"valueString": "a"}, {"valueString": "b"})),
    "repeating group twice": qr(a("rep", item=None) | {"item": [{"linkId": "rep.x", "answer": [{"valueString": "1"}]}]},
                                {"linkId": "rep", "item": [{"linkId": "rep.x", "answer": [{"valueString": "2"}]}]}),
    "read-only item with its initial value": qr(a("form", {"valueString": "v1"})),
    "in-progress may omit required items": qr(status="in-progress", base=False),
    "nested under answer": qr(a("pain", {"valueBoolean": True, "item": [a("pain.where", {"valueString": "knee"})]})),
    "enableWhen any: first condition": qr(base=False, *[
        a("smoker", {"valueBoolean": False}),
        {"linkId": "grp", "item": [a("grp.a", {"valueBoolean": True}), a("grp.b", {"valueString": "x"})]}]),
    "enableWhen >=": qr(a("sev", {"valueInteger": 2}), a("ge", {"valueInteger": 1})),
    "enableWhen <= decimal": qr(a("weight", {"valueDecimal": 49.5}), a("le", {"valueInteger": 1})),
    "enableWhen < date": qr(a("born", {"valueDate": "1999-12-31"}), a("lt", {"valueInteger": 1})),
    "enableWhen != coding": qr(a("yn", {"valueCoding": N}), a("ne", {"valueInteger": 1})),
    "enableWhen exists false": qr(a("nx", {"valueInteger": 1})),
    "enableWhen all": qr(a("sev", {"valueInteger": 2}), a("both", {"valueInteger": 1})),
    "absent optional group does not demand its required child": qr(),
    "display item present without answers": qr({"linkId": "intro"}),
}

INVALID = {
    "unknown linkId": (qr(a("nope", {"valueString": "x"})), "structure", "QuestionnaireResponse.item[2].linkId"),
    "linkId at the wrong place": (qr(a("grp.a", {"valueBoolean": True})), "structure", "QuestionnaireResponse.item[2].linkId"),
    "text for an integer": (qr(a("cigs", {"valueString": "five"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "integer for a boolean": (qr(base=False, *[a("smoker", {"valueInteger": 1}), BASE[1]]), "value", "QuestionnaireResponse.item[0].answer[0].value"),
    "string for a date": (qr(a("born", {"valueString": "1980"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "dateTime for a time": (qr(a("wake", {"valueDateTime": "2020-01-01T07:00:00Z"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "string for a url": (qr(a("home", {"valueString": "x"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "coding for a quantity": (qr(a("height", {"valueCoding": Y})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "string for an attachment": (qr(a("photo", {"valueString": "x"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "string for a reference": (qr(a("gp", {"valueString": "x"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "decimal for text": (qr(a("story", {"valueDecimal": 1.5})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "code not among options": (qr(a("yn", {"valueCoding": {"system": "http://example.org/yn", "code": "MAYBE"}})), "code-invalid", "QuestionnaireResponse.item[2].answer[0].value"),
    "integer not among options": (qr(a("sev", {"valueInteger": 3})), "code-invalid", "QuestionnaireResponse.item[2].answer[0].value"),
    "open-choice coding not among options": (qr(a("other", {"valueCoding": N})), "code-invalid", "QuestionnaireResponse.item[2].answer[0].value"),
    "string for a choice": (qr(a("yn", {"valueString": "Y"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "two answers to a non-repeating item": (qr(a("name", {"valueString": "ab"}, {"valueString": "cd"})), "structure", "QuestionnaireResponse.item[2].answer[1]"),
    "non-repeating item twice": (qr(a("name", {"valueString": "ab"}), a("name", {"valueString": "cd"})), "structure", "QuestionnaireResponse.item[3]"),
    "required missing when completed": (qr(base=False, *[BASE[1]]), "required", "QuestionnaireResponse.item"),
    "required group missing": (qr(base=False, *[BASE[0]]), "required", "QuestionnaireResponse.item"),
    "required nested in group missing": (qr(base=False, *[BASE[0], {"linkId": "grp", "item": [a("grp.b", {"valueString": "x"})]}, a("cigs", {"valueInteger": 11})]), "required", "QuestionnaireResponse.item[1].item"),
    "required under answer missing": (qr(a("pain", {"valueBoolean": True, "item": []})), "required", "QuestionnaireResponse.item[2].answer[0].item"),
    "required in present optional group": (qr({"linkId": "opt", "item": []}), "required", "QuestionnaireResponse.item[2].item"),
    "required in present optional group without item": (qr({"linkId": "opt"}), "required", "QuestionnaireResponse.item[2].item"),
    "required under answer, no answer.item": (qr(a("pain", {"valueBoolean": True})), "required", "QuestionnaireResponse.item[2].answer[0].item"),
    "answer to disabled item (=)": (qr(base=False, *[a("smoker", {"valueBoolean": False}), BASE[1], a("cigs", {"valueInteger": 3})]), "business-rule", "QuestionnaireResponse.item[2]"),
    "answer to disabled item (any, none true)": (qr(base=False, *[a("smoker", {"valueBoolean": False}), {"linkId": "grp", "item": [a("grp.b", {"valueString": "x"})]}], status="in-progress"), "business-rule", "QuestionnaireResponse.item[1].item[0]"),
    "disabled (>=)": (qr(a("sev", {"valueInteger": 1}), a("ge", {"valueInteger": 1})), "business-rule", "QuestionnaireResponse.item[3]"),
    "disabled (<=)": (qr(a("weight", {"valueDecimal": 50.5}), a("le", {"valueInteger": 1})), "business-rule", "QuestionnaireResponse.item[3]"),
    "disabled (<)": (qr(a("born", {"valueDate": "2000-01-01"}), a("lt", {"valueInteger": 1})), "business-rule", "QuestionnaireResponse.item[3]"),
    "disabled (!=)": (qr(a("yn", {"valueCoding": Y}), a("ne", {"valueInteger": 1})), "business-rule", "QuestionnaireResponse.item[3]"),
    "disabled (!= unanswered)": (qr(a("ne", {"valueInteger": 1})), "business-rule", "QuestionnaireResponse.item[2]"),
    "disabled (exists false)": (qr(a("story", {"valueString": "x"}), a("nx", {"valueInteger": 1})), "business-rule", "QuestionnaireResponse.item[3]"),
    "disabled (all, one false)": (qr(a("sev", {"valueInteger": 1}), a("both", {"valueInteger": 1})), "business-rule", "QuestionnaireResponse.item[3]"),
    "read-only changed": (qr(a("form", {"valueString": "v2"})), "business-rule", "QuestionnaireResponse.item[2].answer[0].value"),
    "read-only without initial": (qr(a("calc", {"valueInteger": 1})), "business-rule", "QuestionnaireResponse.item[2].answer[0]"),
    "maxLength": (qr(a("name", {"valueString": "Anna Maria Li"})), "too-long", "QuestionnaireResponse.item[2].answer[0].value"),
    "minLength": (qr(a("name", {"valueString": "A"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "regex": (qr(a("name", {"valueString": "R2D2"})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "minValue": (qr(a("cigs", {"valueInteger": 0})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "maxValue": (qr(a("cigs", {"valueInteger": 101})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "maxDecimalPlaces": (qr(a("weight", {"valueDecimal": 72.55})), "value", "QuestionnaireResponse.item[2].answer[0].value"),
    "display item with an answer": (qr(a("intro", {"valueString": "x"})), "structure", "QuestionnaireResponse.item[2].answer[0]"),
    "group with an answer": (qr(base=False, *[BASE[0], {"linkId": "grp", "answer": [{"valueString": "x"}], "item": BASE[1]["item"]}]), "structure", "QuestionnaireResponse.item[1].answer[0]"),
    "question children under item.item": (qr({"linkId": "pain", "answer": [{"valueBoolean": True}], "item": [a("pain.where", {"valueString": "x"})]}),
                                           ["structure", "required"], ["QuestionnaireResponse.item[2].item[0]", "QuestionnaireResponse.item[2].answer[0].item"]),
    "unknown linkId nested under answer": (qr(a("pain", {"valueBoolean": True, "item": [a("pain.where", {"valueString": "k"}), a("nope", {"valueString": "x"})]})), "structure", "QuestionnaireResponse.item[2].answer[0].item[1].linkId"),
    "wrong type nested in group": (qr(base=False, *[BASE[0], {"linkId": "grp", "item": [a("grp.a", {"valueString": "yes"})]}]), "value", "QuestionnaireResponse.item[1].item[0].answer[0].value"),
    "answer without value": (qr(a("name", {})), "structure", "QuestionnaireResponse.item[2].answer[0]"),
}


@pytest.mark.parametrize("name", list(VALID))
def test_valid(name):
    assert validate_response(VALID[name], Q) == []


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid(name):
    response, code, expression = INVALID[name]
    issues = validate_response(response, Q)
    assert issues, f"{name}: expected an error"
    assert all(i.severity == "error" for i in issues)
    if isinstance(code, list):  # several problems at once
        assert [(i.code, i.expression) for i in issues] == [(c, [e]) for c, e in zip(code, expression)], name
    elif code is not None:
        assert [(i.code, i.expression) for i in issues] == [(code, [expression])], name


def test_one_issue_per_problem():
    response = qr(a("smoker", {"valueBoolean": True}), a("cigs", {"valueString": "x"}), a("nope", {"valueString": "y"}),
                  a("name", {"valueString": "Anna Maria Li"}), a("yn", {"valueCoding": Y}, {"valueCoding": {"code": "Q"}}), base=False)
    codes = sorted(i.code for i in validate_response(response, Q))
    # text for integer, unknown linkId, too long, two answers, code not an option, required grp
    assert codes == ["code-invalid", "required", "structure", "structure", "too-long", "value"]


def test_disabled_item_children_are_disabled_too():
    q = {"item": [
        {"linkId": "a", "type": "boolean"},
        {"linkId": "g", "type": "group", "enableWhen": [{"question": "a", "operator": "=", "answerBoolean": True}],
         "item": [{"linkId": "g.x", "type": "string", "required": True}]},
    ]}
    ok = {"status": "completed", "item": [a("a", {"valueBoolean": False})]}
    assert validate_response(ok, q) == []  # g disabled: its required child is not demanded
    bad = {"status": "completed", "item": [a("a", {"valueBoolean": False}), {"linkId": "g", "item": [a("g.x", {"valueString": "s"})]}]}
    assert [i.code for i in validate_response(bad, q)] == ["business-rule"]
    needed = {"status": "completed", "item": [a("a", {"valueBoolean": True})]}
    assert [i.code for i in validate_response(needed, q)] == []  # g optional: its absence is fine


# Every enableWhen operator on every answer kind it takes: (source item type, operator, answer[x] of the
# condition, the source's answer (None: unanswered), whether the dependent item is then enabled).
P1 = {"reference": "Patient/1"}
ENABLE_WHEN = [
    ("integer", "=", {"answerInteger": 5}, {"valueInteger": 5}, True),
    ("integer", "=", {"answerInteger": 5}, {"valueInteger": 6}, False),
    ("integer", "!=", {"answerInteger": 5}, {"valueInteger": 6}, True),
    ("integer", "!=", {"answerInteger": 5}, {"valueInteger": 5}, False),
    ("integer", ">", {"answerInteger": 5}, {"valueInteger": 6}, True),
    ("integer", ">", {"answerInteger": 5}, {"valueInteger": 5}, False),
    ("integer", "<", {"answerInteger": 5}, {"valueInteger": 4}, True),
    ("integer", "<", {"answerInteger": 5}, {"valueInteger": 5}, False),
    ("integer", ">=", {"answerInteger": 5}, {"valueInteger": 5}, True),
    ("integer", ">=", {"answerInteger": 5}, {"valueInteger": 4}, False),
    ("integer", "<=", {"answerInteger": 5}, {"valueInteger": 5}, True),
    ("integer", "<=", {"answerInteger": 5}, {"valueInteger": 6}, False),
    ("integer", ">", {"answerInteger": 5}, None, False),  # unanswered: every operator but exists is false
    ("integer", "!=", {"answerInteger": 5}, None, False),
    ("integer", "exists", {"answerBoolean": True}, {"valueInteger": 0}, True),
    ("integer", "exists", {"answerBoolean": True}, None, False),
    ("integer", "exists", {"answerBoolean": False}, None, True),
    ("integer", "exists", {"answerBoolean": False}, {"valueInteger": 0}, False),
    ("decimal", ">", {"answerDecimal": 1.5}, {"valueDecimal": 1.6}, True),
    ("decimal", ">", {"answerDecimal": 1.5}, {"valueDecimal": 1.5}, False),
    ("decimal", "=", {"answerDecimal": 2}, {"valueDecimal": 2.0}, True),
    ("boolean", "=", {"answerBoolean": True}, {"valueBoolean": True}, True),
    ("boolean", "=", {"answerBoolean": True}, {"valueBoolean": False}, False),
    ("boolean", "!=", {"answerBoolean": True}, {"valueBoolean": False}, True),
    ("string", "=", {"answerString": "a"}, {"valueString": "a"}, True),
    ("string", "=", {"answerString": "a"}, {"valueString": "b"}, False),
    ("string", ">", {"answerString": "b"}, {"valueString": "c"}, True),
    ("string", "<", {"answerString": "b"}, {"valueString": "c"}, False),
    ("date", ">", {"answerDate": "2000-01-01"}, {"valueDate": "2000-01-02"}, True),
    ("date", ">", {"answerDate": "2000-01-01"}, {"valueDate": "2000-01-01"}, False),
    ("dateTime", "<", {"answerDateTime": "2024-01-01T00:00:00Z"}, {"valueDateTime": "2024-01-01T01:00:00+02:00"}, True),
    ("dateTime", "<", {"answerDateTime": "2024-01-01T00:00:00Z"}, {"valueDateTime": "2024-01-01T00:00:00Z"}, False),
    ("time", ">=", {"answerTime": "08:00:00"}, {"valueTime": "08:00:00"}, True),
    ("time", ">=", {"answerTime": "08:00:00"}, {"valueTime": "07:59:59"}, False),
    ("choice", "=", {"answerCoding": Y}, {"valueCoding": Y}, True),
    ("choice", "=", {"answerCoding": Y}, {"valueCoding": N}, False),
    ("choice", "!=", {"answerCoding": Y}, {"valueCoding": N}, True),
    ("choice", "!=", {"answerCoding": Y}, {"valueCoding": Y}, False),
    ("quantity", ">", {"answerQuantity": {"value": 38, "unit": "Cel"}}, {"valueQuantity": {"value": 39, "unit": "Cel"}}, True),
    ("quantity", ">", {"answerQuantity": {"value": 38, "unit": "Cel"}}, {"valueQuantity": {"value": 37.5, "unit": "Cel"}}, False),
    ("quantity", "<=", {"answerQuantity": {"value": 38, "unit": "Cel"}}, {"valueQuantity": {"value": 38, "unit": "Cel"}}, True),
    ("reference", "=", {"answerReference": P1}, {"valueReference": P1}, True),
    ("reference", "=", {"answerReference": P1}, {"valueReference": {"reference": "Patient/2"}}, False),
]


@pytest.mark.parametrize("qtype,op,cond,given,enabled", ENABLE_WHEN, ids=[f"{t} {o} {c} {g} -> {e}" for t, o, c, g, e in ENABLE_WHEN])
def test_enable_when_operators(qtype, op, cond, given, enabled):
    src = {"linkId": "src", "type": qtype}
    if qtype == "choice":
        src["answerOption"] = [{"valueCoding": Y}, {"valueCoding": N}]
    dep = {"linkId": "dep", "type": "string", "required": True, "enableWhen": [{"question": "src", "operator": op, **cond}]}
    q = {"item": [src, dep]}
    source = [a("src", given)] if given is not None else []
    answered = {"status": "completed", "item": source + [a("dep", {"valueString": "x"})]}
    unanswered = {"status": "completed", "item": source}
    if enabled:
        assert validate_response(answered, q) == []
        # enabled and required: leaving it out is the error
        assert [(i.code, i.expression) for i in validate_response(unanswered, q)] == [("required", ["QuestionnaireResponse.item"])]
    else:
        assert [(i.code, i.expression) for i in validate_response(answered, q)] == [("business-rule", [f"QuestionnaireResponse.item[{len(source)}]"])]
        assert validate_response(unanswered, q) == []  # disabled: its required does not apply


@pytest.mark.parametrize("behavior,first,second,enabled", [
    ("all", True, True, True), ("all", True, False, False), ("all", False, False, False),
    ("any", True, False, True), ("any", False, True, True), ("any", False, False, False),
])
def test_enable_behavior(behavior, first, second, enabled):
    q = {"item": [{"linkId": "a", "type": "boolean"}, {"linkId": "b", "type": "boolean"},
                  {"linkId": "dep", "type": "group", "enableBehavior": behavior, "enableWhen": [
                      {"question": "a", "operator": "=", "answerBoolean": True},
                      {"question": "b", "operator": "=", "answerBoolean": True}],
                   "item": [{"linkId": "dep.x", "type": "integer"}]}]}
    r = {"status": "completed", "item": [a("a", {"valueBoolean": first}), a("b", {"valueBoolean": second}),
                                         {"linkId": "dep", "item": [a("dep.x", {"valueInteger": 1})]}]}
    issues = validate_response(r, q)
    assert (issues == []) is enabled
    if not enabled:
        assert [(i.code, i.expression) for i in issues] == [("business-rule", ["QuestionnaireResponse.item[2]"])]


# A repeating group: each instance's enableWhen looks at its own answers first (R4
# enableWhen.question: the nearest occurrence, ancestor axis first).
MEDS = {"item": [
    {"linkId": "med", "type": "group", "repeats": True, "item": [
        {"linkId": "med.taken", "type": "boolean"},
        {"linkId": "med.dose", "type": "string", "required": True,
         "enableWhen": [{"question": "med.taken", "operator": "=", "answerBoolean": True}]},
        {"linkId": "med.why-not", "type": "string",
         "enableWhen": [{"question": "med.taken", "operator": "!=", "answerBoolean": True}]},
        {"linkId": "med.no-name", "type": "string",
         "enableWhen": [{"question": "med.name", "operator": "exists", "answerBoolean": False}]},
        {"linkId": "med.name", "type": "string"},
    ]},
    {"linkId": "summary", "type": "string", "enableWhen": [{"question": "med.taken", "operator": "=", "answerBoolean": True}]},
]}


def _med(*items):
    return {"linkId": "med", "item": list(items)}


def test_repeating_group_instances_are_judged_by_their_own_answers():
    taken = _med(a("med.taken", {"valueBoolean": True}), a("med.dose", {"valueString": "5 mg"}), a("med.name", {"valueString": "x"}))
    not_taken = _med(a("med.taken", {"valueBoolean": False}), a("med.why-not", {"valueString": "nausea"}),
                     a("med.no-name", {"valueString": "unknown pill"}))
    ok = {"status": "completed", "item": [taken, not_taken, a("summary", {"valueString": "s"})]}
    assert validate_response(ok, MEDS) == []  # pooled answers would disable why-not and no-name in the 2nd
    dose_where_not_taken = {"status": "completed", "item": [taken, _med(a("med.taken", {"valueBoolean": False}),
                                                                       a("med.dose", {"valueString": "1"}))]}
    assert [(i.code, i.expression) for i in validate_response(dose_where_not_taken, MEDS)] == [
        ("business-rule", ["QuestionnaireResponse.item[1].item[1]"])]
    dose_missing_in_2nd = {"status": "completed", "item": [not_taken, _med(a("med.taken", {"valueBoolean": True}))]}
    assert [(i.code, i.expression) for i in validate_response(dose_missing_in_2nd, MEDS)] == [
        ("required", ["QuestionnaireResponse.item[1].item"])]


def test_a_question_outside_the_group_is_found_by_the_ancestor_axis():
    q = {"item": [{"linkId": "smoker", "type": "boolean"},
                  {"linkId": "g", "type": "group", "repeats": True, "item": [
                      {"linkId": "g.packs", "type": "integer", "enableWhen": [{"question": "smoker", "operator": "=", "answerBoolean": True}]}]}]}
    ok = {"status": "completed", "item": [a("smoker", {"valueBoolean": True}), {"linkId": "g", "item": [a("g.packs", {"valueInteger": 1})]}]}
    assert validate_response(ok, q) == []
    bad = {"status": "completed", "item": [a("smoker", {"valueBoolean": False}), {"linkId": "g", "item": [a("g.packs", {"valueInteger": 1})]}]}
    assert [(i.code, i.expression) for i in validate_response(bad, q)] == [("business-rule", ["QuestionnaireResponse.item[1].item[0]"])]

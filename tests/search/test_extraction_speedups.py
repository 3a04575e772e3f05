"""The fast paths of write-time extraction give exactly what the plain definitions give.

extract() skips parameters by the resource's top-level keys, shares composite
component rows between parameters, dedupes on a cheaper key, caches compiled
paths and folds ASCII strings without unicodedata. Each shortcut is checked
here against a straightforward reference implementation.
"""

from __future__ import annotations

import glob
import itertools
import json
import random
from pathlib import Path

import orjson
import pytest

from fhir_server.search import registry
from fhir_server.search.fhirpath import CHOICE_TYPES, _field, evaluate, trigger_keys
from fhir_server.search.indexer import CONVERTERS, MAX_COMPOSITE_COMBINATIONS, _dedupe, extract
from fhir_server.search.values import _normalize_slow, normalize, parse_date_range
from fhir_server.storage.schema import INDEX_TABLES

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
EXAMPLES = sorted(glob.glob(str(SHARED / "fhir-r4-examples" / "*.json")))
SYNTHEA = sorted(glob.glob(str(SHARED / "synthea-r4" / "*.json")))[:2]


# ---------------------------------------------------------------- reference extraction


def _ref_dedupe(rows):
    seen, out = set(), []
    for r in rows:
        key = tuple(sorted((k, str(v)) for k, v in r.items()))
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _ref_composite(sp, resource, out):
    grp = 0
    for node, _ in evaluate(sp.expression, resource):
        per_comp = []
        for comp in sp.components:
            conv = CONVERTERS.get(comp.type)
            if conv is None:
                per_comp = []
                break
            rows = _ref_dedupe(conv(evaluate(comp.expression, resource, node)))
            if comp.type == "token":
                rows = [r for r in rows if r["code"] is not None]
            per_comp.append(rows)
        if not per_comp or any(not rows for rows in per_comp):
            continue
        for combo in itertools.islice(itertools.product(*per_comp), MAX_COMPOSITE_COMBINATIONS):
            grp += 1
            for i, (comp, row) in enumerate(zip(sp.components, combo)):
                r = dict(row)
                r["param"] = f"{sp.code}${i}"
                r["grp"] = grp
                out[comp.type].append(r)
            out["composite"].append({"param": sp.code, "grp": grp,
                                     "components": orjson.dumps(list(combo), default=str).decode()})


def reference_extract(res_type, resource):
    """Every indexed parameter evaluated in turn, no skipping, no sharing."""
    out = {k: [] for k in INDEX_TABLES}
    for sp in registry.search_parameters_for(res_type).values():
        if not sp.indexed:
            continue
        try:
            if sp.type == "composite":
                _ref_composite(sp, resource, out)
                continue
            conv = CONVERTERS.get(sp.type)
            if conv is None:
                continue
            rows = conv(evaluate(sp.expression, resource))
        except Exception:  # noqa: BLE001
            continue
        for row in _ref_dedupe(rows):
            row["param"] = sp.code
            row["grp"] = None
            out[sp.type].append(row)
    return out


def _canon(out):
    return {k: sorted(json.dumps(r, sort_keys=True, default=repr) for r in rows) for k, rows in out.items()}


def _resources():
    for f in EXAMPLES:
        res = json.loads(Path(f).read_text())
        if registry.is_resource_type(res.get("resourceType", "")):
            yield f, res
    for f in SYNTHEA:
        for e in json.loads(Path(f).read_text()).get("entry", []):
            res = e.get("resource") or {}
            if registry.is_resource_type(res.get("resourceType", "")):
                yield f, res


ODD = [
    # null and duplicate components (a null node is evaluated on the resource, as evaluate() does),
    # choice keys that only look like choices, and values of the wrong shape
    {"resourceType": "Observation", "code": {"coding": [{"system": "s", "code": "c"}], "text": "T"},
     "valueQuantity": {"value": 1, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
     "component": [None, {"code": {"coding": [{"system": "s", "code": "c"}]}, "valueQuantity": {"value": 1}},
                   {"code": {"coding": [{"system": "s", "code": "c"}]}, "valueQuantity": {"value": 1}}, 3],
     "valuequantity": {"value": 9}, "codeFilter": "x", "effectiveDateTime": "2020-01-01T10:00:00+02:00"},
    {"resourceType": "Observation", "code": "notadict", "valueQuantity": {"value": "x"},
     "effectiveDateTime": "garbage", "subject": ["list?"], "component": [None, 3, {"code": []}], "meta": {"tag": "x"}},
    {"resourceType": "Observation", "value": {"value": 2}, "code": {"text": "only text"}},
    {"resourceType": "Observation", "valueCodeableConcept": {"coding": [{"code": "a"}, {"code": "a"}]},
     "code": {"coding": [{"code": "a"}]}, "valueString": "also"},
    {"resourceType": "Patient", "name": [{"family": "Ærø", "given": ["İlker", "ﬁona"]}], "deceasedBoolean": False,
     "gender": None, "telecom": [{"system": "email", "value": "A@B"}], "birthDate": "1970"},
    {"resourceType": "Patient"},
    {"resourceType": "Encounter", "subject": {"reference": "Patient/1"}, "period": {"start": "2020", "end": "2020"}},
]


@pytest.mark.skipif(not EXAMPLES, reason="shared FHIR examples not available")
def test_extract_equals_reference_on_examples():
    n = 0
    for f, res in _resources():
        assert _canon(extract(res["resourceType"], res)) == _canon(reference_extract(res["resourceType"], res)), f
        n += 1
    assert n > 500


def test_extract_equals_reference_on_odd_shapes():
    for res in ODD:
        assert _canon(extract(res["resourceType"], res)) == _canon(reference_extract(res["resourceType"], res)), res


def test_extract_does_not_change_the_resource():
    for res in ODD:
        before = json.dumps(res, sort_keys=True)
        extract(res["resourceType"], res)
        assert json.dumps(res, sort_keys=True) == before


# ---------------------------------------------------------------- skipping by top-level keys


def test_trigger_keys():
    keys = trigger_keys("Observation.value")
    assert {"value", "valueQuantity", "valueString", "valueCodeableConcept"} <= keys
    # an `as` right after the first field leaves only the choice it names
    assert trigger_keys("(Observation.value as Quantity)") == {"value", "valueQuantity"}
    assert trigger_keys("Observation.value.as(string)") == {"value", "valueString"}
    assert trigger_keys("Patient.name | Patient.address") >= {"name", "address"}
    assert trigger_keys("Observation") is None  # the whole resource: cannot be skipped
    assert trigger_keys("Patient.deceased.exists() and Patient.deceased != false") is None  # fhirpathpy: false on empty


@pytest.mark.skipif(not EXAMPLES, reason="shared FHIR examples not available")
def test_absent_trigger_keys_mean_no_result():
    for f, res in _resources():
        for sp in registry.search_parameters_for(res["resourceType"]).values():
            if not sp.indexed:
                continue
            keys = trigger_keys(sp.expression)
            if keys is not None and keys.isdisjoint(res):
                assert evaluate(sp.expression, res) == [], (f, sp.code)


def test_custom_parameter_rebuilds_the_plan():
    sp = registry.SearchParam(code="nick", type="string", url="http://example.org/sp/nick", description="",
                              expression="Patient.name.given", base=("Patient",))
    res = {"resourceType": "Patient", "name": [{"given": ["Bo"]}]}
    assert not [r for r in extract("Patient", res)["string"] if r["param"] == "nick"]
    before = registry._custom
    try:
        registry.set_custom({"Patient": (sp,)})
        assert [r["value_exact"] for r in extract("Patient", res)["string"] if r["param"] == "nick"] == ["Bo"]
    finally:
        registry.set_custom(before)
    assert not [r for r in extract("Patient", res)["string"] if r["param"] == "nick"]


# ---------------------------------------------------------------- choice elements


def _field_reference(items, name):
    out = []
    for node, _ in items:
        if not isinstance(node, dict):
            continue
        if name in node:
            v = node[name]
            out.extend((x, None) for x in v) if isinstance(v, list) else out.append((v, None))
            continue
        n = len(name)
        for k, v in node.items():
            if len(k) > n and k.startswith(name) and k[n].isupper() and k[n:] in CHOICE_TYPES:
                out.append((v, k[n:]))
    return out


def test_choice_lookup_matches_prefix_test():
    node = {"valueQuantity": 1, "valuequantity": 2, "valueQuantityX": 3, "value_Quantity": 4, "valueFoo": 5,
            "valueString": 6, "codeFilter": 7, "codeCodeableConcept": 8, "val": 9, "value": None}
    for name in ("value", "code", "val", "effective", "onset"):
        items = [(node, None), ({k: v for k, v in node.items() if k != "value"}, None), ("str", None), (None, None)]
        assert _field(items, name) == _field_reference(items, name), name


# ---------------------------------------------------------------- dedupe key


def test_converters_keep_one_column_order():
    """_dedupe keys rows by their values in column order, so each converter must build all rows alike."""
    samples = {
        "string": [("a", None), ({"family": "F", "given": ["G"]}, None), ({"city": "C"}, None), ({"x": "y"}, None)],
        "token": [(True, None), ("s", None), (5, None), ({"coding": [{"system": "s", "code": "c"}], "text": "t"}, None),
                  ({"system": "urn:oid:1.2.752.129.2.1.3.1", "value": "19121212-1212"}, None),
                  ({"value": "v", "type": {"coding": [{"system": "ts", "code": "tc"}]}}, None),
                  ({"code": "c", "system": "s", "display": "D"}, None), ({"text": "only"}, None)],
        "date": [("2020", None), ({"start": "2020"}, None), ({"end": "2021-02"}, None),
                 ({"event": ["2020-01-01"], "repeat": {"boundsPeriod": {"start": "2019"}}}, None)],
        "number": [(1, None), (2.5, None), ({"value": 3}, None), ({"low": {"value": 1}}, None),
                   ({"high": {"value": 2}}, None)],
        "quantity": [(1, None), ({"value": 1, "code": "mg", "unit": "mg"}, None), ({"value": 1, "currency": "EUR"}, None),
                     ({"low": {"value": 1}}, None), ({"high": {"value": 2, "code": "kg"}}, None),
                     ({"origin": {"value": 0}}, None)],
        "uri": [("http://x", None)],
        "reference": [("http://x/ValueSet/a|1", None), ({"reference": "Patient/1"}, None),
                      ({"identifier": {"system": "s", "value": "v"}}, None), ({"reference": "#c"}, None)],
    }
    assert set(samples) == set(CONVERTERS)
    for kind, items in samples.items():
        rows = CONVERTERS[kind](items)
        assert len(rows) >= len(items) - 1, kind
        assert len({tuple(r) for r in rows}) == 1, (kind, [tuple(r) for r in rows])


def test_dedupe_matches_sorted_pair_key():
    cols = ("system", "code", "text_norm")
    values = [None, "None", "a", "A", 0.0, -0.0, "0.0", 1, "1", 1.0]
    rng = random.Random(7)
    rows = [dict(zip(cols, (rng.choice(values) for _ in cols))) for _ in range(400)]
    assert _dedupe(rows) == _ref_dedupe(rows)


# ---------------------------------------------------------------- normalisation


TRICKY = ["Müller", "MÜLLER", "Ångström", "ß", "STRASSE", "Straße", "İ", "İstanbul", "ı", "ﬁ", "ﬃ", "Łódź", "Sørensen",
          "Ærø", "Þór", "Œuvre", "Đorđe", "Ðóra", "ǅ", "Ⅻ", "①", "ｆｕｌｌｗｉｄｔｈ", "Σίσυφος", "ΣΑΣ", "Ǆ", "ﬀ",
          "e\u0301", "\u0301", "ǰ", "ẞ", "K", "Å", "", "plain", "MiXeD 123 !?", "\x00\x7f", "tab\there",
          "a" * 600, "ﬁ" * 300, "é" * 600, "ß" * 300, "Ⅻ" * 200]


def test_normalize_equals_slow_path_on_tricky_strings():
    for s in TRICKY:
        assert normalize(s) == _normalize_slow(s), s
        assert normalize(s) == _normalize_slow(s), s  # the cached answer too


def test_normalize_equals_slow_path_on_random_strings():
    rng = random.Random(42)
    alphabet = [chr(c) for c in range(32, 127)] + list("øæłđþœðıİßﬁÅåÉéÑñÇçŁłŒœ\u0301\u0308ΣσςКк中文ǅⅫ①ｆ")
    for _ in range(3000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert normalize(s) == _normalize_slow(s), s


def test_ascii_fast_path_is_lowercase():
    for c in map(chr, range(128)):
        assert c.casefold() == c.lower()
        assert _normalize_slow(c) == c.lower()


def test_parse_date_range_cache_still_raises():
    for _ in range(2):
        with pytest.raises(ValueError):
            parse_date_range("2013-02-30")
    assert parse_date_range("2013") is parse_date_range("2013")  # cached; datetimes are immutable

"""Write resources/questionnaires/*.json: the instruments this server ships.

PHQ-9 and GAD-7 (Pfizer; "no permission required to reproduce, translate,
display or distribute") with LOINC codes and SDC ordinalValue weights on their
answer options, each with a total-score item computed by an SDC
calculatedExpression; a PER-style registration in which a patient picks the
scales to fill in before a visit; a symptom questionnaire that starts a visit
in the triage queue. Run: python scripts/build_questionnaires.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "resources" / "questionnaires"
LOINC = "http://loinc.org"
BASE = "http://fhir-server.example/Questionnaire"
ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
CALC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-calculatedExpression"
INSTRUMENTS = "http://fhir-server.example/CodeSystem/prom-instrument"
DATE = "2024-06-01"

FREQUENCY = [("LA6568-5", "Not at all", 0), ("LA6569-3", "Several days", 1),
             ("LA6570-1", "More than half the days", 2), ("LA6571-9", "Nearly every day", 3)]
DIFFICULTY = [("LA6572-7", "Not difficult at all"), ("LA6573-5", "Somewhat difficult"),
              ("LA6575-0", "Very difficult"), ("LA6574-3", "Extremely difficult")]

PHQ9_ITEMS = [
    ("44250-9", "Little interest or pleasure in doing things"),
    ("44255-8", "Feeling down, depressed, or hopeless"),
    ("44259-0", "Trouble falling or staying asleep, or sleeping too much"),
    ("44254-1", "Feeling tired or having little energy"),
    ("44251-7", "Poor appetite or overeating"),
    ("44258-2", "Feeling bad about yourself - or that you are a failure or have let yourself or your family down"),
    ("44252-5", "Trouble concentrating on things, such as reading the newspaper or watching television"),
    ("44253-3", "Moving or speaking so slowly that other people could have noticed. Or the opposite - being so fidgety or restless that you have been moving around a lot more than usual"),
    ("44260-8", "Thoughts that you would be better off dead, or of hurting yourself in some way"),
]
GAD7_ITEMS = [
    ("69725-0", "Feeling nervous, anxious or on edge"),
    ("68509-9", "Not being able to stop or control worrying"),
    ("69733-4", "Worrying too much about different things"),
    ("69734-2", "Trouble relaxing"),
    ("69735-9", "Being so restless that it is hard to sit still"),
    ("69689-8", "Becoming easily annoyed or irritable"),
    ("69736-7", "Feeling afraid as if something awful might happen"),
]


def _coding(code: str, display: str, system: str = LOINC) -> dict:
    return {"system": system, "code": code, "display": display}


def _scored_item(code: str, text: str) -> dict:
    return {
        "linkId": code,
        "code": [_coding(code, text)],
        "text": text,
        "type": "choice",
        "required": True,
        "answerOption": [
            {"extension": [{"url": ORDINAL, "valueDecimal": w}], "valueCoding": _coding(c, d)} for c, d, w in FREQUENCY
        ],
    }


def _instrument(key: str, title: str, panel: tuple[str, str], total: tuple[str, str], items, difficulty: str) -> dict:
    scored = [_scored_item(c, t) for c, t in items]
    return {
        "resourceType": "Questionnaire",
        "id": key,
        "url": f"{BASE}/{key}",
        "version": "1.0.0",
        "name": key.upper().replace("-", ""),
        "title": title,
        "status": "active",
        "date": DATE,
        "publisher": "fhir-server (instrument: Pfizer Inc., public domain)",
        "subjectType": ["Patient"],
        "code": [_coding(*panel)],
        "item": [
            {"linkId": "intro", "type": "display",
             "text": "Over the last 2 weeks, how often have you been bothered by any of the following problems?"},
            *scored,
            {"linkId": difficulty, "code": [_coding(difficulty, "How difficult have these problems made it for you to do your work, take care of things at home, or get along with other people?")],
             "text": "If you checked off any problems, how difficult have these problems made it for you to do your work, take care of things at home, or get along with other people?",
             "type": "choice", "answerOption": [{"valueCoding": _coding(c, d)} for c, d in DIFFICULTY]},
            {"linkId": total[0], "code": [_coding(*total)], "text": total[1], "type": "integer", "readOnly": True,
             "extension": [{"url": CALC, "valueExpression": {
                 "language": "text/fhirpath",
                 "expression": "%resource.item.answer.value.weight().sum()"}}]},
        ],
    }


def per_registration() -> dict:
    return {
        "resourceType": "Questionnaire",
        "id": "per-registration",
        "url": f"{BASE}/per-registration",
        "version": "1.0.0",
        "name": "PERRegistration",
        "title": "Patient self-registration before a visit: choose your rating scales",
        "status": "active",
        "date": DATE,
        "subjectType": ["Patient"],
        "item": [
            {"linkId": "visit", "text": "Date of your visit", "type": "date", "required": True},
            {"linkId": "scales", "text": "Which rating scales will you fill in before the visit?", "type": "choice",
             "repeats": True, "required": True, "answerOption": [
                 {"valueCoding": _coding(f"{BASE}/phq-9", "PHQ-9 (depression)", INSTRUMENTS)},
                 {"valueCoding": _coding(f"{BASE}/gad-7", "GAD-7 (anxiety)", INSTRUMENTS)},
             ]},
        ],
    }


def symptom_questionnaire() -> dict:
    yn = [{"valueCoding": _coding("LA33-6", "Yes")}, {"valueCoding": _coding("LA32-8", "No")}]
    return {
        "resourceType": "Questionnaire",
        "id": "care-seeking-symptoms",
        "url": f"{BASE}/care-seeking-symptoms",
        "version": "1.0.0",
        "name": "CareSeekingSymptoms",
        "title": "Digital care-seeking: what do you need help with?",
        "status": "active",
        "date": DATE,
        "subjectType": ["Patient"],
        "item": [
            {"linkId": "complaint", "text": "Describe your problem", "type": "text", "required": True, "maxLength": 2000},
            {"linkId": "chest-pain", "text": "Do you have chest pain or trouble breathing right now?", "type": "choice", "required": True, "answerOption": yn},
            {"linkId": "fever", "text": "Do you have a fever?", "type": "choice", "required": True, "answerOption": yn},
            {"linkId": "temperature", "text": "Your temperature (°C)", "type": "decimal",
             "enableWhen": [{"question": "fever", "operator": "=", "answerCoding": _coding("LA33-6", "Yes")}],
             "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueDecimal": 34},
                           {"url": "http://hl7.org/fhir/StructureDefinition/maxValue", "valueDecimal": 43}]},
            {"linkId": "days", "text": "For how many days have you had the problem?", "type": "integer",
             "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/minValue", "valueInteger": 0}]},
        ],
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    docs = [
        _instrument("phq-9", "Patient Health Questionnaire-9 (PHQ-9)", ("44249-1", "PHQ-9 quick depression assessment panel"),
                    ("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score"), PHQ9_ITEMS, "69722-7"),
        _instrument("gad-7", "Generalized Anxiety Disorder 7 (GAD-7)", ("69737-5", "Generalized anxiety disorder 7 item (GAD-7)"),
                    ("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score"), GAD7_ITEMS, "69726-8"),
        per_registration(),
        symptom_questionnaire(),
    ]
    for doc in docs:
        (OUT / f"{doc['id']}.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

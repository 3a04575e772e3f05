"""Input parameters of the terminology operations, from the query string and a POSTed Parameters body.

http://hl7.org/fhir/R4/operations.html#request: GET takes primitive
parameters in the query; POST takes a Parameters resource, whose complex
values (valueCoding, valueCodeableConcept, a ``resource``) are kept as they are.
"""

from __future__ import annotations

from typing import Any

from ..errors import FhirError
from ..rest.operations import OperationCall
from .expand import TerminologyError

# TerminologyError code -> HTTP status
STATUS = {"not-found": 404, "too-costly": 422, "invalid": 400, "not-supported": 400, "processing": 422}


def fail(exc: TerminologyError, expression: str | None = None) -> FhirError:
    return FhirError.of(STATUS.get(exc.code, 400), exc.code, exc.message, expression)


class OpParams:
    """Parameter name -> values (primitives as str/bool/int, complex values as dicts)."""

    def __init__(self, call: OperationCall) -> None:
        self.name = call.name
        self.values: dict[str, list[Any]] = {}
        for k, v in call.params:
            self.values.setdefault(k, []).append(v)
        if call.method == "POST" and call.body.strip():
            from ..model import jsonio

            doc = jsonio.parse_plain(call.body)
            if not isinstance(doc, dict) or doc.get("resourceType") != "Parameters":
                raise FhirError.of(400, "structure", f"A POSTed ${call.name} takes a Parameters resource")
            for p in doc.get("parameter") or []:
                if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                    raise FhirError.of(400, "structure", "Each Parameters.parameter needs a name")
                if "resource" in p:
                    value: Any = p["resource"]
                else:
                    found = [v for k, v in p.items() if k.startswith("value")]
                    if len(found) != 1:
                        raise FhirError.of(400, "structure", f"Parameter '{p['name']}' needs exactly one value[x]")
                    value = found[0]
                self.values.setdefault(p["name"], []).append(value)

    def str(self, name: str, required: bool = False) -> str | None:
        vals = self.values.get(name)
        if not vals:
            if required:
                raise FhirError.of(400, "required", f"${self.name} needs the parameter '{name}'", name)
            return None
        v = vals[0]
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if not isinstance(v, str):
            raise FhirError.of(400, "invalid", f"Parameter '{name}' must be a primitive value", name)
        return v

    def all_str(self, name: str) -> list[str]:
        return [v for v in self.values.get(name, []) if isinstance(v, str)]

    def int(self, name: str, default: int | None = None, minimum: int = 0) -> int | None:
        raw = self.str(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise FhirError.of(400, "invalid", f"Parameter '{name}' must be an integer, got '{raw}'", name) from None
        if value < minimum:
            raise FhirError.of(400, "invalid", f"Parameter '{name}' must be at least {minimum}", name)
        return value

    def bool(self, name: str, default: bool = False) -> bool:
        raw = self.str(name)
        if raw is None:
            return default
        if raw not in ("true", "false"):
            raise FhirError.of(400, "invalid", f"Parameter '{name}' must be true or false, got '{raw}'", name)
        return raw == "true"

    def complex(self, name: str) -> dict | None:
        vals = self.values.get(name)
        if not vals:
            return None
        if not isinstance(vals[0], dict):
            raise FhirError.of(400, "invalid", f"Parameter '{name}' must be a complex value (POST a Parameters resource)", name)
        return vals[0]

    def resource(self, name: str, res_type: str) -> dict | None:
        """A resource parameter (POSTed Parameters ``resource``), validated like a write: 400 when invalid."""
        vals = self.values.get(name)
        if not vals:
            return None
        value = vals[0]
        if not isinstance(value, dict) or value.get("resourceType") != res_type:
            raise FhirError.of(400, "invalid", f"The '{name}' parameter must hold a {res_type}", name)
        from ..model.validation import validate_resource

        errors = validate_resource(value, res_type)
        if errors:
            raise FhirError(400, errors)
        return value

    def coding(self, name: str) -> dict | None:
        """A Coding parameter; on GET also accepted as system|code text."""
        vals = self.values.get(name)
        if not vals:
            return None
        v = vals[0]
        if isinstance(v, str):
            system, sep, code = v.partition("|")
            return {"system": system, "code": code} if sep else {"code": v}
        return check_coding(v, name)


def check_coding(v, name: str) -> dict:
    """A Coding whose system, code, version and display are strings (400 otherwise)."""
    if not isinstance(v, dict) or any(k in v and not isinstance(v[k], str) for k in ("system", "code", "version", "display")):
        raise FhirError.of(400, "invalid", f"Parameter '{name}' must be a Coding (system, code, display as strings)", name)
    return v


def parameters(*items: tuple[str, Any]) -> dict:
    """A Parameters resource from (name, value) pairs; value types: bool, int, str (as valueString unless
    given as ("code", x) / ("uri", x)), dict with "part" (nested parts), Coding dict ("coding", {...})."""
    out = []
    for name, value in items:
        if value is None:
            continue
        out.append(_param(name, value))
    return {"resourceType": "Parameters", "parameter": out}


def _param(name: str, value: Any) -> dict:
    if isinstance(value, bool):
        return {"name": name, "valueBoolean": value}
    if isinstance(value, int):
        return {"name": name, "valueInteger": value}
    if isinstance(value, str):
        return {"name": name, "valueString": value}
    if isinstance(value, tuple):
        kind, v = value
        return {"name": name, f"value{kind[0].upper()}{kind[1:]}": v}
    if isinstance(value, list):  # parts
        return {"name": name, "part": [_param(n, v) for n, v in value if v is not None]}
    raise TypeError(value)

"""The one exception type every layer raises for a client-visible failure.

The HTTP edge turns it into an OperationOutcome with the given status; no layer
below the edge needs to know about HTTP beyond the status number.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Issue:
    """One OperationOutcome.issue."""

    severity: str  # fatal | error | warning | information
    code: str  # FHIR issue-type code: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    expression: list[str] | None = None

    def to_json(self) -> dict:
        out: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = list(self.expression)
        return out


@dataclass
class FhirError(Exception):
    """A failure that answers the client with `status` and an OperationOutcome."""

    status: int
    issues: list[Issue] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:  # pragma: no cover - for logs
        return f"{self.status}: " + "; ".join(i.diagnostics for i in self.issues)

    @classmethod
    def of(cls, status: int, code: str, diagnostics: str, expression: str | list[str] | None = None) -> "FhirError":
        expr = [expression] if isinstance(expression, str) else expression
        return cls(status, [Issue("error", code, diagnostics, expr)])


def operation_outcome(issues: list[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}

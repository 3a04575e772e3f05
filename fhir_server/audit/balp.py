"""AuditEvent resources in the IHE Basic Audit Log Patterns (BALP) shape.

Follows IHE ITI BALP 1.1 (https://profiles.ihe.net/ITI/BALP/) on FHIR R4 AuditEvent:

- `type` audit-event-type#rest and `subtype` restful-interaction#<interaction> for RESTful
  interactions (profiles Create, Read, Update, Delete, Query and their Patient* variants);
  DICOM DCM#110114 User Authentication / DCM#110122 Login for logins at the token endpoint;
  DCM#110106 Export for `$export`; DCM#110107 Import for HL7 v2 messages received.
- `action` C R U D E (a search and an operation are E, "execute").
- `outcome` 0 success, 4 minor failure (the client's request was refused or invalid: 4xx),
  8 serious failure (the server failed: 5xx); `outcomeDesc` gives the HTTP status and why.
- agents: the user (v3-ParticipationType#IRCP, `requestor` true, `who` the token's fhirUser or
  the subject's identifier, `altId` the token subject, `policy` the token id); the client
  application (DCM#110153 Source Role ID, `who.identifier` the OAuth client_id, `network` its
  address); this server (DCM#110152 Destination Role ID, `network` its base URL); and, when the
  request acts for somebody else, that person (v3-RoleClass#PAT, `requestor` false,
  `who` Patient/ID), from the token's SMART `patient` context or `X-Acting-For`.
- `source.observer`: this server (security-source-type#4 Application Server).
- entities: each patient the data was about (audit-entity-type#1 Person, object-role#1 Patient,
  `what` Patient/ID); each resource read or written (#2 System Object, object-role#4 Domain
  Resource, `what` Type/ID[/_history/v]); the query of a search (#2, object-role#24 Query,
  `query` the base64 of the search parameters); the request id (BALP BasicAuditEntityType#XrequestId).

The AuditEvent R4 search parameters `patient`, `agent`, `date`, `entity`, `type`, `outcome`,
`subtype`, `action` all find these events (agent.who / entity.what are plain references).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from ..ids import new_id
from ..model.jsonguard import scrub

DCM = "http://dicom.nema.org/resources/ontology/DCM"
EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACTION = "http://hl7.org/fhir/audit-event-action"
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
BALP_PROFILE = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
SERVER_DEVICE = "Device/fhir-server"  # this server as `source.observer` (a contained-free logical reference)

_KIND_TYPE = {
    "rest": (EVENT_TYPE, "rest", "Restful Operation"),
    "login": (DCM, "110114", "User Authentication"),
    "export": (DCM, "110106", "Export"),
    "hl7v2": (DCM, "110107", "Import"),
}
_PROFILE = {"C": "Create", "R": "Read", "U": "Update", "D": "Delete", "E": "Query"}


@dataclass(slots=True)
class AuditFacts:
    """What happened, in plain values; `to_resource` makes the AuditEvent.

    `kind` rest | login | export | hl7v2; `subtype` a restful-interaction code (read, vread,
    search-type, create, ...), `operation` ($everything, ...) or for logins `login`; `action`
    C R U D E; `status` the HTTP status answered; `recorded` an aware UTC datetime."""

    kind: str
    subtype: str
    action: str
    status: int
    recorded: datetime
    detail: str = ""  # why it failed (the diagnostics), or the operation's name
    subject: str | None = None  # the token's `sub` (None: no verified token)
    client_id: str | None = None
    fhir_user: str | None = None
    token_id: str | None = None  # the token's `jti`
    context_patient: str | None = None  # SMART `patient` context (Patient id)
    acting_for: str | None = None  # X-Acting-For reference (Patient/ID)
    client_address: str = ""
    server_base: str = ""
    request_id: str = ""
    data: list[tuple[str, str]] = field(default_factory=list)  # (type, id or id/_history/v)
    query: str | None = None  # search parameters as sent (searches and operations)
    patients: list[str] = field(default_factory=list)  # Patient ids the data was about

    @property
    def outcome(self) -> str:
        if self.status < 400:
            return "0"
        return "4" if self.status < 500 else "8"


# The order of a facts row (`facts_row`). Rows are stored (the access log's documents, audit.log):
# a new field goes at the end, with a default, and rows stored before it render without it.
FACT_FIELDS = tuple(AuditFacts.__dataclass_fields__)


def facts_row(f: AuditFacts) -> tuple:
    """`f` as a row: its values in FACT_FIELDS order. The access log's edge queues rows (a
    tuple serialises in a seventh of the time a dataclass does, audit.log.encode_row) and
    the writer makes the facts again (`dict(zip(FACT_FIELDS, row))`)."""
    return tuple(getattr(f, name) for name in FACT_FIELDS)


def _coding(system: str, code: str, display: str | None = None) -> dict:
    return {"system": system, "code": code, **({"display": display} if display else {})}


def to_resource(f: AuditFacts, scrubbed: bool = True, event_id: str | None = None) -> dict:
    """The AuditEvent (R4) for `f` as a JSON-ready dict, with id `event_id` (default: a new
    one). `scrubbed` False
    leaves characters a FHIR string may not hold in place for a caller that serialises the
    event and cleans it then (`store.insert_events`: one serialisation instead of two)."""
    system, code, display = _KIND_TYPE[f.kind]
    if f.kind == "login":
        subtype = _coding(DCM, "110122", "Login")
    elif f.subtype.startswith("$"):
        subtype = _coding(INTERACTION, "operation", "operation")
    else:
        subtype = _coding(INTERACTION, f.subtype, f.subtype)
    event: dict = {"resourceType": "AuditEvent", "id": event_id or new_id()}
    if f.kind == "rest" and f.action in _PROFILE and f.outcome == "0":
        name = _PROFILE[f.action]
        event["meta"] = {"profile": [BALP_PROFILE + ("Patient" + name if f.patients else name)]}
    event.update({
        "type": _coding(system, code, display),
        "subtype": [subtype],
        "action": f.action,
        "recorded": f.recorded.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "outcome": f.outcome,
    })
    desc = f"HTTP {f.status}" + (f": {f.detail}" if f.detail else "")
    event["outcomeDesc"] = desc[:1024]
    event["agent"] = _agents(f)
    event["source"] = {"site": f.server_base or "fhir-server", "observer": {"reference": SERVER_DEVICE},
                       "type": [_coding(SOURCE_TYPE, "4", "Application Server")]}
    entities = _entities(f)
    if entities:
        event["entity"] = entities
    # a refused request may carry a NUL or a lone surrogate: stored as U+FFFD (checked on the
    # serialised event first; walking every string of every event cost a tenth of a read)
    return scrub(event) if scrubbed and _needs_scrub(event) else event


def _needs_scrub(event: dict) -> bool:
    """Whether a string of `event` holds a character FHIR strings may not hold."""
    return clean_json(event) is None


def clean_json(event: dict) -> bytes | None:
    """`event` serialised, or None when a string of it holds a character FHIR strings may not
    hold: orjson refuses lone surrogates and writes control characters as \\u00XX, \\b or \\f
    (other text is never escaped that way, so a match is at worst a needless scrub)."""
    try:
        raw = orjson.dumps(event)
    except orjson.JSONEncodeError:
        return None
    return None if b"\\u00" in raw or b"\\b" in raw or b"\\f" in raw else raw


def _agents(f: AuditFacts) -> list[dict]:
    user: dict = {"type": {"coding": [_coding(PARTICIPATION, "IRCP", "information recipient")]}, "requestor": True}
    if f.fhir_user:
        user["who"] = {"reference": f.fhir_user}
    if f.subject:
        user.setdefault("who", {"identifier": {"value": f.subject}})
        user["altId"] = f.subject
        user["name"] = f.subject
    else:
        user["name"] = "anonymous (no valid token)"
    if f.token_id:
        user["policy"] = [f.token_id]
    agents = [user]
    client: dict = {"type": {"coding": [_coding(DCM, "110153", "Source Role ID")]}, "requestor": False}
    if f.client_id:
        client["who"] = {"identifier": {"value": f.client_id}}
        client["name"] = f.client_id
    if f.client_address:
        client["network"] = {"address": f.client_address, "type": "2"}  # 2: IP address
    agents.append(client)
    server: dict = {"type": {"coding": [_coding(DCM, "110152", "Destination Role ID")]}, "requestor": False,
                    "who": {"reference": SERVER_DEVICE}}
    if f.server_base:
        server["network"] = {"address": f.server_base, "type": "5"}  # 5: URI
    agents.append(server)
    behalf = f.acting_for or (f"Patient/{f.context_patient}" if f.context_patient else None)
    if behalf and behalf != f.fhir_user:
        agents.append({"type": {"coding": [_coding(ROLE_CLASS, "PAT", "patient")]}, "requestor": False,
                       "who": {"reference": behalf}, "name": "on behalf of"})
    return agents


def _entities(f: AuditFacts) -> list[dict]:
    out: list[dict] = []
    for pid in dict.fromkeys(f.patients):  # each patient once, in order
        out.append({"what": {"reference": f"Patient/{pid}"}, "type": _coding(ENTITY_TYPE, "1", "Person"),
                    "role": _coding(OBJECT_ROLE, "1", "Patient")})
    for res_type, res_id in dict.fromkeys(f.data):
        if res_type == "Patient" and res_id.split("/", 1)[0] in f.patients and "/" not in res_id:
            continue  # the Patient entity says it already
        out.append({"what": {"reference": f"{res_type}/{res_id}"}, "type": _coding(ENTITY_TYPE, "2", "System Object"),
                    "role": _coding(OBJECT_ROLE, "4", "Domain Resource")})
    if f.query is not None:
        out.append({"type": _coding(ENTITY_TYPE, "2", "System Object"), "role": _coding(OBJECT_ROLE, "24", "Query"),
                    "query": base64.b64encode(f.query.encode("utf-8")).decode("ascii")})
    if f.request_id:
        out.append({"what": {"identifier": {"value": f.request_id}}, "type": _coding(BALP_ENTITY_TYPE, "XrequestId", "X-Request-Id")})
    return out

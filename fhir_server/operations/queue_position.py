"""`GET [base]/Task/{id}/$queue-position`: a patient's place in the care unit's queue.

Answer (Parameters):
- `status` (code): the Task's status;
- `position` (integer, 1 = next), `ahead` (integer) and `queueLength` (integer),
  while the Task waits (requested, received, accepted, ready);
- `priority` (code);
- `open` (boolean): whether the care unit is open now;
- `answersFrom` (dateTime): now when open, else the next opening (opening hours
  per care unit: mappings/care_units.yaml);
- `expectedStart` (dateTime): when staff can be expected to take the visit,
  counting `minutesPerVisit` of open time per visit ahead.
Errors: 404 when the Task is not known, 410 when deleted. The caller needs
read access to the Task (the authorisation seam decides, e.g. its patient).
"""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.interactions import check_read, fhir_instant, read_outcome
from ..rest.operations import OperationCall, operation
from ..storage import repository as repo
from ..workflows.triage.hours import care_unit
from ..workflows.triage.queue import place_in_queue

DEFINITION = "http://fhir-server.example/OperationDefinition/Task-queue-position"


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


@operation("queue-position", ("instance",), types=("Task",), definition=DEFINITION)
def queue_position(call: OperationCall) -> Outcome:
    if call.method != "GET":
        raise FhirError.of(405, "not-supported", "$queue-position is read with GET")
    check_read(call.ctx, "Task", call.res_id)
    with call.db.read() as conn:
        out = read_outcome("Task", call.res_id, repo.read_current(conn, "Task", call.res_id))
        task = orjson.loads(out.body)
        place = place_in_queue(conn, task)
    params = [{"name": "status", "valueCode": task.get("status")}]
    if task.get("priority"):
        params.append({"name": "priority", "valueCode": task["priority"]})
    if place.position is not None:
        params += [{"name": "position", "valueInteger": place.position},
                   {"name": "ahead", "valueInteger": place.position - 1},
                   {"name": "queueLength", "valueInteger": place.length}]
    unit = care_unit((task.get("owner") or {}).get("reference"))
    if unit is not None:
        now = now_utc()
        params.append({"name": "open", "valueBoolean": unit.is_open(now)})
        opening = unit.next_opening(now)
        if opening is not None:
            params.append({"name": "answersFrom", "valueDateTime": fhir_instant(opening)})
        if place.position is not None:
            start = unit.expected_start(now, place.position - 1)
            if start is not None:
                params.append({"name": "expectedStart", "valueDateTime": fhir_instant(start)})
    return Outcome(status=200, body=jsonio.dumps({"resourceType": "Parameters", "parameter": params}))

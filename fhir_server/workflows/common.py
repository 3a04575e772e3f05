"""What the workflows share: the context they write with, rules kept as data,
and a create-or-update of a resource inside the current transaction."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import orjson
from sqlalchemy import Connection

from ..rest.context import RequestContext
from ..security.authz import Principal
from ..storage import repository as repo

RESOURCES = Path(__file__).resolve().parents[2] / "resources"
QUESTIONNAIRES = RESOURCES / "questionnaires"
WORKFLOW_SUBJECT = "system:workflows"


def workflow_context() -> RequestContext:
    """The caller a workflow acts as when it writes a derived resource (a score
    Observation, a Task): a backend service with system/*.* access."""
    return RequestContext(base_url="", principal=Principal(subject=WORKFLOW_SUBJECT, scopes=frozenset({"system/*.*"})))


@lru_cache(maxsize=1)
def questionnaire_rules() -> dict:
    """resources/questionnaires/rules.json: Questionnaire url -> what its completion starts."""
    path = QUESTIONNAIRES / "rules.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def rule_for(canonical: str | None) -> dict | None:
    if not isinstance(canonical, str):
        return None
    return questionnaire_rules().get(canonical.partition("|")[0])


def put(conn: Connection, resource: dict, only_if_absent: bool = False) -> bool:
    """Create or update `resource` (its id set) in this transaction, through the
    REST layer (validated, indexed, events emitted). Returns False when skipped:
    `only_if_absent` and it exists, or the stored content is the same."""
    from ..rest import interactions as ix

    current = repo.read_current(conn, resource["resourceType"], resource["id"])
    if current is not None and not current.deleted and current.content:
        if only_if_absent:
            return False
        stored = orjson.loads(current.content)
        stored.pop("meta", None)
        if stored == {k: v for k, v in resource.items() if k != "meta"}:
            return False
    ix.update(conn, workflow_context(), resource["resourceType"], resource["id"], ix.ParsedResource.from_bytes(orjson.dumps(resource)))
    return True


def load_shipped(db, directory: Path, res_type: str) -> None:
    """Keep the resources shipped as JSON files in `directory` on the server."""
    for path in sorted(directory.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("resourceType") != res_type:
            continue
        with db.write() as conn:
            put(conn, doc)

"""Reading a subscription's delivery state, for $status, $events and the token operation."""

from __future__ import annotations

import json

from sqlalchemy import select

from ..errors import FhirError
from ..rest.operations import OperationCall
from ..security.authz import AccessRequest, authorize
from .spec import SubscriptionSpec
from .tables import subscriptions


def subscription_ids(call: OperationCall) -> list[str]:
    """The instance's id, or the `id` parameters of a type-level call (400 if none)."""
    from ..rest.operations import body_parameters

    if call.res_id:
        return [call.res_id]
    ids = [v for k, v in list(call.params) + body_parameters(call) if k == "id"]
    ids = [i.split("/")[-1] for raw in ids for i in raw.split(",") if i]
    if not ids:
        raise FhirError.of(400, "required", f"${call.name} at type level needs one or more 'id' parameters")
    return ids


def load(call: OperationCall, sub_id: str):
    """(row, spec) of a subscription the caller may read; 404 when unknown, 410 when deleted
    (as a read of it answers, R4 http.html#read)."""
    from ..rest.interactions import check_visible
    from ..storage import repository as repo

    authorize(call.ctx.principal, AccessRequest("read", "Subscription", sub_id))
    deleted = False
    with call.db.read() as conn:
        row = conn.execute(select(subscriptions).where(subscriptions.c.id == sub_id[:64])).first()
        if row is not None:
            check_visible(conn, call.ctx, "Subscription", sub_id)  # outside the caller's reach: 404
            current = repo.read_current(conn, "Subscription", row.id)
            deleted = current is None or current.deleted
    if row is None:
        raise FhirError.of(404, "not-found", f"Subscription/{sub_id} is not known")
    if deleted:
        raise FhirError.of(410, "deleted", f"Subscription/{sub_id} was deleted")
    return row, SubscriptionSpec.from_json(json.loads(row.spec))

"""`GET [base]/Task/{id}/$chat-poll`: the chat of a care-seeking visit, as a long poll.

The chat is Communications about the visit's Task (`partOf` or `basedOn` the
Task; a reply names the message it answers in `inResponseTo`), written with
the ordinary REST create. The portal hears of new messages by calling this
operation with the cursor of its previous answer:

- `_cursor`: opaque, from the previous answer's `next` link (absent = the
  whole chat so far);
- `_wait`: seconds to wait for a message when there is none yet (0-30,
  default 0); the answer comes as soon as one is committed.

Answer: a Bundle (type `history`) of the Communications written after the
cursor, in commit order (a changed message appears again as a new version),
and a `next` link with the cursor to call with next time. Built on the
commit-ordered change feed, so no message is missed or repeated. Needs
Communication in FHIR_SERVER_CHANGE_FEED_TYPES (the default). The caller needs
read access to the Task. Errors: 400 for a bad parameter, 404/410 for the Task.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from sqlalchemy import select

from ..errors import FhirError
from ..model import jsonio
from ..rest.context import Outcome
from ..rest.interactions import check_read, read_outcome
from ..rest.operations import OperationCall, operation
from ..search.access import type_condition
from ..storage import change_feed as feed
from ..storage import repository as repo
from ..storage.schema import idx_reference, resources
from .changes import feed_entry, feed_types

DEFINITION = "http://fhir-server.example/OperationDefinition/Task-chat-poll"
MAX_WAIT = 30
POLL_INTERVAL = 0.25
PAGE = 200


def _message_ids(conn, task_id: str, access, base_url: str) -> list[str]:
    """Ids of the Task's Communications that the caller may read (the same access
    criteria as a search: another record's message never shows in this chat)."""
    x, r = idx_reference.c, resources.c
    stmt = (
        select(r.res_id).join(idx_reference, x.res_pk == r.pk)
        .where(x.res_type == "Communication", x.param.in_(("part-of", "based-on")), x.target_type == "Task", x.target_id == task_id)
        .distinct()
    )
    cond = type_condition(access, "Communication", "r", resources, base_url)
    if cond is not None:
        stmt = stmt.where(cond)
    return [row[0] for row in conn.execute(stmt)]


@operation("chat-poll", ("instance",), types=("Task",), definition=DEFINITION)
def chat_poll(call: OperationCall) -> Outcome:
    if call.method != "GET":
        raise FhirError.of(405, "not-supported", "$chat-poll is read with GET")
    if "Communication" not in feed_types():
        raise FhirError.of(400, "not-supported", "$chat-poll needs Communication in the change feed (FHIR_SERVER_CHANGE_FEED_TYPES)")
    args = dict(call.params)
    for name in args:
        if name not in ("_cursor", "_wait", "_format", "_pretty"):
            raise FhirError.of(400, "not-supported", f"Parameter '{name}' is not supported by $chat-poll", name)
    try:
        wait = float(args.get("_wait", 0))
        if not 0 <= wait <= MAX_WAIT:
            raise ValueError
    except ValueError:
        raise FhirError.of(400, "invalid", f"_wait must be a number of seconds from 0 to {MAX_WAIT}", "_wait") from None
    cursor = feed.decode_cursor(args.get("_cursor"))
    check_read(call.ctx, "Task", call.res_id)
    deadline = time.monotonic() + wait
    while True:
        with call.db.read() as conn:
            read_outcome("Task", call.res_id, repo.read_current(conn, "Task", call.res_id))
            ids = _message_ids(conn, call.res_id, call.ctx.access(), call.ctx.base_url)
            rows = feed.read_after(conn, cursor, ["Communication"], PAGE, ids) if ids else []
        if rows or time.monotonic() >= deadline:
            break
        time.sleep(POLL_INTERVAL)
    entries = [feed_entry(call.ctx.base_url, row) for row in rows]
    if rows:
        cursor = (rows[-1][0], rows[-1][1])
    nxt = f"{call.ctx.base_url}/Task/{call.res_id}/$chat-poll?{urlencode([('_cursor', feed.encode_cursor(*cursor))])}"
    bundle = {"resourceType": "Bundle", "type": "history", "link": [{"relation": "next", "url": nxt}], "entry": entries}
    return Outcome(status=200, body=jsonio.dumps(bundle))

"""What `fhir-server notify status` shows: channels, deliveries by state, what waits and why, failures."""

from __future__ import annotations

from sqlalchemy import func, select

from ..storage.schema import jobs, notify_deliveries as nd
from . import channels as ch
from .requests import SEND_JOB


def status(db, settings, limit: int = 20) -> dict:
    """{channels: {email, sms: "configured" | reason}, jobs: {state: n}, deliveries: {state: n},
    waiting: [...], failures: [...]} — rows are dicts with request, channel, address, error, updated."""
    out: dict = {"channels": {
        "email": ch.email_configured(settings) or f"configured ({settings.notify_smtp_host}:{settings.notify_smtp_port})",
        "sms": ch.sms_configured(settings) or f"configured ({settings.notify_sms_url})",
    }}
    with db.read() as conn:
        out["jobs"] = {s: n for s, n in conn.execute(
            select(jobs.c.state, func.count()).where(jobs.c.kind == SEND_JOB).group_by(jobs.c.state))}
        out["deliveries"] = {s: n for s, n in conn.execute(select(nd.c.state, func.count()).group_by(nd.c.state))}

        def rows(*states):
            q = (select(nd.c.request_id, nd.c.channel, nd.c.address, nd.c.state, nd.c.attempts, nd.c.error, nd.c.updated)
                 .where(nd.c.state.in_(states)).order_by(nd.c.updated.desc()).limit(limit))
            return [{"request": f"CommunicationRequest/{r.request_id}", "channel": r.channel, "address": r.address,
                     "state": r.state, "attempts": r.attempts, "error": r.error, "updated": str(r.updated)}
                    for r in conn.execute(q)]

        out["waiting"] = rows("waiting")
        out["failures"] = rows("failed", "not-done")
        out["scheduled"] = conn.execute(
            select(func.count()).where(jobs.c.kind == SEND_JOB, jobs.c.state == "scheduled")).scalar_one()
    return out

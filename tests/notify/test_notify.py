"""The notifier end to end: booking confirmations and reminders reach a real SMTP
server and a fake SMS gateway, once, in the patient's language."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from fhir_server import clock
from fhir_server.jobs.runner import run_pending
from fhir_server.notify import queue_notification
from fhir_server.notify.status import status
from fhir_server.storage.database import Database

from tests.workflows.booking.helpers import FHIR_JSON, appointment, make_patient, make_schedule, make_slot, post


def _send(app, settings) -> int:
    return run_pending(app.state.db, settings, kinds=["notify.send"])


def _addr() -> str:
    return f"p{uuid.uuid4().hex[:10]}@example.org"


def _phone() -> str:
    return f"+4670{uuid.uuid4().int % 10**7:07d}"


def _book(client, patient, start, language=None):
    pract, sched = make_schedule(client)
    slot = make_slot(client, sched["id"], start)
    return post(client, appointment(slot, patient["id"], pract_id=pract["id"]))


def test_confirmation_by_email_and_sms_in_patients_language(client, app, notify_settings, smtp_server, sms_gateway):
    mail, phone = _addr(), _phone()
    patient = make_patient(client, email=mail, phone=phone, language="pl-PL")
    appt = _book(client, patient, datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=5))
    # the CommunicationRequest is there with the booking, before anything is sent
    crs = client.get(f"/fhir/CommunicationRequest?patient=Patient/{patient['id']}&status=active").json()
    assert crs["total"] >= 1
    _send(app, notify_settings)
    (msg,) = smtp_server.to(mail)
    assert msg["Subject"].startswith("Twoja wizyta")
    assert "zarezerwowana" in msg.get_content()
    (sms,) = sms_gateway.to(phone)
    assert sms["body"]["message"].startswith("Wizyta zarezerwowana")
    assert sms["headers"]["Authorization"] == "Bearer secret-token"
    assert sms["headers"]["Idempotency-Key"].endswith("-sms")
    comms = client.get(f"/fhir/Communication?patient=Patient/{patient['id']}").json()
    sent = [e["resource"] for e in comms["entry"]]
    assert {c["status"] for c in sent} == {"completed"}
    ids = {c["identifier"][0]["system"].rsplit("/", 1)[-1]: c["identifier"][0]["value"] for c in sent}
    assert ids["email"] == msg["Message-ID"]
    assert ids["sms"].startswith("gw-")
    assert all(c["about"][0]["reference"] == f"Appointment/{appt['id']}" for c in sent)
    # running the worker again sends nothing more
    _send(app, notify_settings)
    assert len(smtp_server.to(mail)) == 1 and len(sms_gateway.to(phone)) == 1


def test_reminder_sent_once_at_the_configured_hour(client, app, notify_settings, smtp_server):
    from zoneinfo import ZoneInfo

    tz = ZoneInfo(notify_settings.booking_timezone)
    mail = _addr()
    patient = make_patient(client, email=mail, language="sv")
    start_local = (datetime.now(tz) + timedelta(days=4)).replace(hour=10, minute=0, second=0, microsecond=0)
    _book(client, patient, start_local.astimezone(timezone.utc))
    _send(app, notify_settings)
    assert [m["Subject"] for m in smtp_server.to(mail)] == [f"Din tid {start_local:%Y-%m-%d} kl. 10:00"]
    hour = notify_settings.notify_reminder_hour
    due = (start_local - timedelta(days=1)).replace(hour=hour)
    with clock.frozen(due - timedelta(minutes=1)) as c:
        _send(app, notify_settings)
        assert len(smtp_server.to(mail)) == 1  # not yet
        c.set(due + timedelta(seconds=30))
        _send(app, notify_settings)
        reminders = [m for m in smtp_server.to(mail) if m["Subject"].startswith("Påminnelse")]
        assert len(reminders) == 1
        assert "i morgon" in reminders[0].get_content()
        c.advance(hours=2)
        _send(app, notify_settings)
        assert len(smtp_server.to(mail)) == 2


def test_cancel_revokes_reminder_and_confirms_cancellation(client, app, notify_settings, smtp_server):
    mail = _addr()
    patient = make_patient(client, email=mail, language="en")
    start = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(days=6)
    appt = _book(client, patient, start)
    appt["status"] = "cancelled"
    assert client.put(f"/fhir/Appointment/{appt['id']}", json=appt, headers=FHIR_JSON).status_code == 200
    with clock.frozen(start) as _c:
        _send(app, notify_settings)
    subjects = [m["Subject"] for m in smtp_server.to(mail)]
    assert len(subjects) == 2 and "cancelled" in subjects[1] and not any("Reminder" in s for s in subjects)
    crs = client.get(f"/fhir/CommunicationRequest?patient=Patient/{patient['id']}&status=revoked").json()
    assert crs["total"] == 1


def test_no_channel_configured_stays_pending_and_status_says_why(client, app, settings, notify_settings, smtp_server):
    mail = _addr()
    patient = make_patient(client, email=mail)
    with app.state.db.write() as conn:
        cr_id = queue_notification(conn, f"Patient/{patient['id']}", "queue-your-turn", {"where": "Rum 3"}, channels=("email",))
    _send(app, settings)  # no SMTP host in these settings
    cr = client.get(f"/fhir/CommunicationRequest/{cr_id}").json()
    assert cr["status"] == "active"
    report = status(app.state.db, settings)
    assert "FHIR_SERVER_NOTIFY_SMTP_HOST" in report["channels"]["email"]
    waiting = [w for w in report["waiting"] if w["request"] == f"CommunicationRequest/{cr_id}"]
    assert waiting and "no SMTP server configured" in waiting[0]["error"]
    # once e-mail is configured, the worker's housekeeping queues it again and it is sent
    from fhir_server.notify.delivery import requeue_waiting

    requeue_waiting(app.state.db, notify_settings)
    _send(app, notify_settings)
    (msg,) = smtp_server.to(mail)
    assert msg["Subject"] == "It is your turn" and "Rum 3" in msg.get_content()
    assert client.get(f"/fhir/CommunicationRequest/{cr_id}").json()["status"] == "completed"


def test_restart_between_queueing_and_sending_sends_once(client, app, notify_settings, smtp_server):
    mail = _addr()
    patient = make_patient(client, email=mail)
    with app.state.db.write() as conn:
        queue_notification(conn, f"Patient/{patient['id']}", "claim-decision", {"reference": "C-1", "decision": "approved"},
                           channels=("email",))
    # a new process: its own engine on the same database
    fresh = Database(notify_settings.resolved_database_url())
    try:
        run_pending(fresh, notify_settings, kinds=["notify.send"])
        run_pending(fresh, notify_settings, kinds=["notify.send"])
    finally:
        fresh.dispose()
    _send(app, notify_settings)
    assert len(smtp_server.to(mail)) == 1


def test_gateway_failure_is_retried_with_backoff_and_sent_once(client, app, notify_settings, sms_gateway):
    phone = _phone()
    patient = make_patient(client, phone=phone)
    sms_gateway.fail_next = 1
    with app.state.db.write() as conn:
        cr_id = queue_notification(conn, f"Patient/{patient['id']}", "queue-your-turn", {}, channels=("sms",))
    _send(app, notify_settings)
    assert sms_gateway.to(phone) == []
    assert status(app.state.db, notify_settings)["deliveries"].get("failed", 0) >= 1
    with clock.frozen(datetime.now(timezone.utc) + timedelta(minutes=5)):
        _send(app, notify_settings)
    assert len(sms_gateway.to(phone)) == 1
    comms = client.get(f"/fhir/Communication?based-on=CommunicationRequest/{cr_id}").json()
    assert comms["total"] == 1 and comms["entry"][0]["resource"]["status"] == "completed"


def test_no_contact_point_records_not_done(client, app, notify_settings):
    patient = make_patient(client)
    with app.state.db.write() as conn:
        cr_id = queue_notification(conn, f"Patient/{patient['id']}", "queue-your-turn", {}, channels=("email",))
    _send(app, notify_settings)
    comm = client.get(f"/fhir/Communication?based-on=CommunicationRequest/{cr_id}").json()["entry"][0]["resource"]
    assert comm["status"] == "not-done" and "no e-mail address" in comm["statusReason"]["text"]


def test_cli_notify_status(settings):
    import json

    from typer.testing import CliRunner

    from fhir_server.cli import app as cli

    result = CliRunner().invoke(cli, ["notify", "status", "--database-url", settings.resolved_database_url()],
                                env={"FHIR_SERVER_NOTIFY_SMTP_HOST": ""})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert "FHIR_SERVER_NOTIFY_SMTP_HOST" in report["channels"]["email"]
    assert set(report) >= {"channels", "jobs", "deliveries", "waiting", "failures"}

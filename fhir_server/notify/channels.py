"""Delivery channels: e-mail over SMTP (aiosmtplib) and SMS through an HTTP gateway (httpx).

Each `send_*` delivers one message and returns the message id the other side
knows it by, or raises `TemporaryFailure` (worth a retry: connection refused,
timeouts, 5xx/4xx SMTP replies that are transient, HTTP 5xx/429) or
`PermanentFailure` (retrying cannot help: the address was refused, HTTP 4xx).
Both take `key`, the idempotency key of the delivery: the e-mail's Message-ID
is built from it and the SMS gateway gets it as `Idempotency-Key`, so a resend
after a crash mid-delivery is recognisable as the same message.
"""

from __future__ import annotations

import asyncio
import json
from email.message import EmailMessage
from email.utils import formatdate
from string import Template

import aiosmtplib
import httpx


class TemporaryFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


def email_configured(settings) -> str | None:
    """None when usable, else why not."""
    return None if settings.notify_smtp_host else "no SMTP server configured (FHIR_SERVER_NOTIFY_SMTP_HOST)"


def sms_configured(settings) -> str | None:
    return None if settings.notify_sms_url else "no SMS gateway configured (FHIR_SERVER_NOTIFY_SMS_URL)"


def send_email(settings, to: str, subject: str, body: str, key: str, language: str | None = None) -> str:
    """Send one plain-text e-mail; returns its Message-ID."""
    domain = (settings.notify_smtp_from.rsplit("@", 1)[-1] or "localhost").strip(">")
    message_id = f"<{key}@{domain}>"
    msg = EmailMessage()
    msg["From"] = settings.notify_smtp_from
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id
    if language:
        msg["Content-Language"] = language
    msg.set_content(body)
    try:
        asyncio.run(aiosmtplib.send(
            msg,
            hostname=settings.notify_smtp_host,
            port=settings.notify_smtp_port,
            username=settings.notify_smtp_username or None,
            password=settings.notify_smtp_password or None,
            start_tls=settings.notify_smtp_starttls,
            timeout=settings.notify_smtp_timeout,
        ))
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise PermanentFailure(f"the SMTP server refused {to}: {exc}") from None
    except aiosmtplib.SMTPResponseException as exc:
        if 500 <= exc.code < 600:
            raise PermanentFailure(f"SMTP {exc.code}: {exc.message}") from None
        raise TemporaryFailure(f"SMTP {exc.code}: {exc.message}") from None
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as exc:
        raise TemporaryFailure(f"SMTP: {type(exc).__name__}: {exc}") from None
    return message_id


def send_sms(settings, to: str, text: str, key: str) -> str:
    """POST one SMS to the gateway; returns the gateway's message id (or `key`)."""
    body = Template(settings.notify_sms_body).safe_substitute(to=to, text=text, text_json=json.dumps(text), key=key)
    headers = {"Idempotency-Key": key,
               "Content-Type": "application/json" if body.lstrip().startswith("{") else "application/x-www-form-urlencoded"}
    auth = None
    if settings.notify_sms_token:
        headers["Authorization"] = f"Bearer {settings.notify_sms_token}"
    elif settings.notify_sms_username:
        auth = (settings.notify_sms_username, settings.notify_sms_password)
    try:
        r = httpx.post(settings.notify_sms_url, content=body.encode("utf-8"), headers=headers, auth=auth, timeout=30)
    except httpx.HTTPError as exc:
        raise TemporaryFailure(f"SMS gateway: {type(exc).__name__}: {exc}") from None
    if r.status_code == 429 or r.status_code >= 500:
        raise TemporaryFailure(f"SMS gateway answered {r.status_code}: {r.text[:200]}")
    if r.status_code >= 400:
        raise PermanentFailure(f"SMS gateway refused the message ({r.status_code}): {r.text[:200]}")
    try:
        reply = r.json()
    except ValueError:
        reply = None
    if isinstance(reply, dict) and reply.get(settings.notify_sms_message_id_field):
        return str(reply[settings.notify_sms_message_id_field])
    return r.headers.get("X-Message-Id") or key

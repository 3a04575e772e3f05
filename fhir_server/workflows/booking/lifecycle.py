"""Appointment lifecycle notifications (filled in with the notifier)."""

from __future__ import annotations

_settings = None


def configure(settings) -> None:
    global _settings
    _settings = settings


def on_appointment_change(conn, old, new) -> None:
    return None

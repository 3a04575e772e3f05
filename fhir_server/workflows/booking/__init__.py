"""Booking: Slots that cannot be double-booked, holds, booking windows, and the
Appointment lifecycle's notifications (docs/booking.md).

Plugged in through fhir_server.plugins: `setup` installs the write rule, the
change subscriber, the hold-expiry job and the notification hooks; the
$find/$hold/$book operations live in fhir_server/operations/.
"""

from __future__ import annotations


def setup(settings) -> None:
    from ... import events
    from ...rest import rules
    from . import holds, integrity, lifecycle, slot_index

    integrity.configure(settings)
    rules.register(integrity.check_write, name="booking.slot-integrity")
    events.subscribe(integrity.on_change, types=("Appointment", "Slot"))
    events.subscribe(slot_index.on_slot_change, types=("Slot",))
    holds.register()
    lifecycle.configure(settings)
    integrity.add_hook(lifecycle.on_appointment_change)

"""Digital care-seeking: a completed symptom questionnaire queues a visit (start.py),
the queue's order and a patient's place in it (queue.py, $queue-position),
opening hours per care unit (hours.py), 'it's your turn' (turn.py), and chat as
Communications on the visit's Task (the $chat-poll long poll)."""

from __future__ import annotations


def setup(settings) -> None:
    from ... import events
    from ...rest import rules
    from . import start  # noqa: F401  (registers the start-visit action)
    from .priority_rule import ordered_code_rule
    from .turn import on_change

    rules.register(ordered_code_rule, "ordered_code_rule")
    events.subscribe(on_change)

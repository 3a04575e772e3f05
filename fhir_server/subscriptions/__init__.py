"""FHIR Subscriptions: R4 criteria subscriptions and the R5 Backport IG's topic-based ones.

Every resource change is evaluated inside its write transaction (matching.py)
and becomes rows of the durable `subscription_events` outbox; a worker in each
server process delivers them (delivery.py) over rest-hook or websocket.
"""

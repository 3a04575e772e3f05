"""The mission's rules on top of the generic engine (booking, PROMs, claims, ...).

Each workflow reacts inside the write's transaction (DESIGN.md)."""

"""Workflows: the mission's rules on top of the generic engine, reacting to writes in their transaction."""

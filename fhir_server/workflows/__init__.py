"""The mission's workflows on top of the generic engine; each reacts to writes in their transaction."""

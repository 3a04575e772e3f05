"""The built-in authorization server's OAuth endpoints (Authlib)."""

from __future__ import annotations


def attach_oauth(app, db, settings, keys, verifier) -> None:
    return None

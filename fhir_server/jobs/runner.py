"""Start and stop the background workers with the application."""

from __future__ import annotations

from fastapi import FastAPI

from ..config import Settings
from ..storage.database import Database


def attach_background_workers(app: FastAPI, db: Database, settings: Settings) -> None:
    """Placeholder until the job queue lands: no workers yet."""
    return None

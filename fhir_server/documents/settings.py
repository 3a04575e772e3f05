"""The settings the document code runs with (set by the plugin's `setup`)."""

from __future__ import annotations

_settings = None


def use(settings) -> None:
    global _settings
    _settings = settings


def current():
    global _settings
    if _settings is None:
        from ..config import Settings

        _settings = Settings()
    return _settings

"""Opening hours per care unit (mappings/care_units.yaml) and when an answer can be expected.

`expected_start(unit, now, ahead)`: the instant staff can be expected to take
a visit with `ahead` visits before it: from `now` (or the next opening if the
unit is closed), `ahead * minutesPerVisit` minutes of open time later,
carried over closing hours into the next opening. Instants are timezone-aware;
the unit's hours are local time in its `timezone`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

DATA = Path(__file__).resolve().parents[3] / "mappings" / "care_units.yaml"
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass(frozen=True)
class CareUnit:
    key: str
    timezone: ZoneInfo
    minutes_per_visit: int
    hours: dict[int, tuple[time, time]]  # weekday (0 = Monday) -> (opens, closes)

    def open_intervals(self, start: datetime):
        """(opens, closes) aware datetimes from the day of `start` on, for 14 days."""
        local = start.astimezone(self.timezone)
        for d in range(15):
            day = local.date() + timedelta(days=d)
            span = self.hours.get(day.weekday())
            if span:
                yield (datetime.combine(day, span[0], self.timezone), datetime.combine(day, span[1], self.timezone))

    def is_open(self, now: datetime) -> bool:
        return any(o <= now < c for o, c in self.open_intervals(now - timedelta(days=1)))

    def next_opening(self, now: datetime) -> datetime | None:
        """`now` when open, else the next opening."""
        for o, c in self.open_intervals(now - timedelta(days=1)):
            if c > now:
                return max(o, now)
        return None

    def expected_start(self, now: datetime, ahead: int) -> datetime | None:
        need = timedelta(minutes=max(ahead, 0) * self.minutes_per_visit)
        for o, c in self.open_intervals(now - timedelta(days=1)):
            if c <= now:
                continue
            begin = max(o, now)
            if begin + need < c:
                return begin + need
            need -= c - begin
        return None


def _parse(key: str, raw: dict) -> CareUnit:
    hours = {}
    for name, span in (raw.get("hours") or {}).items():
        hours[DAYS.index(name)] = (time.fromisoformat(span[0]), time.fromisoformat(span[1]))
    return CareUnit(key, ZoneInfo(raw.get("timezone", "UTC")), int(raw.get("minutesPerVisit", 10)), hours)


@lru_cache(maxsize=1)
def _units() -> dict[str, CareUnit]:
    raw = yaml.safe_load(DATA.read_text(encoding="utf-8")) if DATA.exists() else {}
    return {key: _parse(key, value) for key, value in (raw or {}).items()}


def care_unit(owner_reference: str | None) -> CareUnit | None:
    units = _units()
    return units.get(owner_reference or "") or units.get("default")

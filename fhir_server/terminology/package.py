"""The terminology the server ships: R4 CodeSystems, ValueSets and ConceptMaps in ``terminology/``.

``scripts/derive_terminology.py`` writes them as gzipped NDJSON (narrative
dropped) together with the compiled binding tables; this module reads them.
Nothing here touches the database: ``PackageResolver`` answers look-ups from
the files (used by the derive script and as the fallback when the database
has no resource for a canonical URL).
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from .codesystem import CodeSystemIndex

TERMINOLOGY_DIR = Path(__file__).resolve().parents[2] / "terminology"
PACKAGE_FILES = ("r4-codesystems.ndjson.gz", "r4-valuesets.ndjson.gz", "r4-conceptmaps.ndjson.gz")
LOCAL_DIR = TERMINOLOGY_DIR / "local"  # hand-kept resources the mission needs (JSON, one resource per file)


def package_paths() -> list[Path]:
    paths = [TERMINOLOGY_DIR / f for f in PACKAGE_FILES if (TERMINOLOGY_DIR / f).exists()]
    if LOCAL_DIR.exists():
        paths.extend(sorted(LOCAL_DIR.glob("*.json")))
    return paths


def iter_resources(paths: list[Path] | None = None) -> Iterator[dict]:
    """Every resource of the shipped package, in file order."""
    for path in paths if paths is not None else package_paths():
        if path.name.endswith(".ndjson.gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)
        else:
            yield json.loads(path.read_text(encoding="utf-8"))


class PackageResolver:
    """Canonical resources by URL from an iterable of resources (latest listed wins)."""

    def __init__(self, resources: Iterator[dict]) -> None:
        self.by_url: dict[tuple[str, str], dict] = {}
        self._cs: dict[str, CodeSystemIndex] = {}
        for r in resources:
            url = r.get("url")
            if isinstance(url, str):
                self.by_url[(r["resourceType"], url)] = r

    def by_url_values(self, res_type: str) -> list[dict]:
        return [r for (t, _u), r in self.by_url.items() if t == res_type]

    def resource(self, res_type: str, url: str) -> dict | None:
        return self.by_url.get((res_type, url))

    def code_system(self, url: str, version: str | None = None) -> CodeSystemIndex | None:
        if url not in self._cs:
            r = self.by_url.get(("CodeSystem", url))
            if r is None:
                return None
            self._cs[url] = CodeSystemIndex(r)
        return self._cs[url]

    def value_set(self, url: str, version: str | None = None) -> dict | None:
        return self.by_url.get(("ValueSet", url))


@lru_cache(maxsize=1)
def package_resolver() -> PackageResolver:
    return PackageResolver(iter_resources())


@lru_cache(maxsize=1)
def binding_tables() -> dict:
    """``terminology/bindings.json``: see scripts/derive_terminology.py for its shape."""
    path = TERMINOLOGY_DIR / "bindings.json"
    if not path.exists():
        return {"bindings": {}, "valueSets": {}, "open": {}}
    return json.loads(path.read_text(encoding="utf-8"))

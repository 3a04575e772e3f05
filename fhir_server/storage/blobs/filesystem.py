"""Blobs as files under one directory (the default store).

Layout: ``<root>/<key>.bin`` holds the bytes, ``<root>/<key>.json`` the
metadata, written after the bytes so that a blob without metadata is an
unfinished write. Bytes are first written to ``<root>/.partial/`` and moved
into place with an atomic rename on commit.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .base import CHUNK, BlobInfo, BlobStore, BlobStoreError, BlobWriter, check_key


class _FileWriter(BlobWriter):
    def __init__(self, store: "FilesystemBlobStore", key: str):
        super().__init__(key)
        self.store = store
        self.partial = store.root / ".partial" / uuid.uuid4().hex
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.partial, "wb")

    def _write(self, chunk: bytes) -> None:
        try:
            self.fh.write(chunk)
        except OSError as exc:
            raise BlobStoreError(f"cannot write blob: {exc}") from exc

    def _commit(self, info: BlobInfo) -> None:
        data, meta = self.store._paths(self.key)
        try:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            data.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.partial, data)
            tmp = meta.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(info.to_json()))
            os.replace(tmp, meta)
        except OSError as exc:
            self._abort()
            raise BlobStoreError(f"cannot store blob: {exc}") from exc

    def _abort(self) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.partial.unlink(missing_ok=True)


class FilesystemBlobStore(BlobStore):
    name = "filesystem"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _paths(self, key: str) -> tuple[Path, Path]:
        base = self.root / check_key(key)
        return base.with_name(base.name + ".bin"), base.with_name(base.name + ".json")

    def writer(self, key: str) -> BlobWriter:
        return _FileWriter(self, key)

    def info(self, key: str) -> BlobInfo | None:
        _data, meta = self._paths(key)
        try:
            return BlobInfo.from_json(json.loads(meta.read_text()))
        except FileNotFoundError:
            return None

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        data, _meta = self._paths(key)
        try:
            fh = open(data, "rb")
        except FileNotFoundError as exc:
            raise BlobStoreError(f"blob {key} is missing from the store") from exc

        def chunks() -> Iterator[bytes]:
            with fh:
                fh.seek(start)
                left = None if end is None else end - start + 1
                while left is None or left > 0:
                    buf = fh.read(CHUNK if left is None else min(CHUNK, left))
                    if not buf:
                        return
                    if left is not None:
                        left -= len(buf)
                    yield buf

        return chunks()

    def delete(self, key: str) -> None:
        for p in self._paths(key):
            p.unlink(missing_ok=True)

    def list_blobs(self, after: str = "") -> Iterator[tuple[str, datetime]]:
        """Keys in the order of their '/'-separated parts (a sorted directory walk);
        subtrees wholly before `after` are not entered."""
        cursor = after.split("/") if after else []

        def walk(directory: Path, parts: list[str]) -> Iterator[tuple[str, datetime]]:
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                return
            named = []
            for e in entries:
                if e.name.startswith("."):
                    continue  # .partial and temporary files
                if e.is_dir(follow_symlinks=False):
                    named.append((e.name, True, e))
                elif e.name.endswith(".bin"):
                    named.append((e.name[:-4], False, e))
            for name, is_dir, e in sorted(named, key=lambda n: (n[0], n[1])):
                here = parts + [name]
                if is_dir:
                    if here >= cursor[:len(here)]:
                        yield from walk(Path(e.path), here)
                elif here > cursor:
                    try:
                        mtime = e.stat(follow_symlinks=False).st_mtime
                    except FileNotFoundError:
                        continue
                    yield "/".join(here), datetime.fromtimestamp(mtime, timezone.utc)

        return walk(self.root, [])

    def discard_unfinished(self, before: datetime) -> int:
        """Partial uploads under .partial/ last written before `before`."""
        removed = 0
        limit = before.timestamp()
        partial = self.root / ".partial"
        if not partial.is_dir():
            return 0
        for e in os.scandir(partial):
            try:
                if e.is_file(follow_symlinks=False) and e.stat().st_mtime < limit:
                    os.unlink(e.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

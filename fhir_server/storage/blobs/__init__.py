"""Binary content storage: filesystem (default) or S3-compatible, streamed.

`configure(settings)` opens the store the settings name and makes it the
current one; `current()` is what the Binary and DocumentReference code use.
"""

from __future__ import annotations

from .base import BlobInfo, BlobStore, BlobStoreError, BlobWriter

__all__ = ["BlobInfo", "BlobStore", "BlobStoreError", "BlobWriter", "configure", "current", "open_store", "use"]

_current: BlobStore | None = None


def open_store(settings) -> BlobStore:
    """The store `settings.blob_store` names: ``filesystem`` (under `blob_dir`) or ``s3``."""
    kind = (settings.blob_store or "filesystem").lower()
    if kind == "filesystem":
        from .filesystem import FilesystemBlobStore

        return FilesystemBlobStore(settings.blob_dir)
    if kind == "s3":
        from .s3 import S3BlobStore

        if not settings.s3_bucket:
            raise ValueError("blob_store=s3 needs FHIR_SERVER_S3_BUCKET")
        return S3BlobStore(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            create_bucket=settings.s3_create_bucket,
        )
    raise ValueError(f"unknown blob_store {kind!r}: use filesystem or s3")


def configure(settings) -> BlobStore:
    return use(open_store(settings))


def use(store: BlobStore) -> BlobStore:
    global _current
    _current = store
    return store


def current() -> BlobStore:
    if _current is None:
        from ...config import Settings

        return configure(Settings())
    return _current

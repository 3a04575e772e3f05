"""Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...), via boto3.

Bytes go up as a multipart upload in parts of `part_size` bytes (so memory
stays at one part whatever the file's size); a blob smaller than one part is
a single PUT. Metadata is a small JSON object beside the bytes
(``<prefix><key>.json``), written after them, so the hashes computed while
streaming never need a second pass. Reads use ranged GETs.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Iterator

from .base import CHUNK, BlobInfo, BlobStore, BlobStoreError, BlobWriter, check_key

MIN_PART = 5 * 1024 * 1024  # S3's smallest part (all but the last)


class _S3Writer(BlobWriter):
    def __init__(self, store: "S3BlobStore", key: str):
        super().__init__(key)
        self.store = store
        self.object_key = store._data_key(key)
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    def _write(self, chunk: bytes) -> None:
        self.buffer += chunk
        if len(self.buffer) >= self.store.part_size:
            self._flush_part()

    def _flush_part(self) -> None:
        s3 = self.store.client
        try:
            if self.upload_id is None:
                self.upload_id = s3.create_multipart_upload(Bucket=self.store.bucket, Key=self.object_key)["UploadId"]
            number = len(self.parts) + 1
            resp = s3.upload_part(Bucket=self.store.bucket, Key=self.object_key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer))
        except Exception as exc:  # botocore's ClientError, connection errors
            raise BlobStoreError(f"S3 upload failed: {exc}") from exc
        self.parts.append({"ETag": resp["ETag"], "PartNumber": number})
        self.buffer = bytearray()

    def _commit(self, info: BlobInfo) -> None:
        s3, bucket = self.store.client, self.store.bucket
        try:
            if self.upload_id is None:
                s3.put_object(Bucket=bucket, Key=self.object_key, Body=bytes(self.buffer))
            else:
                if self.buffer:
                    self._flush_part()
                s3.complete_multipart_upload(Bucket=bucket, Key=self.object_key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts})
            self.buffer = bytearray()
            s3.put_object(Bucket=bucket, Key=self.store._meta_key(self.key), Body=json.dumps(info.to_json()).encode(), ContentType="application/json")
        except BlobStoreError:
            self._abort()
            raise
        except Exception as exc:
            self._abort()
            raise BlobStoreError(f"S3 upload failed: {exc}") from exc

    def _abort(self) -> None:
        self.buffer = bytearray()
        try:
            if self.upload_id is not None:
                self.store.client.abort_multipart_upload(Bucket=self.store.bucket, Key=self.object_key, UploadId=self.upload_id)
            self.store.delete(self.key)
        except Exception:  # best effort: an abandoned upload is S3 lifecycle's to expire
            pass


class S3BlobStore(BlobStore):
    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        create_bucket: bool = False,
        client=None,
    ):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        self.part_size = max(part_size, MIN_PART)
        # Credentials: explicit ones, else boto3's usual chain (environment, profile, instance role).
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, s3={"addressing_style": "path"}),
        )
        if create_bucket:
            self._ensure_bucket(region)

    def _ensure_bucket(self, region: str | None) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception:
            kwargs = {}
            if region and region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            self.client.create_bucket(Bucket=self.bucket, **kwargs)

    def _data_key(self, key: str) -> str:
        return f"{self.prefix}{check_key(key)}.bin"

    def _meta_key(self, key: str) -> str:
        return f"{self.prefix}{check_key(key)}.json"

    def writer(self, key: str) -> BlobWriter:
        return _S3Writer(self, key)

    def info(self, key: str) -> BlobInfo | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._meta_key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None
        except Exception as exc:
            raise BlobStoreError(f"S3 read failed: {exc}") from exc
        return BlobInfo.from_json(json.loads(body))

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        kwargs = {}
        if start or end is not None:
            kwargs["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._data_key(key), **kwargs)["Body"]
        except Exception as exc:
            raise BlobStoreError(f"S3 read failed: {exc}") from exc

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return chunks()

    def delete(self, key: str) -> None:
        try:
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self._data_key(key)}, {"Key": self._meta_key(key)}], "Quiet": True},
            )
        except Exception as exc:
            raise BlobStoreError(f"S3 delete failed: {exc}") from exc

    def list_blobs(self, after: str = "") -> Iterator[tuple[str, datetime]]:
        """Keys in S3's listing order (UTF-8 binary), resumed with StartAfter."""
        kwargs = {"Bucket": self.bucket, "Prefix": self.prefix}
        if after:
            kwargs["StartAfter"] = self._data_key(after)
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for obj in page.get("Contents") or []:
                    name = obj["Key"][len(self.prefix):]
                    if name.endswith(".bin"):
                        modified = obj["LastModified"]
                        yield name[:-4], modified if modified.tzinfo else modified.replace(tzinfo=timezone.utc)
        except Exception as exc:
            raise BlobStoreError(f"S3 listing failed: {exc}") from exc

    def discard_unfinished(self, before: datetime) -> int:
        """Abort multipart uploads under the prefix initiated before `before`."""
        removed = 0
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for up in page.get("Uploads") or []:
                    started = up["Initiated"] if up["Initiated"].tzinfo else up["Initiated"].replace(tzinfo=timezone.utc)
                    if started < before:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                        removed += 1
        except Exception as exc:
            raise BlobStoreError(f"S3 listing failed: {exc}") from exc
        return removed

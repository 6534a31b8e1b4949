"""Object storage through the S3 API: AWS, Ceph RGW, MinIO, or OpenStack Swift's
``s3api`` middleware.

A location ``s3://bucket/path/to/volume.zarr`` (a Swift container is a bucket) becomes a
tensorstore ``s3`` kvstore, so every format (OME-Zarr, zarr, N5, precomputed) reads it
lazily, chunk by chunk, like a local folder.

Where and as whom come from the environment (or the AWS config files it names), never
from the location, so no secret ends up in a URL, a job file or a log:

``ILASTIK_WEB_S3_ENDPOINT`` (or ``AWS_ENDPOINT_URL``)
    The service, e.g. ``https://swift.example.org`` (default: AWS itself).
``AWS_REGION`` (or ``AWS_DEFAULT_REGION``)
    The signing region (Swift's ``s3api`` ``location``; default ``us-east-1``).
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
    Keys (Swift: EC2 credentials from ``openstack ec2 credentials create``, or tempauth's
    ``account:user`` and key). Without them: ``AWS_SHARED_CREDENTIALS_FILE`` (default
    ``~/.aws/credentials``) and ``AWS_PROFILE``; without those, anonymous access.

Swift's ``s3api`` (2.30) refuses conditional PUTs, which tensorstore uses to create
metadata and to update partial chunks, so :func:`unconditional_copy` lets writers encode
into memory and upload whole objects (see :mod:`hpc.writers`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import tensorstore as ts

from ilastik_web.errors import SourceError

SCHEME = "s3://"
ENDPOINT_ENV = ("ILASTIK_WEB_S3_ENDPOINT", "AWS_ENDPOINT_URL")
REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")


def is_s3(text: str) -> bool:
    return text.strip().lower().startswith(SCHEME)


def split_s3(text: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; SourceError when malformed.

    Credentials in the location (``s3://key:secret@bucket``) are refused without echoing
    them back.
    """
    rest = text.strip()[len(SCHEME):]
    bucket, _, path = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise SourceError("s3:// locations must not carry credentials; set them in the "
                          "environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or a "
                          "credentials file")
    if not _BUCKET.fullmatch(bucket):
        raise SourceError(f"{text.strip()}: not s3://bucket/path")
    path = "/".join(part for part in path.split("/") if part)
    if any(part in (".", "..") for part in path.split("/")):
        raise SourceError(f"{text.strip()}: '.' and '..' are not allowed in object paths")
    return bucket, path


def _first_env(names: tuple[str, ...]) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def credentials_spec() -> dict[str, Any]:
    """tensorstore ``aws_credentials``: environment keys, else a profile file, else none."""
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return {"type": "environment"}
    file = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or str(Path.home() / ".aws" /
                                                                "credentials")
    if Path(file).is_file():
        spec = {"type": "profile", "credentials_file": file}
        if os.environ.get("AWS_PROFILE"):
            spec["profile"] = os.environ["AWS_PROFILE"]
        return spec
    return {"type": "anonymous"}


def kvstore_spec(bucket: str, path: str) -> dict[str, Any]:
    """The tensorstore kvstore of folder ``path`` in ``bucket``, configured from the
    environment (no secret in the spec itself)."""
    spec: dict[str, Any] = {
        "driver": "s3", "bucket": bucket, "path": f"{path}/" if path else "",
        "aws_region": _first_env(REGION_ENV) or "us-east-1",
        "aws_credentials": credentials_spec(),
    }
    endpoint = _first_env(ENDPOINT_ENV)
    if endpoint:
        spec["endpoint"] = endpoint.rstrip("/")
    return spec


def open_kvstore(spec: dict[str, Any]) -> ts.KvStore:
    try:
        return ts.KvStore.open(spec).result()
    except Exception as exc:
        raise SourceError(f"s3://{spec.get('bucket')}/{spec.get('path', '')}: cannot open: "
                          f"{type(exc).__name__}") from exc


def has_objects(spec: dict[str, Any]) -> bool:
    """Whether any object lives under the kvstore's path."""
    store = open_kvstore(spec)
    return bool(store.list().result())


def unconditional_copy(source: ts.KvStore, destination: ts.KvStore,
                       skip: tuple[str, ...] = ()) -> int:
    """Copy every key of ``source`` (typically a memory kvstore) to ``destination`` with
    plain PUTs; returns how many objects were written."""
    keys = [k for k in source.list().result() if k.decode() not in skip]
    writes = []
    for key in keys:
        value = source.read(key).result()
        if value.state == "value":
            writes.append(destination.write(key, value.value))
    for write in writes:
        write.result()
    return len(writes)

"""Where a source lives: a local path, an http(s) URL or an ``s3://`` object-store
folder (:mod:`ilastik_web.sources.s3`), and reading its small files.

Metadata files (``.zattrs``, ``zarr.json``, ``info``, ``attributes.json``) are read
through a tensorstore key-value store, so local folders and HTTP servers are handled the
same way and the same store spec is handed to the tensorstore drivers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tensorstore as ts

from ilastik_web.errors import ForbiddenError, InvalidRequestError, SourceError
from ilastik_web.sources import s3
from ilastik_web.sources._common import short_reason

_PREFIXES = ("precomputed://", "zarr://", "zarr2://", "zarr3://", "n5://")


@dataclass(frozen=True)
class Location:
    """A parsed location: ``url`` for http(s), ``bucket`` and ``key`` (folder) for
    ``s3://``, else ``path`` (absolute, not resolved)."""

    text: str
    url: str | None = None
    path: Path | None = None
    bucket: str | None = None
    key: str = ""

    @property
    def is_remote(self) -> bool:
        return self.url is not None or self.bucket is not None

    def child(self, name: str) -> Location:
        """A location inside this one (a folder entry or URL path component)."""
        if self.bucket is not None:
            key = f"{self.key}/{name}" if self.key else name
            return Location(f"{s3.SCHEME}{self.bucket}/{key}", bucket=self.bucket, key=key)
        if self.url is not None:
            url = self.url.rstrip("/") + "/" + name
            return Location(url, url=url)
        assert self.path is not None
        return Location(str(self.path / name), path=self.path / name)

    def kvstore_spec(self) -> dict[str, Any]:
        """A tensorstore kvstore spec whose root is this location (a folder)."""
        if self.bucket is not None:
            return s3.kvstore_spec(self.bucket, self.key)
        if self.url is not None:
            return {"driver": "http", "base_url": self.url.rstrip("/") + "/"}
        return {"driver": "file", "path": str(self.path) + "/"}

    def __str__(self) -> str:
        return self.text


def parse_location(text: str) -> Location:
    """Parse ``text`` (a path, ``file://`` URL, http(s) URL or ``s3://bucket/path``; a
    ``precomputed://``-style driver prefix is accepted and ignored)."""
    raw = check_path_text(text).strip()
    for prefix in _PREFIXES:
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
            break
    if s3.is_s3(raw):
        bucket, key = s3.split_s3(raw)
        shown = f"{s3.SCHEME}{bucket}/{key}" if key else f"{s3.SCHEME}{bucket}"
        return Location(shown, bucket=bucket, key=key)
    if raw.startswith(("http://", "https://")):
        return Location(raw.rstrip("/"), url=raw.rstrip("/"))
    if raw.startswith("file://"):
        raw = raw[len("file://"):]
    if not raw:
        raise SourceError("empty source location")
    path = Path(os.path.abspath(os.path.expanduser(raw)))
    return Location(str(path), path=path)


def check_allowed(path: Path, allowed_roots: Sequence[Path] | None, shown: str) -> Path:
    """``path`` resolved (every symlink, even a dangling last one, followed); ForbiddenError
    unless that lies inside a root, InvalidRequestError for a NUL byte."""
    check_path_text(str(path))
    resolved = Path(os.path.realpath(path))
    if allowed_roots is None:
        return resolved
    for root in allowed_roots:
        if resolved.is_relative_to(os.path.realpath(root)):
            return resolved
    raise ForbiddenError(f"{shown}: outside the allowed data folders")


def check_path_text(text: str) -> str:
    """``text`` unless it holds a NUL byte (no file system takes one)."""
    if "\x00" in text:
        raise InvalidRequestError("a path must not contain a NUL byte")
    return text


class MetadataReader:
    """Reads small files relative to a folder location, locally or over HTTP."""

    def __init__(self, location: Location):
        self.location = location
        self._kvstore: ts.KvStore | None = None

    def _store(self) -> ts.KvStore:
        if self._kvstore is None:
            try:
                self._kvstore = ts.KvStore.open(self.location.kvstore_spec()).result()
            except Exception as exc:
                raise SourceError(f"{self.location}: cannot open: {short_reason(exc)}") from exc
        return self._kvstore

    def read_bytes(self, name: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        if self.location.path is not None:
            # Local: plain file IO, so a directory named like a metadata file is "missing".
            file = self.location.path / name
            if not file.is_file():
                return None
            try:
                return file.read_bytes()
            except OSError as exc:
                raise SourceError(f"{self.location}: cannot read {name}: {exc.strerror}") from exc
        try:
            result = self._store().read(name).result()
        except Exception as exc:
            raise SourceError(f"{self.location}: cannot read {name}: {short_reason(exc)}") from exc
        return bytes(result.value) if result.state == "value" else None

    def read_json(self, name: str) -> dict[str, Any] | None:
        """The parsed JSON object in ``name``, None when missing; SourceError when corrupt."""
        data = self.read_bytes(name)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SourceError(f"{self.location}: corrupt metadata in {name}: {exc}") from None
        if not isinstance(value, dict):
            raise SourceError(f"{self.location}: corrupt metadata in {name}: not a JSON object")
        return value

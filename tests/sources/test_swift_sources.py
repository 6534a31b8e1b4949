"""Every object-storage format read lazily from a real Swift through its S3 API: the
shared source contract (voxel-exact reads, metadata, corrupt and missing data) for zarr
v2/v3, OME-Zarr 0.4/0.5, N5 and precomputed, plus location and credential handling."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import tensorstore as ts
import test_n5
import test_ome_zarr
import test_precomputed_source
import test_zarr

from ilastik_web.errors import SourceError
from ilastik_web.sources import open_source
from ilastik_web.sources.location import parse_location
from ilastik_web.sources.s3 import kvstore_spec

BUCKET = "sources"


@pytest.fixture(scope="module")
def bucket(swift):
    swift.create_container(BUCKET)
    return BUCKET


def upload(local: Path, bucket: str, key: str) -> None:
    """Copy a file or folder tree to ``s3://bucket/key`` (what an operator's upload does)."""
    destination = ts.KvStore.open(kvstore_spec(bucket, key)).result()
    files = [local] if local.is_file() else [p for p in local.rglob("*") if p.is_file()]
    writes = [destination.write("" if p == local else p.relative_to(local).as_posix(),
                                p.read_bytes()) for p in files]
    for write in writes:
        write.result()


@pytest.fixture
def swift_place(tmp_path, bucket):
    """Write locally, then read from Swift: the path is uploaded when turned into a
    location (so a corrupted file is uploaded corrupted, a missing one not at all)."""
    prefix = uuid.uuid4().hex

    def to_location(path: Path) -> str:
        key = f"{prefix}/{path.relative_to(tmp_path).as_posix()}"
        if path.exists():
            upload(path, bucket, key)
        return f"s3://{bucket}/{key}"

    return tmp_path, to_location


class _OverSwift:
    remote = True

    @pytest.fixture
    def place(self, swift_place):
        return swift_place


class TestZarrV2OverSwift(_OverSwift, test_zarr.TestZarrV2):
    chunks = (4, 8, 24, 32)


@pytest.mark.slow  # the same code path as v2; CI's `make test` runs it
class TestZarrV3OverSwift(_OverSwift, test_zarr.TestZarrV3):
    chunks = (4, 8, 24, 32)


class TestOmeZarr04OverSwift(_OverSwift, test_ome_zarr.TestOmeZarr04):
    chunks = (4, 8, 24, 32)


class TestN5OverSwift(_OverSwift, test_n5.TestN5):
    pass


class TestPrecomputedOverSwift(_OverSwift, test_precomputed_source.TestPrecomputed):
    chunk = (32, 24, 8)


def test_credentials_in_the_location_are_refused(swift):
    with pytest.raises(SourceError, match="must not carry credentials") as info:
        open_source("s3://AKIA:supersecret@bucket/volume.zarr")
    assert "supersecret" not in str(info.value)


def test_spec_holds_no_secret(swift):
    spec = parse_location(f"s3://{BUCKET}/a/b.zarr/").kvstore_spec()
    assert spec["bucket"] == BUCKET and spec["path"] == "a/b.zarr/"
    assert spec["endpoint"] == swift.endpoint
    assert swift.secret_key not in repr(spec)


def test_wrong_key_is_a_one_line_source_error(swift, bucket, tmp_path, monkeypatch):
    test_zarr.write_zarr(tmp_path / "a.zarr", test_zarr.np.zeros((4, 4), "uint8"), "zarr",
                         (4, 4))
    upload(tmp_path / "a.zarr", bucket, "wrong-key/a.zarr")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(SourceError) as info:
        open_source(f"s3://{bucket}/wrong-key/a.zarr")
    assert "\n" not in str(info.value) and "not-the-key" not in str(info.value)


@pytest.mark.slow
class TestOmeZarr05OverSwift(_OverSwift, test_ome_zarr.TestOmeZarr05):
    chunks = (4, 8, 24, 32)

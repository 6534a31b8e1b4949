"""A short viewer-like walk across terabyte volumes keeps the server's RSS bounded.

Runs the walk of ``benchmarks/scale_walk.py`` (loaded from its file) against a real
``ilastik-web serve`` subprocess: the procedural source (its own pyramid) and a sparse
zarr of about a terabyte with no pyramid, whose coarse levels the server computes from
the next finer level and caches under a small budget. The no-pyramid walk is sized so
the finer levels it forces the server to compute are far larger than the bound, so a
cache that did not evict would fail it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "scale_walk.py"
CACHE_MB = 16
#: RSS allowed above rest besides the cache budget: request buffers, transient arrays of
#: the worker threads, allocator slack.
MARGIN_MB = 96
MIB = 2**20


@pytest.fixture(scope="module")
def scale_walk():
    spec = importlib.util.spec_from_file_location("scale_walk_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def assert_bounded(result) -> None:
    growth = result.peak_rss - result.rest_rss
    assert all(level.errors == 0 and level.chunks > 0 for level in result.levels), result.levels
    assert growth <= (CACHE_MB + MARGIN_MB) * MIB, (
        f"{result.name}: RSS grew by {growth / MIB:.0f} MiB during the walk, more than the "
        f"{CACHE_MB} MiB cache budget + {MARGIN_MB} MiB"
    )


@pytest.mark.slow
def test_walk_without_pyramid_stays_within_the_cache_budget(scale_walk, tmp_path):
    location = scale_walk.write_sparse_zarr(tmp_path / "sparse.zarr", (1048576, 1048576))
    result = scale_walk.walk("no-pyramid", str(location), levels=[0, 4], positions=3,
                             cache_mb=CACHE_MB, workers=2, level_seconds=120,
                             report=lambda line: None)
    assert result.levels[1].computed and result.levels[1].positions == 3
    assert result.finer_computed_bytes >= 2 * (CACHE_MB + MARGIN_MB) * MIB, (
        "the walk is too short to tell a bounded cache from an unbounded one"
    )
    assert_bounded(result)


@pytest.mark.slow
def test_walk_across_the_procedural_terabyte_volume_is_bounded(scale_walk):
    result = scale_walk.walk("procedural", "procedural:", levels=[0, 3, 7], positions=2,
                             cache_mb=CACHE_MB, workers=2, level_seconds=60,
                             report=lambda line: None)
    assert not any(level.computed for level in result.levels)
    assert_bounded(result)

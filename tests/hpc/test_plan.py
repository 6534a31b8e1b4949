import itertools

import numpy as np
import pytest

from hpc.plan import BlockPlan, block_bytes, block_shape_for_budget, parse_roi
from ilastik_web.abc import Box
from ilastik_web.errors import InvalidRequestError


@pytest.mark.parametrize("shape,chunk", [((100, 300, 200), (16, 32, 32)),
                                         ((1, 1000, 700), (1, 256, 256)),
                                         ((5, 40, 40), (8, 16, 16))])
@pytest.mark.parametrize("budget_mib", [64, 256, 1024])
def test_block_shape_fits_budget_and_is_chunk_aligned(shape, chunk, budget_mib):
    halo = (0, 10, 10) if shape[0] == 1 else (10, 10, 10)
    budget = budget_mib << 20
    chunk = tuple(min(c, s) for c, s in zip(chunk, shape, strict=True))
    block = block_shape_for_budget(shape, chunk, halo, memory_bytes=budget,
                                   feature_channels=20)
    assert block_bytes(block, halo, feature_channels=20) <= budget
    for b, c, n in zip(block, chunk, shape, strict=True):
        assert b % c == 0 or b == n
        assert b <= n


def test_bigger_budget_gives_bigger_blocks():
    sizes = [np.prod(block_shape_for_budget((256, 256, 256), (32, 32, 32), (10, 10, 10),
                                            memory_bytes=mib << 20, feature_channels=30))
             for mib in (128, 512, 2048)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_budget_below_one_chunk_is_refused():
    with pytest.raises(InvalidRequestError, match="too small"):
        block_shape_for_budget((64, 64, 64), (64, 64, 64), (38, 38, 38), memory_bytes=1 << 20,
                               feature_channels=61)


@pytest.mark.parametrize("roi,block", [
    (Box((0, 0, 0), (24, 64, 64)), (8, 32, 32)),
    (Box((3, 5, 7), (20, 50, 61)), (8, 16, 32)),
    (Box((0, 0, 0), (1, 100, 90)), (1, 64, 64)),
])
def test_plan_tiles_the_region_exactly_once(roi, block):
    plan = BlockPlan(roi, block, block)
    covered = np.zeros(roi.shape, np.int32)
    for index in plan:
        out = plan.output_box(index)
        covered[out.slices] += 1
        assert plan.source_box(index) == out.translate(roi.start)
    assert (covered == 1).all()
    assert BlockPlan.from_json(plan.to_json()) == plan
    with pytest.raises(InvalidRequestError):
        plan.output_box(len(plan))


def test_plan_refuses_unaligned_blocks():
    with pytest.raises(InvalidRequestError, match="multiple"):
        BlockPlan(Box((0, 0, 0), (64, 64, 64)), (8, 24, 32), (8, 16, 16))


def test_parse_roi():
    assert parse_roi("2:10, :32, 5:", (24, 64, 64)) == Box((2, 0, 5), (10, 32, 64))
    for bad in ("1:2,3:4", "0:0,0:1,0:1", "0:25,0:1,0:1", "a:b,0:1,0:1", "1,2,3"):
        with pytest.raises(InvalidRequestError):
            parse_roi(bad, (24, 64, 64))


def test_every_axis_order_of_plan_index_is_consistent():
    plan = BlockPlan(Box((0, 0, 0), (16, 32, 48)), (8, 16, 16), (8, 16, 16))
    starts = [plan.output_box(i).start for i in plan]
    expected = list(itertools.product(range(0, 16, 8), range(0, 32, 16), range(0, 48, 16)))
    assert starts == expected

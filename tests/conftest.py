"""Shared fixtures. Fixtures for one area live in that area's conftest."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

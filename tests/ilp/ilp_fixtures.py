"""Real desktop-ilastik projects from ``<repo>/../shared/ilp-fixtures`` (see its README)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "ilp-fixtures"
API_ZIP = FIXTURES / "ilastik-api-projects" / "api_projects.zip"

#: ilastik's API test projects, the raw data each ran on and ilastik's saved probabilities
#: (``tests/test_ilastik/test_experimental/types.py`` in ilastik).
API_PROJECTS = {
    "PixelClass.ilp": ("Data_1channel.png", "res-Data_1channel_pc1xyc.npy"),
    "2464_PixelClassification_xy_input.ilp": ("Data_1channel.png", "res-Data_1channel_pc1xy.npy"),
    "PixelClass3Channel.ilp": ("Data_3channel.png", "res-Data_3channel_pc3c.npy"),
    "PixelClass3D.ilp": ("Data_3D.npy", "res-Data_3D_pc3d.npy"),
    "PixelClass3D_2D_3D_feature_mix.ilp": ("Data_3D.npy", "res-Data_3D_pc3d2dfm.npy"),
}

#: ilastik's own tolerance (``assert_predictions_equal_ilastik_cross``): at most 0.1 % of
#: values off by >= 0.015 and none by >= 0.15.
LOOSE_DIFFERENCE = 0.015
LOOSE_FRACTION = 1e-3
STRICT_DIFFERENCE = 0.15


def fixture(relative: str) -> Path:
    """A fixture file, or skip the test with the reason."""
    path = FIXTURES / relative
    if not path.exists():
        pytest.skip(f"ilastik fixture {path} absent (the shared ilp-fixtures folder)")
    return path


def extract_api_projects(target: Path) -> Path:
    """Unpack api_projects.zip into ``target`` (once) and return the folder."""
    if not API_ZIP.exists():
        pytest.skip(f"ilastik fixture {API_ZIP} absent (the shared ilp-fixtures folder)")
    folder = target / "api_projects"
    if not folder.exists():
        with zipfile.ZipFile(API_ZIP) as archive:
            archive.extractall(folder)
    return folder


def within_ilastik_tolerance(ours, theirs) -> tuple[bool, str]:
    """ilastik's test of two probability maps, and a one-line account of the difference."""
    import numpy as np

    difference = np.abs(np.asarray(ours, np.float64) - np.asarray(theirs, np.float64))
    loose = float((difference >= LOOSE_DIFFERENCE).mean())
    worst = float(difference.max())
    ok = loose <= LOOSE_FRACTION and worst < STRICT_DIFFERENCE
    return ok, f"{100 * loose:.3f}% of values off by >= {LOOSE_DIFFERENCE}, max {worst:.3f}"

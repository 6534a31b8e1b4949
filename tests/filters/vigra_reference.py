"""Run ilastik's feature scheme with Debian's vigra in a /usr/bin/python3 subprocess."""

from __future__ import annotations

import functools
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import filters

SYSTEM_PYTHON = "/usr/bin/python3"
WORKER = Path(__file__).with_name("vigra_worker.py")


@functools.lru_cache(maxsize=1)
def vigra_unavailable_reason() -> str | None:
    """None when /usr/bin/python3 can import vigra, else why not."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"{SYSTEM_PYTHON} not found (scripts/install-system-deps.sh installs python3-vigra)"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import vigra"], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        return (
            f"{SYSTEM_PYTHON} cannot import vigra (run scripts/install-system-deps.sh as root): "
            + probe.stderr.strip().splitlines()[-1]
        )
    return None


def vigra_features(
    image: np.ndarray,
    selection,
    *,
    ndim: int,
    exact_eigenvalues: bool = False,
    timeout: float = 600,
) -> np.ndarray:
    """ilastik's features computed by vigra, float32 (channels, *spatial), our channel order.

    ``exact_eigenvalues`` takes eigenvalues of vigra's tensors in float64 instead of vigra's
    float32 solver.
    """
    specs = filters.normalize_selection(selection)
    with tempfile.TemporaryDirectory(prefix="vigra-features-") as tmp:
        source, target = Path(tmp, "in.npy"), Path(tmp, "out.npy")
        spec_path = Path(tmp, "spec.json")
        np.save(source, np.ascontiguousarray(image, dtype=np.float32))
        spec_path.write_text(
            json.dumps(
                {
                    "ndim": ndim,
                    "exact_eigenvalues": exact_eigenvalues,
                    "features": [[s.feature_id, s.sigma, s.in_2d] for s in specs],
                }
            )
        )
        run = subprocess.run(
            [SYSTEM_PYTHON, str(WORKER), str(source), str(spec_path), str(target)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if run.returncode != 0:
            raise RuntimeError(f"vigra worker failed: {run.stderr.strip()[-2000:]}")
        return np.load(target)


def relative_errors(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per channel: max |ours - reference| divided by the reference channel's range."""
    axes = tuple(range(1, reference.ndim))
    spread = reference.max(axis=axes) - reference.min(axis=axes)
    spread = np.where(spread > 0, spread, 1.0)
    return np.abs(ours.astype(np.float64) - reference).max(axis=axes) / spread

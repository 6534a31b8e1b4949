"""numba kernels of the CPU path: 1D correlation along one axis and closed-form eigenvalues.

Arrays are 3D float32 (z, y, x); a 2D image is z == 1. Loops parallelise over (z, y) rows so
that 2D images use every thread too, and the innermost loop always runs along contiguous x.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_OPTIONS = {"parallel": True, "cache": True, "nogil": True, "fastmath": False}


@numba.njit(**_OPTIONS)
def _correlate_rows(source, origin, half_kernel, parity, out):  # pragma: no cover - compiled
    """Along x: every output row from one source row."""
    nz, ny, nx = out.shape
    radius = half_kernel.shape[0] - 1
    c0 = half_kernel[0]
    oz, oy, ox = origin
    x0 = ox + radius
    for row in numba.prange(nz * ny):
        z = row // ny
        y = row % ny
        target = out[z, y]
        line = source[z + oz, y + oy]
        center = line[x0 : x0 + nx]
        total = np.empty(nx, dtype=np.float64)
        for x in range(nx):
            total[x] = c0 * center[x]
        for j in range(1, radius + 1):
            c = half_kernel[j]
            # sliced rows: indexing by the bare loop variable lets LLVM vectorise
            right = line[x0 + j : x0 + j + nx]
            left = line[x0 - j : x0 - j + nx]
            for x in range(nx):
                total[x] += c * (np.float64(right[x]) + parity * np.float64(left[x]))
        for x in range(nx):
            target[x] = total[x]


@numba.njit(**_OPTIONS)
def _correlate_columns(source, origin, half_kernel, parity, axis, out):  # pragma: no cover
    """Along y (axis 1) or z (axis 0): every output row from whole source rows."""
    nz, ny, nx = out.shape
    radius = half_kernel.shape[0] - 1
    c0 = half_kernel[0]
    oz, oy, ox = origin
    dz = 1 if axis == 0 else 0
    dy = 1 - dz
    for row in numba.prange(nz * ny):
        z = row // ny + oz + dz * radius
        y = row % ny + oy + dy * radius
        target = out[row // ny, row % ny]
        center = source[z, y, ox : ox + nx]
        total = np.empty(nx, dtype=np.float64)
        for x in range(nx):
            total[x] = c0 * center[x]
        for j in range(1, radius + 1):
            c = half_kernel[j]
            above = source[z + dz * j, y + dy * j, ox : ox + nx]
            below = source[z - dz * j, y - dy * j, ox : ox + nx]
            for x in range(nx):
                total[x] += c * (np.float64(above[x]) + parity * np.float64(below[x]))
        for x in range(nx):
            target[x] = total[x]


@numba.njit(**_OPTIONS)
def _correlate_planes(source, origin, half_kernel, parity, out):  # pragma: no cover - compiled
    """Along z, one output plane at a time: the plane stays in cache while each source plane
    streams through once per tap (row by row, long kernels touched too many pages at once)."""
    nz, ny, nx = out.shape
    radius = half_kernel.shape[0] - 1
    c0 = half_kernel[0]
    oz, oy, ox = origin
    for z in numba.prange(nz):
        zc = z + oz + radius
        total = np.empty((ny, nx), dtype=np.float64)
        for y in range(ny):
            row = total[y]
            center = source[zc, y + oy, ox : ox + nx]
            for x in range(nx):
                row[x] = c0 * center[x]
        for j in range(1, radius + 1):
            c = half_kernel[j]
            for y in range(ny):
                row = total[y]
                above = source[zc + j, y + oy, ox : ox + nx]
                below = source[zc - j, y + oy, ox : ox + nx]
                for x in range(nx):
                    row[x] += c * (np.float64(above[x]) + parity * np.float64(below[x]))
        for y in range(ny):
            target = out[z, y]
            row = total[y]
            for x in range(nx):
                target[x] = row[x]


def correlate_valid(source, origin, half_kernel, parity, axis, out):
    """``out`` = valid correlation of ``source[origin:]`` with a symmetric (parity 1) or
    antisymmetric (parity -1) kernel along ``axis``; ``half_kernel[j]`` is the tap at +j.

    Sums run in float64 with float64 taps and are rounded to float32 once, as vigra does:
    summing in float32 left 2× vigra's error in 3D DoG at σ 10 (a difference of two
    smoothings a thousandth of the input's range), most of it from the 71-tap presmoothing.

    ``source`` is C-contiguous and ``origin`` (z, y, x) locates the cropped input in it, so the
    inner loops have unit stride and vectorise.
    """
    if axis == 2:
        _correlate_rows(source, origin, half_kernel, parity, out)
    elif axis == 0 and out.shape[0] > 1:
        _correlate_planes(source, origin, half_kernel, parity, out)
    else:
        _correlate_columns(source, origin, half_kernel, parity, axis, out)


@numba.njit(**_OPTIONS)
def eigenvalues_2x2(a00, a01, a11, origin, out):  # pragma: no cover - compiled
    """Descending eigenvalues of symmetric 2×2 matrices, evaluated in float64.

    Components are C-contiguous arrays of one shape; ``origin`` locates ``out``'s region.
    """
    nz, ny, nx = out.shape[1:]
    oz, oy, ox = origin
    for row in numba.prange(nz * ny):
        z = row // ny
        y = row % ny
        r00 = a00[z + oz, y + oy, ox : ox + nx]
        r01 = a01[z + oz, y + oy, ox : ox + nx]
        r11 = a11[z + oz, y + oy, ox : ox + nx]
        for x in range(nx):
            p = np.float64(r00[x])
            q = np.float64(r11[x])
            r = np.float64(r01[x])
            mean = 0.5 * (p + q)
            half = 0.5 * (p - q)
            radius = math.sqrt(half * half + r * r)
            out[0, z, y, x] = mean + radius
            out[1, z, y, x] = mean - radius


def _third_angle_cosine_coefficients(degree: int = 12) -> tuple[float, ...]:
    """Power-series coefficients in t = 2u - 1 of g(u) = cos(2/3 acos(u)) on u in [0, 1].

    With u = sqrt((1 + h) / 2), g(u) = cos(acos(h) / 3), the cosine the trigonometric
    eigenvalue formula needs. g is analytic on [0, 1], so a degree-12 Chebyshev fit is
    within 2e-12 everywhere; unlike acos and cos, the polynomial vectorises.
    """
    from numpy.polynomial import chebyshev

    nodes = 0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, 4001))
    fit = chebyshev.chebfit(2.0 * nodes - 1.0, np.cos(2.0 / 3.0 * np.arccos(nodes)), degree)
    return tuple(float(c) for c in chebyshev.cheb2poly(fit))


_G = _third_angle_cosine_coefficients()


@numba.njit(**_OPTIONS)
def eigenvalues_3x3(a00, a01, a02, a11, a12, a22, origin, out):  # pragma: no cover
    """Descending eigenvalues of symmetric 3×3 matrices by the trigonometric closed form,
    evaluated in float64 (float32 loses up to ~4e-3 of the range on near-degenerate ones).

    Components are C-contiguous arrays of one shape; ``origin`` locates ``out``'s region.
    Branch-free so that the x loop vectorises.
    """
    nz, ny, nx = out.shape[1:]
    oz, oy, ox = origin
    third = 1.0 / 3.0
    half_sqrt3 = 0.5 * math.sqrt(3.0)
    g = _G
    for row in numba.prange(nz * ny):
        z = row // ny
        y = row % ny
        r00 = a00[z + oz, y + oy, ox : ox + nx]
        r01 = a01[z + oz, y + oy, ox : ox + nx]
        r02 = a02[z + oz, y + oy, ox : ox + nx]
        r11 = a11[z + oz, y + oy, ox : ox + nx]
        r12 = a12[z + oz, y + oy, ox : ox + nx]
        r22 = a22[z + oz, y + oy, ox : ox + nx]
        first = out[0, z, y]
        second = out[1, z, y]
        last = out[2, z, y]
        for x in range(nx):
            d0 = np.float64(r00[x])
            d1 = np.float64(r11[x])
            d2 = np.float64(r22[x])
            o01 = np.float64(r01[x])
            o02 = np.float64(r02[x])
            o12 = np.float64(r12[x])
            mean = (d0 + d1 + d2) * third
            b0 = d0 - mean
            b1 = d1 - mean
            b2 = d2 - mean
            off = o01 * o01 + o02 * o02 + o12 * o12
            spread = (b0 * b0 + b1 * b1 + b2 * b2 + 2.0 * off) / 6.0
            scale = math.sqrt(spread)
            det = (
                b0 * (b1 * b2 - o12 * o12)
                - o01 * (o01 * b2 - o12 * o02)
                + o02 * (o01 * o12 - b1 * o02)
            )
            # spread == 0 means det == 0: any finite divisor gives half_det 0
            safe = max(spread, 1e-300)
            half_det = min(1.0, max(-1.0, det / (2.0 * safe * math.sqrt(safe))))
            t = 2.0 * math.sqrt(0.5 + 0.5 * half_det) - 1.0
            cosine = g[12]
            cosine = cosine * t + g[11]
            cosine = cosine * t + g[10]
            cosine = cosine * t + g[9]
            cosine = cosine * t + g[8]
            cosine = cosine * t + g[7]
            cosine = cosine * t + g[6]
            cosine = cosine * t + g[5]
            cosine = cosine * t + g[4]
            cosine = cosine * t + g[3]
            cosine = cosine * t + g[2]
            cosine = cosine * t + g[1]
            cosine = cosine * t + g[0]
            # angle in [0, pi/3]: cos(angle + 2pi/3) from cos and a non-negative sin
            sine = math.sqrt(max(0.0, 1.0 - cosine * cosine))
            largest = mean + 2.0 * scale * cosine
            smallest = mean + 2.0 * scale * (-0.5 * cosine - half_sqrt3 * sine)
            first[x] = largest
            second[x] = 3.0 * mean - largest - smallest
            last[x] = smallest


@numba.njit(**_OPTIONS)
def copy_4d(source, target):  # pragma: no cover - compiled
    """``target[...] = source`` for (k, z, y, x) arrays, parallel over (k, z)."""
    nk, nz, ny, nx = target.shape
    for plane in numba.prange(nk * nz):
        k = plane // nz
        z = plane % nz
        for y in range(ny):
            for x in range(nx):
                target[k, z, y, x] = source[k, z, y, x]

"""Bit-reproducible value noise: integer hashing (uint32 wrap-around) and smoothstep blends.

Only +, -, *, floor and comparisons touch the per-pixel values, so results are identical on
every CPU (no SIMD transcendental functions). Coordinates are in scene units ([0, 1] across
the image), so noise looks the same at every resolution.
"""

from __future__ import annotations

import numpy as np

_P1 = np.uint32(374761393)
_P2 = np.uint32(668265263)
_P3 = np.uint32(1274126177)
_S13 = np.uint32(13)
_S16 = np.uint32(16)
_S8 = np.uint32(8)
_INV24 = 1.0 / 16777216.0


def hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """A well-mixed uint32 hash of integer lattice coordinates (broadcasting)."""
    # via int64: float -> uint32 casts of negative values differ between CPUs
    hx = np.asarray(ix).astype(np.int64).astype(np.uint32) * _P1
    hy = np.asarray(iy).astype(np.int64).astype(np.uint32) * _P2
    h = hx + hy + np.uint32(seed & 0xFFFFFFFF)
    h = (h ^ (h >> _S13)) * _P3
    return h ^ (h >> _S16)


def hash_unit(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """Hash lattice coordinates to floats in [0, 1) (24-bit resolution)."""
    return (hash2(ix, iy, seed) >> _S8).astype(np.float64) * _INV24


def _cells(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer cell index and smoothstep weight for 1-D lattice coordinates."""
    cell = np.floor(t)
    f = t - cell
    return cell.astype(np.int64), f * f * (3.0 - 2.0 * f)


def value_noise(x: np.ndarray, y: np.ndarray, freq: float, seed: int) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1) on the grid ``y`` (rows) x ``x`` (columns).

    ``x`` and ``y`` are 1-D coordinate vectors; ``freq`` lattice cells per scene unit.
    """
    cx, sx = _cells(np.ravel(x) * freq)
    cy, sy = _cells(np.ravel(y) * freq)
    x_lo, y_lo = int(cx[0]), int(cy[0])
    cols = np.arange(x_lo, int(cx[-1]) + 2, dtype=np.int64)
    rows = np.arange(y_lo, int(cy[-1]) + 2, dtype=np.int64)
    table = hash_unit(cols[None, :], rows[:, None], seed)
    ry = cy - y_lo
    wy = sy[:, None]
    by_row = table[ry] + (table[ry + 1] - table[ry]) * wy
    kx = cx - x_lo
    left = by_row[:, kx]
    return left + (by_row[:, kx + 1] - left) * sx


def fractal_noise(x: np.ndarray, y: np.ndarray, freq: float, seed: int) -> np.ndarray:
    """Two octaves of value noise (weights 2/3 and 1/3), in [0, 1)."""
    coarse = value_noise(x, y, freq, seed)
    fine = value_noise(x, y, freq * 2.7, seed + 7919)
    return coarse * (2.0 / 3.0) + fine * (1.0 / 3.0)


def noise1(x: np.ndarray, freq: float, seed: int) -> np.ndarray:
    """Smooth 1-D value noise in [0, 1) along ``x`` (a 1-D vector)."""
    cx, sx = _cells(np.ravel(x) * freq)
    left = hash_unit(cx, 0, seed)
    right = hash_unit(cx + 1, 0, seed)
    return left + (right - left) * sx


def triangle_wave(t: np.ndarray) -> np.ndarray:
    """Period-1 triangle wave in [0, 1]: 0 at integers, 1 at half-integers."""
    return np.abs(t - np.floor(t) - 0.5) * -2.0 + 1.0

"""Input checks that raise `ValueError` naming the offending parameter.

Checks on array *values* (finiteness, orthonormality) only run on concrete arrays: under
`jax.jit`/`jax.vmap` the values are tracers and the check is skipped, so the same functions
stay traceable. Shape checks always run, because shapes are static.
"""

from __future__ import annotations

import math

import jax
import numpy as np

ORTHONORMAL_ATOL = 1e-8
"""Default tolerance on `max |B Bᵀ − I|` for "orthonormal rows" (float64 round-off is ~1e-15;
this leaves room for user arrays produced by a float32 pipeline then cast)."""


def is_concrete(*arrays) -> bool:
    """True when none of `arrays` is a tracer, i.e. their values can be inspected now."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def check_int_range(name: str, value, low: int, high: int | None = None, hint: str = "") -> None:
    """Require an integer `low ≤ value` (and `value ≤ high` when given)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        upper = "" if high is None else f" and ≤ {high}"
        raise ValueError(f"{name}={value} is out of range: need ≥ {low}{upper}{hint}")


def check_real_range(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
) -> None:
    """Require a finite real number in `[low, high]` (`(low, high]` when `low_open`)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name}={value!r} must be finite")
    too_low = low is not None and (x <= low if low_open else x < low)
    too_high = high is not None and x > high
    if too_low or too_high:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        bracket = "(" if low_open else "["
        raise ValueError(f"{name}={value!r} is out of range {bracket}{lo}, {hi}]")


def check_dimensions(d: int, k: int, m: int) -> None:
    """The paper's overparameterised regime: `k ≥ 1` and `1 ≤ m < d − k`."""
    check_int_range("k", k, 1)
    check_int_range("d", d, 1)
    check_int_range("m", m, 1, d - k - 1, hint=f" (the setting needs 1 ≤ m < d − k with d={d}, k={k})")


def check_shape(name: str, array, shape: tuple[int, ...]) -> None:
    """Require `array.shape == shape`."""
    got = tuple(np.shape(array))
    if got != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {got}")


def check_finite(name: str, array) -> None:
    """Require every entry of a concrete `array` to be finite (skipped under tracing)."""
    if is_concrete(array) and not np.all(np.isfinite(np.asarray(array))):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(np.asarray(array))))
        raise ValueError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


def check_orthonormal_rows(name: str, B, atol: float = ORTHONORMAL_ATOL) -> None:
    """Require `B Bᵀ = I` to `atol` in max-abs entry (skipped under tracing)."""
    if not is_concrete(B):
        return
    B = np.asarray(B)
    err = float(np.max(np.abs(B @ B.T - np.eye(B.shape[0]))))
    if not err <= atol:
        raise ValueError(
            f"{name} must have orthonormal rows ({name} {name}ᵀ = I) for this statement; "
            f"max |{name} {name}ᵀ − I| = {err:.3g} exceeds {atol:g}"
        )

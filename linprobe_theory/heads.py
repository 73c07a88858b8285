"""Initial heads `v0` for fine-tuning: zero, random, and with a prescribed alignment error φ."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._validation import check_real_range, is_concrete
from .problem import Problem
from .theory import aligned_v_star


def zero_head(problem: Problem) -> Float[Array, " k"]:
    """`v0 = 0` (head alignment error `φ = ‖v⋆‖²`)."""
    return jnp.zeros((problem.k,))


def random_head(problem: Problem, *, key: PRNGKeyArray, std=None) -> Float[Array, " k"]:
    """`v0 ~ N(0, std² I)`; `std` defaults to `‖v⋆‖ / √k`, so that `E‖v0‖² = ‖v⋆‖²`."""
    if std is None:
        std = jnp.linalg.norm(problem.v_star) / jnp.sqrt(problem.k)
    elif is_concrete(std):
        check_real_range("std", std, 0.0)
    return std * jax.random.normal(key, (problem.k,))


def head_with_alignment(problem: Problem, phi, *, key=None, orthogonal_norm=0.0) -> Float[Array, " k"]:
    """A head with head alignment error exactly `φ`.

    `v0 = α v̂⋆ + (orthogonal part)`, `v̂⋆` the unit ground-truth head in the frame aligned to B0,
    with `(α‖v⋆‖)² = ‖v⋆‖⁴ − φ²` for `φ ≤ ‖v⋆‖²` (an under-scaled head; `φ = ‖v⋆‖²` gives
    `v0 = 0`) and `(α‖v⋆‖)² = ‖v⋆‖⁴ + φ²` above it (over-scaled), α ≥ 0. With a `key`, a random
    vector of norm `orthogonal_norm` orthogonal to v⋆ is added; it does not change φ.
    """
    if is_concrete(phi):
        check_real_range("phi", phi, 0.0)
    if is_concrete(orthogonal_norm):
        check_real_range("orthogonal_norm", orthogonal_norm, 0.0)
        if key is None and float(orthogonal_norm) != 0.0:
            raise ValueError(f"orthogonal_norm={orthogonal_norm} needs a key to draw the orthogonal part")
    vs = aligned_v_star(problem)
    s = jnp.dot(vs, vs)  # ‖v⋆‖²
    # A relative slack keeps φ = ‖v⋆‖² (computed by the caller) on the v0 = 0 branch.
    under = phi**2 <= s**2 * (1 + 1e-12)
    inner_sq = jnp.where(under, jnp.maximum(s**2 - phi**2, 0.0), s**2 + phi**2)  # (v0ᵀ v⋆)²
    v0 = jnp.sqrt(inner_sq) / s * vs
    if key is not None:
        g = jax.random.normal(key, (problem.k,))
        g = g - jnp.dot(g, vs) / s * vs
        v0 = v0 + orthogonal_norm * g / jnp.maximum(jnp.linalg.norm(g), 1e-300)
    return v0

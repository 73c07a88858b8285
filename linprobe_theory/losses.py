"""Losses of the predictor `w = Bᵀ v`. Each accepts leading batch axes on `(v, B)`."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from .problem import Problem


def predictor(v: Float[Array, "... k"], B: Float[Array, "... k d"]) -> Float[Array, "... d"]:
    """`w = Bᵀ v`, the linear map the two-layer model computes."""
    return jnp.einsum("...kd,...k->...d", B, v)


def train_loss(problem: Problem, v, B) -> Float[Array, ...]:
    """Training loss `L̂(v, B) = ‖X Bᵀ v − y‖²` (a sum: no ½, no 1/n, as in the paper)."""
    r = predictor(v, B) @ problem.X.T - problem.y
    return jnp.sum(r * r, axis=-1)


def id_loss(problem: Problem, v, B) -> Float[Array, ...]:
    """ID subspace loss `L_id(v, B) = ‖P_S (Bᵀ v − w⋆)‖²`: worst case over unit inputs in S."""
    e = (predictor(v, B) - problem.w_star) @ problem.Q_S
    return jnp.sum(e * e, axis=-1)


def ood_loss(problem: Problem, v, B) -> Float[Array, ...]:
    """OOD loss `L_ood(v, B) = (Bᵀ v − w⋆)ᵀ Σ (Bᵀ v − w⋆)` (closed form; Σ = I is the worst case
    over unit inputs)."""
    return problem.ood.quadratic_form(predictor(v, B) - problem.w_star)

"""Losses of the predictor `w = Bᵀ v`. Each accepts leading batch axes on `(v, B)`."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from .problem import Problem


def predictor(v: Float[Array, "... k"], B: Float[Array, "... k d"]) -> Float[Array, "... d"]:
    """`w = Bᵀ v`, the linear map the two-layer model computes."""
    return jnp.einsum("...kd,...k->...d", B, v)


def train_loss(problem: Problem, v, B) -> Float[Array, ...]:
    r"""Training loss $\hat L(v, B) = \|X B^\top v - y\|^2$ (a sum: no ½, no 1/n, as in the paper)."""
    r = predictor(v, B) @ problem.X.T - problem.y
    return jnp.sum(r * r, axis=-1)


def id_loss(problem: Problem, v, B) -> Float[Array, ...]:
    r"""ID subspace loss $L_{id}(v, B) = \|P_S (B^\top v - w_\star)\|^2$: worst case over unit inputs in S."""
    e = (predictor(v, B) - problem.w_star) @ problem.Q_S
    return jnp.sum(e * e, axis=-1)


def ood_loss(problem: Problem, v, B) -> Float[Array, ...]:
    r"""OOD loss $L_{ood}(v, B) = (B^\top v - w_\star)^\top \Sigma\, (B^\top v - w_\star)$ (closed form;
    Σ = I is the worst case over unit inputs)."""
    return problem.ood.quadratic_form(predictor(v, B) - problem.w_star)

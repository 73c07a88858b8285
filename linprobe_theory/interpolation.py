"""Weight-space interpolation between two states of the two-layer linear model (WiSE-FT).

WiSE-FT (Wortsman et al., CVPR 2022) averages the weights of a model before and after
fine-tuning. Here the two end points are `a = (v_a, B_a)` (e.g. LP's `(v_lp, B0)`) and
`b = (v_b, B_b)` (e.g. FT's end state), and for `α ∈ [0, 1]`

    (v_α, B_α) = (1 − α)(v_a, B_a) + α (v_b, B_b).

The predictor `w_α = B_αᵀ v_α` is a product of two affine functions of α, so its error is a
quadratic in α,

    e(α) = B_αᵀ v_α − w⋆ = e0 + α e1 + α² e2,
    e0 = B_aᵀ v_a − w⋆,   e1 = B_aᵀ Δv + ΔBᵀ v_a,   e2 = ΔBᵀ Δv,   Δv = v_b − v_a, ΔB = B_b − B_a,

and every quadratic loss of `e` is a quartic in α. With the Gram matrix `G_ij = e_iᵀ M e_j`
of the three coefficient vectors under a positive semi-definite `M`,

    L(α) = e(α)ᵀ M e(α) = c0 + c1 α + c2 α² + c3 α³ + c4 α⁴,
    c0 = G00,  c1 = 2 G01,  c2 = G11 + 2 G02,  c3 = 2 G12,  c4 = G22

(`quartic_from_gram`). `M = Σ` gives the OOD loss `losses.ood_loss` (`ood_quartic`),
`M = P_S` the ID loss `losses.id_loss` (`id_quartic`); the training loss
`‖X B_αᵀ v_α − y‖²` is the same quartic with the residual's coefficients
`r0 = X B_aᵀ v_a − y`, `r1 = X e1`, `r2 = X e2` (`train_quartic`). Coefficients are in
ascending powers of α. Pure core: no I/O; everything is jit- and vmap-friendly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .losses import predictor
from .problem import Problem


def interpolate(
    v_a: Float[Array, " k"],
    B_a: Float[Array, "k d"],
    v_b: Float[Array, " k"],
    B_b: Float[Array, "k d"],
    alpha,
) -> tuple[Float[Array, "... k"], Float[Array, "... k d"]]:
    """`(v_α, B_α) = (1 − α)(v_a, B_a) + α (v_b, B_b)`; `alpha` a scalar or a 1-D array (then
    the results have a leading α axis). `α = 0` returns `a`, `α = 1` returns `b`."""
    alpha = jnp.asarray(alpha, float)
    a_v = alpha[..., None]
    a_B = alpha[..., None, None]
    return (1.0 - a_v) * v_a + a_v * v_b, (1.0 - a_B) * B_a + a_B * B_b


def error_coefficients(problem: Problem, v_a, B_a, v_b, B_b) -> Float[Array, "3 d"]:
    """`[e0, e1, e2]` with `B_αᵀ v_α − w⋆ = e0 + α e1 + α² e2` (module docstring)."""
    dv, dB = v_b - v_a, B_b - B_a
    e0 = predictor(v_a, B_a) - problem.w_star
    e1 = predictor(dv, B_a) + predictor(v_a, dB)
    e2 = predictor(dv, dB)
    return jnp.stack([e0, e1, e2])


def quartic_from_gram(G: Float[Array, "3 3"]) -> Float[Array, " 5"]:
    """`[c0, …, c4]` of `L(α) = Σ_ij α^{i+j} G_ij` for a symmetric `G` (indices 0, 1, 2):
    `c0 = G00, c1 = 2 G01, c2 = G11 + 2 G02, c3 = 2 G12, c4 = G22`."""
    return jnp.stack([G[0, 0], 2.0 * G[0, 1], G[1, 1] + 2.0 * G[0, 2], 2.0 * G[1, 2], G[2, 2]], axis=-1)


def ood_quartic(problem: Problem, v_a, B_a, v_b, B_b) -> Float[Array, " 5"]:
    """Coefficients of `L_ood(α) = e(α)ᵀ Σ e(α)` (Σ = `problem.ood`, never formed densely)."""
    E = error_coefficients(problem, v_a, B_a, v_b, B_b)
    return quartic_from_gram(E @ problem.ood.matmul(E.T))


def id_quartic(problem: Problem, v_a, B_a, v_b, B_b) -> Float[Array, " 5"]:
    """Coefficients of `L_id(α) = ‖P_S e(α)‖²`."""
    ES = error_coefficients(problem, v_a, B_a, v_b, B_b) @ problem.Q_S
    return quartic_from_gram(ES @ ES.T)


def train_quartic(problem: Problem, v_a, B_a, v_b, B_b) -> Float[Array, " 5"]:
    """Coefficients of `L̂(α) = ‖X B_αᵀ v_α − y‖² = ‖r0 + α r1 + α² r2‖²`, with
    `r0 = X B_aᵀ v_a − y`, `r1 = X e1`, `r2 = X e2` (exact with label noise too)."""
    E = error_coefficients(problem, v_a, B_a, v_b, B_b)
    R = E @ problem.X.T
    R = R.at[0].set(problem.X @ predictor(v_a, B_a) - problem.y)
    return quartic_from_gram(R @ R.T)


def quartic_value(coeffs: Float[Array, "... 5"], alpha) -> Float[Array, ...]:
    """`Σ_p c_p α^p` by Horner's rule (`coeffs` ascending; broadcasts over α)."""
    alpha = jnp.asarray(alpha, float)
    out = jnp.zeros_like(alpha) + coeffs[..., 4]
    for p in (3, 2, 1, 0):
        out = out * alpha + coeffs[..., p]
    return out


def quartic_scale(coeffs: Float[Array, "... 5"], alpha) -> Float[Array, ...]:
    """`Σ_p |c_p| |α|^p ≥ |L(α)|`: the size of the terms summed, the scale of the round-off in
    either way of computing `L(α)` (the quartic or `losses.ood_loss` at `(v_α, B_α)`)."""
    return quartic_value(jnp.abs(coeffs), jnp.abs(jnp.asarray(alpha, float)))


def quartic_minimum(coeffs: Float[Array, " 5"], num_grid: int = 101, newton_steps: int = 12):
    """`(α*, L(α*))`: the minimum of the quartic over `[0, 1]`.

    A minimum on `[0, 1]` is an end point or a zero of `L'(α) = c1 + 2c2 α + 3c3 α² + 4c4 α³`.
    Each of `num_grid` equally spaced starts (the end points included) takes `newton_steps`
    Newton steps on `L'` (kept in `[0, 1]`; a start where `L'' ≤ 0` stays put), and the best of
    the starts and their end points is returned. Every candidate is a point of `[0, 1]`, so
    `L(α*)` is never below the true minimum; a stationary point within a grid spacing of a start
    with `L'' > 0` is found to round-off (quadratic convergence). No eigenvalue solver, so it
    runs on every backend and under `vmap`.
    """
    d1 = jnp.stack([coeffs[1], 2.0 * coeffs[2], 3.0 * coeffs[3], 4.0 * coeffs[4], 0.0 * coeffs[4]])
    d2 = jnp.stack([2.0 * coeffs[2], 6.0 * coeffs[3], 12.0 * coeffs[4], 0.0 * coeffs[4], 0.0 * coeffs[4]])
    starts = jnp.linspace(0.0, 1.0, num_grid)

    def newton(alpha, _):
        g, h = quartic_value(d1, alpha), quartic_value(d2, alpha)
        step = jnp.where(h > 0, g / jnp.where(h > 0, h, 1.0), 0.0)
        return jnp.clip(alpha - step, 0.0, 1.0), None

    polished, _ = jax.lax.scan(newton, starts, None, length=newton_steps)
    candidates = jnp.concatenate([starts, polished])
    values = quartic_value(coeffs, candidates)
    best = jnp.argmin(values)
    return candidates[best], values[best]

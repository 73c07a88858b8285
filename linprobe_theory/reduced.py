"""Exact reduced coordinates for the flows and losses.

The training loss sees `B` only through `Z = B Q_S` (`k × m`, `Q_S` an orthonormal basis of the
ID subspace S), and every gradient row of `B` lies in S, so along FT/LP-FT

    B(t) = B0 + (Z(t) − Z0) Q_Sᵀ,    Z0 = B0 Q_S.

With `G = Q_Sᵀ Xᵀ X Q_S` and `b = Q_Sᵀ Xᵀ y` formed once, the flow costs `O(k m²)` per step,
independent of `d` and `n`; the OOD loss needs only the Gram blocks of `[B0ᵀ, w⋆, Q_S]` under Σ.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .problem import Problem


class ReducedProblem(eqx.Module):
    """Everything the dynamics and losses need, in `O(k m + m²)` numbers."""

    G: Float[Array, "m m"]  # Q_Sᵀ Xᵀ X Q_S
    b: Float[Array, " m"]  # Q_Sᵀ Xᵀ y
    yy: Float[Array, ""]  # ‖y‖²
    Z0: Float[Array, "k m"]  # B0 Q_S
    w_S: Float[Array, " m"]  # Q_Sᵀ w⋆
    # Gram blocks of Σ on [B0ᵀ, w⋆, Q_S], for the OOD loss.
    ood_B0B0: Float[Array, "k k"]  # B0 Σ B0ᵀ
    ood_B0w: Float[Array, " k"]  # B0 Σ w⋆
    ood_ww: Float[Array, ""]  # w⋆ᵀ Σ w⋆
    ood_SB0: Float[Array, "m k"]  # Q_Sᵀ Σ B0ᵀ
    ood_Sw: Float[Array, " m"]  # Q_Sᵀ Σ w⋆
    ood_SS: Float[Array, "m m"]  # Q_Sᵀ Σ Q_S

    @classmethod
    def from_problem(cls, problem: Problem) -> ReducedProblem:
        """Precompute the Gram quantities, `O((n + r) d (k + m))`, never a `d × d` matrix."""
        XQ = problem.X @ problem.Q_S
        w = problem.w_star
        M = jnp.concatenate([problem.B0.T, w[:, None], problem.Q_S], axis=1)
        gram = M.T @ problem.ood.matmul(M)
        k = problem.k
        return cls(
            G=XQ.T @ XQ,
            b=XQ.T @ problem.y,
            yy=jnp.dot(problem.y, problem.y),
            Z0=problem.B0 @ problem.Q_S,
            w_S=problem.Q_S.T @ w,
            ood_B0B0=gram[:k, :k],
            ood_B0w=gram[:k, k],
            ood_ww=gram[k, k],
            ood_SB0=gram[k + 1 :, :k],
            ood_Sw=gram[k + 1 :, k],
            ood_SS=gram[k + 1 :, k + 1 :],
        )

    def features(self, problem: Problem, Z: Float[Array, "... k m"]) -> Float[Array, "... k d"]:
        """`B = B0 + (Z − Z0) Q_Sᵀ`."""
        return problem.B0 + (Z - self.Z0) @ problem.Q_S.T


def ft_gradients(rp: ReducedProblem, v, Z):
    """`(∇_v L̂, ∇_Z L̂) = (2 Z (G Zᵀv − b), 2 v (G Zᵀv − b)ᵀ)`, i.e. the paper's
    `∇_v = 2 B Xᵀ r`, `∇_B = 2 v rᵀ X` with `r = X Bᵀ v − y`, restricted to S."""
    g = rp.G @ (Z.T @ v) - rp.b  # Q_Sᵀ Xᵀ r
    return 2.0 * Z @ g, 2.0 * jnp.outer(v, g)


def train_loss(rp: ReducedProblem, v, Z) -> Float[Array, ""]:
    """`‖X Bᵀ v − y‖² = uᵀ G u − 2 bᵀ u + ‖y‖²`, `u = Zᵀ v`."""
    u = Z.T @ v
    return jnp.maximum(u @ rp.G @ u - 2.0 * rp.b @ u + rp.yy, 0.0)


def id_loss(rp: ReducedProblem, v, Z) -> Float[Array, ""]:
    """`‖P_S (Bᵀ v − w⋆)‖² = ‖Zᵀ v − Q_Sᵀ w⋆‖²`."""
    e = Z.T @ v - rp.w_S
    return e @ e


def ood_loss(rp: ReducedProblem, v, Z) -> Float[Array, ""]:
    """`(Bᵀv − w⋆)ᵀ Σ (Bᵀv − w⋆)` with `Bᵀ v − w⋆ = (B0ᵀ v − w⋆) + Q_S u`, `u = (Z − Z0)ᵀ v`.

    Expanded in the Gram blocks; round-off is absolute, ~1e-16 · ‖w⋆‖²_Σ.
    """
    u = (Z - rp.Z0).T @ v
    base = v @ rp.ood_B0B0 @ v - 2.0 * v @ rp.ood_B0w + rp.ood_ww
    cross = 2.0 * u @ (rp.ood_SB0 @ v - rp.ood_Sw)
    return jnp.maximum(base + cross + u @ rp.ood_SS @ u, 0.0)


def linear_probe_head(rp: ReducedProblem, v0) -> Float[Array, " k"]:
    """LP's limit `A⁺ y + (I − A⁺A) v0`, `A = X B0ᵀ`, via `AᵀA = Z0 G Z0ᵀ` and `Aᵀ y = Z0 b`."""
    H = rp.Z0 @ rp.G @ rp.Z0.T
    H_pinv = jnp.linalg.pinv(H, hermitian=True)
    return H_pinv @ (rp.Z0 @ rp.b) + v0 - H_pinv @ (H @ v0)

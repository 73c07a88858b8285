"""Exact reduced coordinates for the flows and losses.

The training loss sees `B` only through its action on the ID subspace S, and every gradient row
of `B` lies in S. Take the orthonormal basis `E = Q_S U` of S made of the right singular vectors
of X (`X E = W diag(s)`, so `Eᵀ Xᵀ X E = diag(λ)`, `λ = s²`), and `Z = B E` (`k × m`). Along
FT/LP-FT

    B(t) = B0 + (Z(t) − Z0) Eᵀ,    Z0 = B0 E,

and with `λ` and `b = Eᵀ Xᵀ y` formed once the flow costs `O(k m)` per vector-field evaluation,
independent of `d` and `n` (the diagonal Gram matrix is why it is `k m`, not `k m + m²`). The OOD
loss needs only the Gram blocks of `[B0ᵀ, w⋆, E]` under Σ.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .linalg import pinv_hermitian, spectral_norm, thin_svd
from .problem import Problem


class ReducedProblem(eqx.Module):
    """Everything the dynamics and losses need, in `O(k m + m²)` numbers.

    The reduced basis is `E = Q_S · rotation` (`subspace_basis`), in which `Eᵀ Xᵀ X E` is the
    diagonal `diag(curvature)`.
    """

    curvature: Float[Array, " m"]  # λ: eigenvalues of Xᵀ X on S (squared singular values of X)
    rotation: Float[Array, "m m"]  # U: E = Q_S U
    b: Float[Array, " m"]  # Eᵀ Xᵀ y
    yy: Float[Array, ""]  # ‖y‖²
    Z0: Float[Array, "k m"]  # B0 E
    B0_sq: Float[Array, ""]  # ‖B0‖²_F (so ‖B0 P_{S⊥}‖²_F = ‖B0‖²_F − ‖Z0‖²_F)
    w_S: Float[Array, " m"]  # Eᵀ w⋆
    # Gram blocks of Σ on [B0ᵀ, w⋆, E], for the OOD loss.
    ood_B0B0: Float[Array, "k k"]  # B0 Σ B0ᵀ
    ood_B0w: Float[Array, " k"]  # B0 Σ w⋆
    ood_ww: Float[Array, ""]  # w⋆ᵀ Σ w⋆
    ood_SB0: Float[Array, "m k"]  # Eᵀ Σ B0ᵀ
    ood_Sw: Float[Array, " m"]  # Eᵀ Σ w⋆
    ood_SS: Float[Array, "m m"]  # Eᵀ Σ E

    @classmethod
    def from_problem(cls, problem: Problem) -> ReducedProblem:
        """Precompute the reduced quantities in `O((n + r) d m + (r + k) d k)` (r: rank of Σ's
        factored part); never a `d × d` matrix. Uses that `Q_S` has orthonormal columns.

        The singular vectors come from the SVD of the `n × m` matrix `X Q_S` (not an eigh of
        its Gram matrix, which would square its condition number)."""
        Q = problem.Q_S
        XQ = problem.X @ Q
        _, s, vt = thin_svd(XQ)
        U = vt.T
        k = problem.k
        # Gram blocks of [A, Q_S] under Σ = c I + W diag(λ) Wᵀ, A = [B0ᵀ, w⋆], in the Q_S
        # frame (Q_Sᵀ Q_S = I), then rotated by U (O(m³), independent of d).
        A = jnp.concatenate([problem.B0.T, problem.w_star[:, None]], axis=1)
        QA = Q.T @ A  # [Q_Sᵀ B0ᵀ, Q_Sᵀ w⋆], also needed for Z0 and w_S
        c, W, lam = problem.ood.scale, problem.ood.basis, problem.ood.spectrum
        WA, WQ = W.T @ A, W.T @ Q

        def weighted(P1, P2):
            return P1.T @ (lam[:, None] * P2)

        gram_AA = c * (A.T @ A) + weighted(WA, WA)
        S_A = U.T @ (c * QA + weighted(WQ, WA))
        gram_SS = c * jnp.eye(problem.m) + weighted(WQ, WQ)
        return cls(
            curvature=s * s,
            rotation=U,
            b=U.T @ (XQ.T @ problem.y),
            yy=jnp.dot(problem.y, problem.y),
            Z0=QA[:, :k].T @ U,
            B0_sq=jnp.sum(problem.B0 * problem.B0),
            w_S=U.T @ QA[:, k],
            ood_B0B0=gram_AA[:k, :k],
            ood_B0w=gram_AA[:k, k],
            ood_ww=gram_AA[k, k],
            ood_SB0=S_A[:, :k],
            ood_Sw=S_A[:, k],
            ood_SS=U.T @ gram_SS @ U,
        )

    def subspace_basis(self, problem: Problem) -> Float[Array, "d m"]:
        """`E = Q_S U`: the orthonormal basis of S the reduced coordinates `Z = B E` refer to."""
        return problem.Q_S @ self.rotation

    def features(self, problem: Problem, Z: Float[Array, "... k m"]) -> Float[Array, "... k d"]:
        """`B = B0 + (Z − Z0) Eᵀ`."""
        return problem.B0 + ((Z - self.Z0) @ self.rotation.T) @ problem.Q_S.T

    @property
    def perp_norm(self) -> Float[Array, ""]:
        """`‖B0 P_{S⊥}‖_F`: the size of the part of B0 the reduced state leaves out."""
        return jnp.sqrt(jnp.maximum(self.B0_sq - jnp.sum(self.Z0 * self.Z0), 0.0))

    def stiffness(self, v) -> Float[Array, ""]:
        """`2 λ_max (‖v‖² + σ_max(Z0)²)`: an estimate of the largest rate of the FT flow from
        `(v, B0)`, used to group runs of similar cost (`sweep.stiffness_order`).

        At a stationary point `(v, Z)` the flow's Jacobian is `−2 A diag(λ) Aᵀ` with
        `Aᵀ(δv, δZ) = Zᵀ δv + δZᵀ v`, so its largest rate is
        `2 λ_max(diag(λ)^{1/2} (ZᵀZ + ‖v‖² I) diag(λ)^{1/2}) ≤ 2 λ_max (σ_max(Z)² + ‖v‖²)`;
        an explicit solver's step is bounded by its stability limit over that rate. This
        evaluates the bound at the start, a proxy for the limit (whose `(v, Z)` is unknown
        before solving)."""
        return 2.0 * jnp.max(self.curvature) * (jnp.dot(v, v) + spectral_norm(self.Z0) ** 2)


def residual_gradient(rp: ReducedProblem, v, Z) -> Float[Array, " m"]:
    """`g = Eᵀ Xᵀ r = diag(λ) Zᵀ v − b`, the residual `r = X Bᵀ v − y` seen from S."""
    return rp.curvature * (Z.T @ v) - rp.b


def ft_gradients(rp: ReducedProblem, v, Z):
    """`(∇_v L̂, ∇_Z L̂) = (2 Z g, 2 v gᵀ)`, `g = residual_gradient`: the paper's
    `∇_v = 2 B Xᵀ r`, `∇_B = 2 v rᵀ X` with `r = X Bᵀ v − y`, restricted to S."""
    g = residual_gradient(rp, v, Z)
    return 2.0 * Z @ g, 2.0 * jnp.outer(v, g)


def gram_train_loss(rp: ReducedProblem, v, Z) -> Float[Array, ""]:
    """`‖X Bᵀ v − y‖² = Σᵢ λᵢ uᵢ² − 2 bᵀ u + ‖y‖²`, `u = Zᵀ v`, as expanded (round-off can make it
    slightly negative near 0; this is the form the flows differentiate)."""
    u = Z.T @ v
    return jnp.sum(rp.curvature * u * u) - 2.0 * rp.b @ u + rp.yy


def train_loss(rp: ReducedProblem, v, Z) -> Float[Array, ""]:
    """`‖X Bᵀ v − y‖²` (`gram_train_loss` clipped at 0)."""
    return jnp.maximum(gram_train_loss(rp, v, Z), 0.0)


def id_loss(rp: ReducedProblem, v, Z) -> Float[Array, ""]:
    """`‖P_S (Bᵀ v − w⋆)‖² = ‖Zᵀ v − Eᵀ w⋆‖²`."""
    e = Z.T @ v - rp.w_S
    return e @ e


def ood_loss(rp: ReducedProblem, v, Z, s=1.0) -> Float[Array, ""]:
    """`(Bᵀv − w⋆)ᵀ Σ (Bᵀv − w⋆)` with `Bᵀ v − w⋆ = (s B0ᵀ v − w⋆) + E u`, `u = (Z − s Z0)ᵀ v`,
    for `B = s B0 + (Z − s Z0) Eᵀ` (`s`: the scale of the S⊥ part a weight decay leaves; 1
    otherwise).

    Expanded in the Gram blocks; round-off is absolute, ~1e-16 · ‖w⋆‖²_Σ.
    """
    u = (Z - s * rp.Z0).T @ v
    sv = s * v
    base = sv @ rp.ood_B0B0 @ sv - 2.0 * sv @ rp.ood_B0w + rp.ood_ww
    cross = 2.0 * u @ (rp.ood_SB0 @ sv - rp.ood_Sw)
    return jnp.maximum(base + cross + u @ rp.ood_SS @ u, 0.0)


def linear_probe_head(rp: ReducedProblem, v0) -> Float[Array, " k"]:
    """LP's limit `A⁺ y + (I − A⁺A) v0`, `A = X B0ᵀ`, via `AᵀA = Z0 diag(λ) Z0ᵀ`, `Aᵀ y = Z0 b`."""
    H = (rp.Z0 * rp.curvature) @ rp.Z0.T
    H_pinv = pinv_hermitian(H)
    return H_pinv @ (rp.Z0 @ rp.b) + v0 - H_pinv @ (H @ v0)

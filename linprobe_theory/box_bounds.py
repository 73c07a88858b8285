"""Bounds of the invariant-set objective over boxes, for `invariant_bound`'s branch and bound.

`P` holds the objective's pieces (`invariant_bound._pieces`):
`f(v) = b (vᵀMv − 2pᵀv + c0) + a (‖s‖ − √q(v))²`, `q(v) = ‖v‖⁴ + vᵀDv`. Boxes are rows of
`[lo, hi]`; every bound here is rigorous (up to float64 rounding).
"""

from __future__ import annotations

import numpy as np


def _objective(P, V, a, b):
    """The objective at the rows of V (feasibility not checked)."""
    g = np.einsum("ni,ij,nj->n", V, P["M"], V) - 2 * V @ P["p"] + P["c0"]
    q = np.sum(V * V, axis=1) ** 2 + np.einsum("ni,ij,nj->n", V, P["D"], V)
    return b * np.maximum(g, 0.0) + a * (P["s"] - np.sqrt(np.maximum(q, 0.0))) ** 2


def _interval_quadratic(A, lo, hi):
    """Bounds of `vᵀ A v` over boxes `[lo, hi]` (rows), by interval arithmetic."""
    lo_sq = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo * lo, hi * hi))
    hi_sq = np.maximum(lo * lo, hi * hi)
    diag = np.diag(A)
    low = np.where(diag >= 0, diag * lo_sq, diag * hi_sq).sum(axis=1)
    high = np.where(diag >= 0, diag * hi_sq, diag * lo_sq).sum(axis=1)
    k = A.shape[0]
    for i in range(k):
        for j in range(i + 1, k):
            coef = 2 * A[i, j]
            corners = np.stack(
                [lo[:, i] * lo[:, j], lo[:, i] * hi[:, j], hi[:, i] * lo[:, j], hi[:, i] * hi[:, j]]
            )
            low = low + np.where(coef >= 0, coef * corners.min(0), coef * corners.max(0))
            high = high + np.where(coef >= 0, coef * corners.max(0), coef * corners.min(0))
    return low, high


def _lower_bounds(P, lo, hi, a, b):
    """A rigorous lower bound of the (feasibility-relaxed) objective on each box."""
    g_lo, _ = _interval_quadratic(P["M"], lo, hi)
    lin = np.where(P["p"] >= 0, P["p"] * hi, P["p"] * lo).sum(axis=1)  # max of pᵀv
    g_lo = g_lo - 2 * lin + P["c0"]
    sq_lo = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo * lo, hi * hi)).sum(axis=1)
    sq_hi = np.maximum(lo * lo, hi * hi).sum(axis=1)
    d_lo, d_hi = _interval_quadratic(P["D"], lo, hi)
    rho_lo = np.sqrt(np.maximum(sq_lo**2 + d_lo, 0.0))
    rho_hi = np.sqrt(np.maximum(sq_hi**2 + d_hi, 0.0))
    s = P["s"]
    dist = np.where(s < rho_lo, rho_lo - s, np.where(s > rho_hi, s - rho_hi, 0.0))
    return b * np.maximum(g_lo, 0.0) + a * dist**2


def _gradient(P, V, a, b):
    """`∇f = 2b (M v − p) + a (1 − ‖s‖/ρ) ∇q`, `∇q = 4‖v‖² v + 2 D v` (needs ρ > 0)."""
    sq = np.sum(V * V, axis=1, keepdims=True)
    q = sq[:, 0] ** 2 + np.einsum("ni,ij,nj->n", V, P["D"], V)
    rho = np.sqrt(np.maximum(q, 1e-300))
    grad_q = 4 * sq * V + 2 * V @ P["D"]
    return 2 * b * (V @ P["M"] - P["p"]) + a * (1 - P["s"] / rho)[:, None] * grad_q


def _second_order_bounds(P, lo, hi, a, b):
    """`f(c + δ) ≥ f(c) + ∇f(c)ᵀδ + ½ λ ‖δ‖²` on each box (centre c), `λ` a lower bound of the
    Hessian's spectrum there, minimised over δ coordinate by coordinate. The Hessian is
    `2bM + a (φ'' ∇q∇qᵀ + φ' ∇²q)`, `φ(q) = (‖s‖ − √q)²`: `φ'' ≥ 0` (dropped), `φ' = 1 − ‖s‖/ρ`,
    `∇²q = 4‖v‖² I + 8 v vᵀ + 2D` has its spectrum in `[4‖v‖² + 2λ_min(D), 12‖v‖² + 2λ_max(D)]`.
    Valid only where `ρ > 0` on the whole box (f is smooth there); elsewhere −inf. Near a
    minimiser it is second-order tight, where the interval bound is only first-order."""
    c, h = (lo + hi) / 2, (hi - lo) / 2
    sq_lo = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(lo * lo, hi * hi)).sum(axis=1)
    sq_hi = np.maximum(lo * lo, hi * hi).sum(axis=1)
    d_lo, d_hi = _interval_quadratic(P["D"], lo, hi)
    rho_lo = np.sqrt(np.maximum(sq_lo**2 + d_lo, 0.0))
    rho_hi = np.sqrt(np.maximum(sq_hi**2 + d_hi, 0.0))
    smooth = rho_lo > 0
    safe_lo = np.where(smooth, rho_lo, 1.0)
    dphi = np.stack([1 - P["s"] / safe_lo, 1 - P["s"] / np.maximum(rho_hi, safe_lo)])
    eig_D = np.linalg.eigvalsh(P["D"])
    eig_q = np.stack([4 * sq_lo + 2 * eig_D[0], 12 * sq_hi + 2 * eig_D[-1]])
    corners = (dphi[:, None, :] * eig_q[None, :, :]).reshape(4, -1)
    lam = 2 * b * np.linalg.eigvalsh(P["M"])[0] + a * corners.min(axis=0)
    g = _gradient(P, c, a, b)
    lam_col = lam[:, None]
    pos = lam_col > 0
    step = np.clip(-g / np.where(pos, lam_col, 1.0), -h, h)
    convex = g * step + 0.5 * lam_col * step**2
    concave = -np.abs(g) * h + 0.5 * lam_col * h**2
    decrease = np.where(pos, convex, concave).sum(axis=1)
    bound = _objective(P, c, a, b) + decrease
    return np.where(smooth, bound, -np.inf)


def _infeasible_boxes(P, lo, hi):
    """Boxes that contain no feasible point (`C(v) = D + v vᵀ ⪰ 0` fails on all of them).

    `D = Z0 Z0ᵀ − v0 v0ᵀ` has at most one negative eigenvalue. With `G = Z0 Z0ᵀ ≻ 0`, Sherman–
    Morrison gives the exact test: `C(v) ⪰ 0` iff `ψ(v) = (uᵀv)² − (γ − 1)(1 + vᵀG⁻¹v) ≥ 0`,
    `u = G⁻¹v0`, `γ = v0ᵀG⁻¹v0` (always feasible when `γ ≤ 1`); a box is infeasible where an upper
    bound of the quadratic ψ (centred form, second-order tight) is negative. Without `G ≻ 0`, a
    necessary condition: `(eᵀv)² ≥ μ` for D's negative eigenpair `(−μ, e)`."""
    if P["gamma"] is not None:
        if P["gamma"] <= 1:
            return np.zeros(lo.shape[0], bool)
        A, const = P["psi_A"], -(P["gamma"] - 1)
        c, h = (lo + hi) / 2, (hi - lo) / 2
        value = np.einsum("ni,ij,nj->n", c, A, c) + const
        slope = (np.abs(2 * c @ A) * h).sum(axis=1)
        _, quad_hi = _interval_quadratic(A, -h, h)
        return value + slope + quad_hi < 0
    evals, evecs = np.linalg.eigh(P["D"])
    if evals[0] >= 0:
        return np.zeros(lo.shape[0], bool)
    e = evecs[:, 0]
    proj_hi = np.where(e >= 0, e * hi, e * lo).sum(axis=1)
    proj_lo = np.where(e >= 0, e * lo, e * hi).sum(axis=1)
    max_sq = np.maximum(proj_hi**2, proj_lo**2)
    return max_sq < -evals[0]

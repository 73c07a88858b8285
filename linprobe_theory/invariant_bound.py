"""The tightest OOD lower bound the FT proof's two invariants allow (this toolkit's result).

Along FT gradient flow from `(v0, B0)` two facts hold at every t (statements 1 and 2):
`(B − B0) P_{S⊥} = 0` and `v vᵀ − B Bᵀ = v0 v0ᵀ − B0 B0ᵀ`. With `E` an orthonormal basis of S,
`Z = B E`, `Z0 = B0 E`, they say `B P_{S⊥} = B0 P_{S⊥}` and

    Z Zᵀ = C(v) := v vᵀ − v0 v0ᵀ + Z0 Z0ᵀ   (so C(v) ⪰ 0).

The OOD error splits as `Bᵀv − w⋆ = E (Zᵀv − s) + P_{S⊥}(B0ᵀv − w⋆)`, `s = Eᵀw⋆`. For a given v
(and `m ≥ k`) the matrices Z with `Z Zᵀ = C` are `C^{1/2} U`, `U` with orthonormal rows, so `Zᵀv`
ranges over every vector of norm `ρ(v) = √(vᵀ C(v) v)`, and the best one is `ρ s/‖s‖`. Hence, if
`Σ ⪰ a P_S + b P_{S⊥}` (isotropic Σ: `a = b = 1`; in general `a = b = σ_min(Σ)`),

    L_ood(v(t), B(t)) ≥ L_inv := min over v ∈ R^k with C(v) ⪰ 0 of
        b ‖P_{S⊥}(B0ᵀv − w⋆)‖² + a (‖s‖ − ρ(v))²,   ρ(v)² = ‖v‖⁴ − (v0ᵀv)² + ‖Z0ᵀv‖²,

at every t, for any ε and any head. The problem is k-dimensional and non-convex; its value is
found by branch and bound (`_branch_and_bound`), which returns a *certified lower bound* on the
minimum (so the result is a valid bound whether or not the search has converged) together with
the smallest value found at a feasible point (so the gap is known). Cost: the search splits a
ball in R^k into boxes, so it grows exponentially with k; k ≤ 3 converges to a relative gap of
1e-3 in well under a second.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .problem import Problem


@dataclasses.dataclass(frozen=True)
class InvariantBound:
    """`lower ≤ L_inv ≤ upper`: `lower` is the certified bound (use it), `upper` the objective at
    the best feasible point found (`v_best`), `boxes` the number of boxes examined."""

    lower: float
    upper: float
    v_best: np.ndarray
    boxes: int

    @property
    def gap(self) -> float:
        return self.upper - self.lower


def _pieces(problem: Problem, v0):
    """The quadratic and quartic parts of the objective, in `O(d k)`."""
    B0, Q = np.asarray(problem.B0, float), np.asarray(problem.Q_S, float)
    w = np.asarray(problem.w_star, float)
    v0 = np.asarray(v0, float)
    Z0 = B0 @ Q
    s = Q.T @ w
    G = Z0 @ Z0.T
    M = B0 @ B0.T - G  # B0 P_{S⊥} B0ᵀ
    p = B0 @ w - Z0 @ s  # B0 P_{S⊥} w⋆
    c0 = max(float(w @ w - s @ s), 0.0)  # ‖P_{S⊥} w⋆‖²
    D = G - np.outer(v0, v0)
    out = dict(M=M, p=p, c0=c0, D=D, s=float(np.linalg.norm(s)), gamma=None)
    if np.linalg.eigvalsh(G)[0] > 1e-10 * max(1.0, np.abs(G).max()):
        G_inv = np.linalg.inv(G)
        u = G_inv @ v0
        out["gamma"] = float(v0 @ u)
        out["psi_A"] = np.outer(u, u) - (out["gamma"] - 1) * G_inv
    return out


def _objective(P, V, a, b):
    """The objective at the rows of V (feasibility not checked)."""
    g = np.einsum("ni,ij,nj->n", V, P["M"], V) - 2 * V @ P["p"] + P["c0"]
    q = np.sum(V * V, axis=1) ** 2 + np.einsum("ni,ij,nj->n", V, P["D"], V)
    return b * np.maximum(g, 0.0) + a * (P["s"] - np.sqrt(np.maximum(q, 0.0))) ** 2


def _feasible(P, V):
    """`C(v) = v vᵀ + D ⪰ 0` at the rows of V (to round-off)."""
    C = V[:, :, None] * V[:, None, :] + P["D"][None]
    scale = 1.0 + np.abs(P["D"]).max()
    return np.linalg.eigvalsh(C)[:, 0] >= -1e-12 * scale


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


def _search_radius(P, upper, a, b, v0):
    """Every v with objective ≤ `upper` has `a (ρ − ‖s‖)² ≤ upper`, so `ρ ≤ ‖s‖ + √(upper/a)`, and
    `ρ² ≥ ‖v‖⁴ − ‖v‖² ‖v0‖²` bounds ‖v‖."""
    rho_max = P["s"] + np.sqrt(upper / a)
    n0 = float(v0 @ v0)
    return np.sqrt((n0 + np.sqrt(n0 * n0 + 4 * rho_max**2)) / 2)


def _branch_and_bound(P, v0, a, b, rtol, atol, max_boxes):
    k = v0.shape[0]
    best_v = v0.copy()
    upper = float(_objective(P, v0[None], a, b)[0])  # v0 is feasible: C(v0) = Z0 Z0ᵀ
    R = _search_radius(P, upper, a, b, v0) * (1 + 1e-9)
    lo, hi = -R * np.ones((1, k)), R * np.ones((1, k))
    examined = 1
    lower = 0.0
    while True:
        centers = (lo + hi) / 2
        ok = _feasible(P, centers)
        values = np.where(ok, _objective(P, centers, a, b), np.inf)
        if values.size and values.min() < upper:
            i = int(np.argmin(values))
            upper, best_v = float(values[i]), centers[i].copy()
        bounds = np.maximum(_lower_bounds(P, lo, hi, a, b), _second_order_bounds(P, lo, hi, a, b))
        keep = (bounds <= upper) & ~_infeasible_boxes(P, lo, hi)
        lo, hi, bounds = lo[keep], hi[keep], bounds[keep]
        lower = float(bounds.min()) if bounds.size else upper
        if upper - lower <= rtol * upper + atol or examined >= max_boxes or not bounds.size:
            break
        # Split, along its widest side, every box whose bound is in the lower half of the gap:
        # they hold the certified bound down.
        split = bounds <= lower + 0.5 * (upper - lower)
        slo, shi = lo[split], hi[split]
        rows = np.arange(len(slo))
        axis = np.argmax(shi - slo, axis=1)
        mid = (slo[rows, axis] + shi[rows, axis]) / 2
        lo2, hi2 = slo.copy(), shi.copy()
        shi[rows, axis] = mid
        lo2[rows, axis] = mid
        lo = np.concatenate([lo[~split], slo, lo2])
        hi = np.concatenate([hi[~split], shi, hi2])
        examined += 2 * len(slo)
    return InvariantBound(lower=min(lower, upper), upper=upper, v_best=best_v, boxes=examined)


def invariant_ood_lower_bound(
    problem: Problem,
    v0,
    *,
    weights=None,
    rtol: float = 1e-3,
    atol: float = 1e-12,
    max_boxes: int = 1_000_000,
) -> InvariantBound:
    """`L_inv`: the smallest OOD loss over the set the S⊥ invariance and balancedness confine FT
    to (module docstring), as a certified interval `[lower, upper]`.

    Args:
        problem: needs `m ≥ k` (then every `C(v) ⪰ 0` is some `Z Zᵀ`).
        v0: the FT start's head (for LP-FT, the LP head).
        weights: `(a, b)` with `Σ ⪰ a P_S + b P_{S⊥}`; default `a = b = σ_min(Σ)` (for the
            two-weight Σ of `ProblemSpec(ood_id_weight, ood_orth_weight)` pass those weights:
            the bound is then exact in Σ).
        rtol, atol: stop the search once `upper − lower ≤ rtol · upper + atol` (atol matters
            when the minimum is 0, e.g. a head with φ = 0 and ε = 0).
        max_boxes: search budget; on exhausting it `lower` is still a valid bound, only looser.

    Host-side numpy (branch and bound has a data-dependent size): not traceable by `jit`/`vmap`.
    """
    if problem.m < problem.k:
        raise ValueError(f"invariant_ood_lower_bound needs m ≥ k, got m={problem.m}, k={problem.k}")
    v0 = np.asarray(v0, float)
    if v0.shape != (problem.k,) or not np.all(np.isfinite(v0)):
        raise ValueError(f"v0 must be a finite vector of shape ({problem.k},), got shape {v0.shape}")
    if weights is None:
        sigma_min = float(problem.ood.min_eigenvalue())
        weights = (sigma_min, sigma_min)
    a, b = (float(w) for w in weights)
    if not (a > 0 and b > 0):
        raise ValueError(f"weights={weights!r} must be positive")
    return _branch_and_bound(_pieces(problem, v0), v0, a, b, rtol, atol, max_boxes)

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

from .box_bounds import _infeasible_boxes, _lower_bounds, _objective, _second_order_bounds
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


def _feasible(P, V):
    """`C(v) = v vᵀ + D ⪰ 0` at the rows of V (to round-off)."""
    C = V[:, :, None] * V[:, None, :] + P["D"][None]
    scale = 1.0 + np.abs(P["D"]).max()
    return np.linalg.eigvalsh(C)[:, 0] >= -1e-12 * scale


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
        rtol: stop the search once `upper − lower ≤ rtol · upper + atol`.
        atol: the absolute part of that stopping rule (it matters when the minimum is 0, e.g. a
            head with φ = 0 and ε = 0).
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

"""Exact FT trajectories and limits in closed form (this toolkit's oracles, not the paper's).

1. k = 1, any X (`rank_one_ft_limit`). Along FT with rates `(η_v, η_B)` the S⊥ part of `b` is
   fixed and `v²/η_v − ‖b‖²/η_B` is conserved, so `δ = v²/η_v − ‖P_S b‖²/η_B` is too. If FT
   converges to a zero of the training loss, `P_S(v b) = P_S w⋆` (X is injective on S), so with
   `σ = ‖P_S w⋆‖` and `‖P_S b‖ = σ/|v|`: `η_B v⁴ − η_B η_v δ v² − η_v σ² = 0`, i.e.

       v∞² = (η_v δ + √(η_v² δ² + 4 η_v σ²/η_B)) / 2,    Bᵀv → P_S w⋆ + v∞ P_{S⊥} b0;

   with `δ > 0`, `v` never vanishes, so `v∞` has the sign of `v0`.

2. Isotropic ID inputs (`Xᵀ X = c P_S`, `ProblemSpec(isotropic_inputs=True)`) and a λ-balanced
   start (`isotropic_ft_solution`). In reduced coordinates `g = c (Zᵀv − s)`, `s = Eᵀw⋆`, and
   with `Z' = Z/√η_B`, `v' = v/√η_v`, `γ = √(η_v η_B)`, `ŝ = s/γ`, `a = 2cγ²` the flow is the
   whitened two-layer linear network `∂t v' = −a Z'(Z'ᵀv' − ŝ)`, `∂t Z' = −a v'(Z'ᵀv' − ŝ)ᵀ`.
   If `v'v'ᵀ − Z'Z'ᵀ = λ I_k` (always for k = 1; for any k when `v0 = 0` and `Z0 Z0ᵀ ∝ I`, i.e.
   equal principal angles between rowspace(B0) and S), then `P = QQᵀ`, `Q = [Z'ᵀ; v'ᵀ]`, solves
   the Riccati equation `Ṗ = a(FP + PF − P²)`, `F = [[−λ/2 I_m, ŝ], [ŝᵀ, λ/2]]`, whose solution
   (Braun et al., NeurIPS 2022; Dominé et al., ICLR 2025) is

       P(t) = e^{aFt} Q0 [I + ½ Q0ᵀ F⁻¹ (e^{2aFt} − I) Q0]⁻¹ Q0ᵀ e^{aFt}.

   Evaluated stably: with `F = U diag(μ) Uᵀ`, `A = diag(e^{aμt}) UᵀQ0`,
   `hᵢ = (1 − e^{−2aμᵢt})/μᵢ` (→ `2at` as `μᵢ → 0`) and `C = diag(√(h/2)) A = U_C diag(σ) V_Cᵀ`,
   `P = U diag(√(2/h)) U_C diag(σ²/(1+σ²)) U_Cᵀ diag(√(2/h)) Uᵀ` — algebraically the same,
   overflowing only for `aμt ≳ 350` (`h` and `σ²` overflow there); the (autonomous) flow is
   therefore restarted from `P(t₁)` in steps of `aμΔt ≤ 150`, so any t works.
"""

from __future__ import annotations

import numpy as np

from .problem import Problem


def _rates(learning_rates):
    eta_v, eta_B = (float(x) for x in learning_rates)
    if not (eta_v > 0 and eta_B > 0):
        raise ValueError(f"learning_rates={learning_rates!r} must be positive")
    return eta_v, eta_B


def rank_one_ft_limit(problem: Problem, v0, learning_rates=(1.0, 1.0)):
    """`(v∞, w∞ = B∞ᵀ v∞)`: where FT converges for k = 1 (module docstring, part 1).

    Needs `k = 1`, noiseless labels and `δ = v0²/η_v − ‖P_S b0‖²/η_B > 0`."""
    if problem.k != 1:
        raise ValueError(f"rank_one_ft_limit needs k = 1, got k={problem.k}")
    _check_noiseless(problem)
    eta_v, eta_B = _rates(learning_rates)
    Q = np.asarray(problem.Q_S)
    b0 = np.asarray(problem.B0)[0]
    v0 = float(np.asarray(v0).reshape(-1)[0])
    w = np.asarray(problem.w_star)
    b0_S = Q.T @ b0
    delta = v0 * v0 / eta_v - b0_S @ b0_S / eta_B
    if not delta > 0:
        raise ValueError(f"rank_one_ft_limit needs δ = v0²/η_v − ‖P_S b0‖²/η_B > 0, got δ={delta:.3g}")
    w_S = Q @ (Q.T @ w)
    sigma_sq = float(w_S @ w_S)
    v_sq = (eta_v * delta + np.sqrt((eta_v * delta) ** 2 + 4 * eta_v * sigma_sq / eta_B)) / 2
    v_inf = np.sign(v0) * np.sqrt(v_sq)
    b0_perp = b0 - Q @ b0_S
    return v_inf, w_S + v_inf * b0_perp


def _check_noiseless(problem: Problem, rtol: float = 1e-10) -> None:
    """The closed forms fit `y = X w⋆`; label noise would make them silently wrong."""
    y, fit = np.asarray(problem.y), np.asarray(problem.X @ problem.w_star)
    if np.max(np.abs(y - fit)) > rtol * max(1.0, np.max(np.abs(fit))):
        raise ValueError("the closed forms need noiseless labels y = X w⋆ (label_noise = 0, linear teacher)")


def isotropy_constant(problem: Problem, rtol: float = 1e-10) -> float:
    """`c` with `Xᵀ X = c P_S`; raises `ValueError` when X's singular values differ by more than
    `rtol` relative."""
    s = np.linalg.svd(np.asarray(problem.X @ problem.Q_S), compute_uv=False)
    if s.max() - s.min() > rtol * s.max():
        raise ValueError(
            f"the ID inputs are not isotropic on S (singular values {s.min():.6g}…{s.max():.6g}); "
            "build the problem with ProblemSpec(isotropic_inputs=True)"
        )
    return float(np.mean(s * s))


def _stable_riccati(F, Q0, a, t):
    """`P(t)` by the eigendecomposition of F and a thin SVD (module docstring)."""
    mu, U = np.linalg.eigh(F)
    x = a * mu * t
    h = np.where(np.abs(x) > 1e-8, -np.expm1(-2 * x) / np.where(mu == 0, 1.0, mu), 2 * a * t * (1 - x))
    A = np.exp(x)[:, None] * (U.T @ Q0)
    C = np.sqrt(h / 2)[:, None] * A
    UC, sig, _ = np.linalg.svd(C, full_matrices=False)
    left = (np.sqrt(2 / h)[:, None] * UC) * np.sqrt(sig**2 / (1 + sig**2))[None, :]
    return U @ (left @ left.T) @ U.T


_MAX_EXPONENT = 150.0  # per restart: e^{aμt} ≤ e^{150}, so C and CᵀC stay far from overflow


def _riccati(F, Q0, a, t):
    """`P(t)` for any t: the flow is autonomous, so `P(t)` is the closed form restarted from
    `P(t₁) = Q₁Q₁ᵀ` (`Q₁` its rank-k factor; the formula depends on Q0 only through Q0Q0ᵀ) in
    steps with `a max|μ| Δt ≤ 150`."""
    if t <= 0:
        return Q0 @ Q0.T
    steps = max(1, int(np.ceil(a * np.max(np.abs(np.linalg.eigvalsh(F))) * t / _MAX_EXPONENT)))
    Q = Q0
    for _ in range(steps):
        P = _stable_riccati(F, Q, a, t / steps)
        w, V = np.linalg.eigh(P)
        top = np.argsort(w)[::-1][: Q0.shape[1]]
        Q = V[:, top] * np.sqrt(np.maximum(w[top], 0.0))
    return P


def isotropic_ft_solution(problem: Problem, v0, times, learning_rates=(1.0, 1.0), balance_rtol=1e-8):
    """The FT trajectory for isotropic ID inputs and a λ-balanced start, in closed form (module
    docstring, part 2), at each of `times`.

    Returns a dict of arrays over `times`: `end_to_end` (`Zᵀv`, `(T, m)`, coordinates in the basis
    `Q_S` of S), `id_loss` (`‖Zᵀv − Eᵀw⋆‖² = ‖P_S(Bᵀv − w⋆)‖²`), `head_norm_sq` (`‖v‖²`), and
    `ood_loss` (`(Bᵀv − w⋆)ᵀΣ(Bᵀv − w⋆)`) where it follows from P: for k = 1 with `λ > 0` (then v
    keeps its sign; `v` is returned too), and for k > 1 with equal angles
    (`B0 P_{S⊥} B0ᵀ = μ I`), `w⋆ ∈ S` and isotropic Σ, where it is `μ‖v‖² + ‖Zᵀv − s‖²`.
    """
    eta_v, eta_B = _rates(learning_rates)
    _check_noiseless(problem)
    c = isotropy_constant(problem)
    Q = np.asarray(problem.Q_S)
    B0, w = np.asarray(problem.B0), np.asarray(problem.w_star)
    v0 = np.asarray(v0, float)
    k, m = problem.k, problem.m
    Z0 = B0 @ Q
    gamma = np.sqrt(eta_v * eta_B)
    s = Q.T @ w
    s_hat = s / gamma
    a = 2 * c * gamma**2
    Zp, vp = Z0 / np.sqrt(eta_B), v0 / np.sqrt(eta_v)
    imbalance = np.outer(vp, vp) - Zp @ Zp.T
    lam = float(np.trace(imbalance)) / k
    if np.max(np.abs(imbalance - lam * np.eye(k))) > balance_rtol * max(1.0, abs(lam)):
        raise ValueError(
            "the start is not λ-balanced (v'v'ᵀ − Z'Z'ᵀ is not a multiple of I): use k = 1, or v0 = 0 "
            "with equal principal angles between rowspace(B0) and S (e.g. ProblemSpec(coverage=…))"
        )
    F = np.block([[-lam / 2 * np.eye(m), s_hat[:, None]], [s_hat[None, :], np.array([[lam / 2]])]])
    Q0 = np.concatenate([Zp.T, vp[None, :]], axis=0)
    out = {"end_to_end": [], "id_loss": [], "head_norm_sq": []}
    for t in np.asarray(times, float):
        P = _riccati(F, Q0, a, t)
        e = gamma * P[:m, m]  # Zᵀv = γ Z'ᵀv'
        out["end_to_end"].append(e)
        out["id_loss"].append(float(np.sum((e - s) ** 2)))
        out["head_norm_sq"].append(eta_v * P[m, m])
    result = {key: np.array(val) for key, val in out.items()}
    M = B0 @ B0.T - Z0 @ Z0.T  # B0 P_{S⊥} B0ᵀ
    w_perp = w - Q @ s
    isotropic_ood = abs(float(problem.ood.max_eigenvalue() - problem.ood.min_eigenvalue())) <= 1e-12
    if (
        k > 1
        and isotropic_ood
        and np.allclose(M, M[0, 0] * np.eye(k), atol=1e-10)
        and w_perp @ w_perp <= 1e-20
    ):
        # Equal angles (B0 P_{S⊥} B0ᵀ = μ I) and w⋆ ∈ S: OOD = σ (μ‖v‖² + ‖Zᵀv − s‖²), Σ = σ I.
        sigma = float(problem.ood.min_eigenvalue())
        result["ood_loss"] = sigma * (M[0, 0] * result["head_norm_sq"] + result["id_loss"])
    if k == 1 and lam > 0:
        v = np.sign(v0[0]) * np.sqrt(result["head_norm_sq"])
        b0_perp = B0[0] - Q @ Z0[0]
        e_perp = v[:, None] * b0_perp[None, :] - (w - Q @ s)[None, :]  # P_{S⊥}(Bᵀv − w⋆)
        err = e_perp + (result["end_to_end"] - s[None, :]) @ Q.T
        result["v"] = v
        result["ood_loss"] = np.asarray(problem.ood.quadratic_form(err))
    return result

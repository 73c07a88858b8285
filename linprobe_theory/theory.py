"""The paper's theory quantities: feature error, principal angles, head alignment and bounds.

Statements are named by content, following Kumar et al. (ICLR 2022), Section 3.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._validation import check_orthonormal_rows, check_real_range, check_shape, is_concrete
from .linalg import polar_factor, principal_cosines, singular_values, spectral_norm
from .problem import Problem, validate_head


def aligning_rotation(B0: Float[Array, "k d"], B_star: Float[Array, "k d"]) -> Float[Array, "k k"]:
    """The orthogonal `U` minimising `‖B0 − U B⋆‖₂`: the polar factor of `B0 B⋆ᵀ`.

    `(v⋆, B⋆)` is only defined up to rotation; `(U v⋆, U B⋆)` is the frame aligned to B0.
    """
    return polar_factor(B0 @ B_star.T)


def feature_error(B0: Float[Array, "k d"], B_star: Float[Array, "k d"]) -> Float[Array, ""]:
    r"""The feature error $d(B_0, B_\star) = \min_U \|B_0 - U B_\star\|_2$ over orthogonal $U$.

    For orthonormal rows this is `2 sin(θ_max/2)`; it is computed as the norm of the difference
    at the polar-factor minimiser, which stays accurate for tiny errors where
    `√(2 − 2cos θ)` would cancel.
    """
    check_shape("B_star", B_star, tuple(jnp.shape(B0)))
    check_orthonormal_rows("B0", B0)
    check_orthonormal_rows("B_star", B_star)
    U = aligning_rotation(B0, B_star)
    return spectral_norm(B0 - U @ B_star)


def cos_theta_max(E: Float[Array, "d r"], F: Float[Array, "d t"]) -> Float[Array, ""]:
    r"""$\cos\theta_{max}(R, T) = \sigma_r(E^\top F)$: cosine of the largest principal angle between
    `R = span(E)` and `T = span(F)`. Columns must be orthonormal and `dim R ≤ dim T`."""
    if E.shape[-1] > F.shape[-1]:
        raise ValueError(
            f"cos_theta_max needs dim R ≤ dim T, got E with {E.shape[-1]} columns and F with {F.shape[-1]}"
        )
    if E.shape[0] != F.shape[0]:
        raise ValueError(f"E and F must have the same number of rows, got {E.shape} and {F.shape}")
    check_orthonormal_rows("E^T", E.T)
    check_orthonormal_rows("F^T", F.T)
    return principal_cosines(E, F)[-1]


def coverage_cosine(problem: Problem) -> Float[Array, ""]:
    r"""The coverage $\cos\theta_{max}(R_0, S^\perp)$, $R_0$ the row space of $B_0$, without forming
    a basis of S⊥.

    For orthonormal rows it is the smallest singular value of `B0 P_{S⊥} = B0 − (B0 Q_S) Q_Sᵀ`
    (`O(k d m)`).
    """
    check_orthonormal_rows("B0", problem.B0)
    # σ_min of B0 P_{S⊥} directly: `√(1 − σ_max(B0 Q_S)²)` would cancel as the cosine → 0.
    B0 = problem.B0
    perp = B0 - (B0 @ problem.Q_S) @ problem.Q_S.T
    return singular_values(perp)[-1]


def aligned_v_star(problem: Problem) -> Float[Array, " k"]:
    """`U v⋆`: the ground-truth head in the frame aligned to B0 (see `aligning_rotation`)."""
    return aligning_rotation(problem.B0, problem.B_star) @ problem.v_star


def head_alignment_error(problem: Problem, v0) -> Float[Array, ""]:
    r"""Head alignment error $\varphi = \sqrt{|(v_0^\top v_\star)^2 - (v_\star^\top v_\star)^2|}$, with
    $v_\star$ in the frame aligned to $B_0$.

    `v0 = 0` gives `φ = ‖v⋆‖²`; `v0ᵀ v⋆ = ±‖v⋆‖²` gives `φ = 0`.
    """
    v0 = validate_head(problem, v0)
    vs = aligned_v_star(problem)
    return jnp.sqrt(jnp.abs(jnp.dot(v0, vs) ** 2 - jnp.dot(vs, vs) ** 2))


def _eps_or_feature_error(problem: Problem, eps) -> Float[Array, ""]:
    if eps is None:
        return feature_error(problem.B0, problem.B_star)
    if is_concrete(eps):
        check_real_range("eps", eps, 0.0)
    return jnp.asarray(eps, float)


def ft_ood_lower_bound(problem: Problem, v0, eps=None) -> Float[Array, ""]:
    r"""The FT lower bound, on the scale of `ood_loss` (the squared, clipped right-hand side).

    For every time t of fine-tuning gradient flow from `(v0, B0)` (Kumar et al., the FT lower
    bound; slips of the printed statement corrected):

    $$\sqrt{L_{ood}(v_t, B_t)} \ge \sqrt{\sigma_{min}(\Sigma)}\Big(
      \frac{\cos\theta_{max}(R_0, S^\perp)}{\sqrt k}
      \frac{\min(\varphi, \varphi^2/\|w_\star\|)}{(1 + \|w_\star\|)^2} - \epsilon\Big).$$

    Returns `max(rhs, 0)²`. `eps` defaults to the exact feature error `d(B0, B⋆)`; any
    `eps ≥ d(B0, B⋆)` gives a valid (weaker) bound. Needs B0 and B⋆ with orthonormal rows.
    """
    check_orthonormal_rows("B0", problem.B0)
    check_orthonormal_rows("B_star", problem.B_star)
    eps = _eps_or_feature_error(problem, eps)
    phi = head_alignment_error(problem, v0)
    w_norm = jnp.linalg.norm(problem.w_star)
    alignment = jnp.minimum(phi, phi**2 / w_norm)
    rhs = coverage_cosine(problem) / jnp.sqrt(problem.k) * alignment / (1.0 + w_norm) ** 2 - eps
    return problem.ood.min_eigenvalue() * jnp.maximum(rhs, 0.0) ** 2


def lp_ood_upper_bound(problem: Problem, eps=None) -> Float[Array, ""]:
    r"""Our explicit LP upper bound (derived for this toolkit; the paper states LP's OOD error only
    asymptotically, as `O(ε²)`), on the scale of `ood_loss`:

    $$\sqrt{L_{ood}(v_{lp}, B_0)} \le \sqrt{\sigma_{max}(\Sigma)}\,\epsilon\,\|v_\star\|
      \Big(1 + \frac{\sigma_{max}(X)}{\sigma_{min}(X B_0^\top)}\Big).$$

    Derivation: with `A = X B0ᵀ` of full column rank and v⋆, B⋆ in the frame aligned to B0,
    `v_lp = v⋆ + A⁺ X (B⋆ − B0)ᵀ v⋆`, so `B0ᵀ v_lp − w⋆ = (B0 − B⋆)ᵀ v⋆ + B0ᵀ A⁺ X (B⋆ − B0)ᵀ v⋆`.
    Infinite when `A` is rank deficient (LP is then not determined by the data).
    """
    check_orthonormal_rows("B0", problem.B0)
    check_orthonormal_rows("B_star", problem.B_star)
    eps = _eps_or_feature_error(problem, eps)
    sx = singular_values(problem.X)
    sa = singular_values(problem.X @ problem.B0.T)
    sa_min = sa[problem.k - 1] if sa.shape[0] >= problem.k else jnp.asarray(0.0)
    rank_tol = max(problem.X.shape) * jnp.finfo(sx.dtype).eps * sx[0]
    ratio = jnp.where(sa_min > rank_tol, sx[0] / jnp.where(sa_min > 0, sa_min, 1.0), jnp.inf)
    root = jnp.sqrt(problem.ood.max_eigenvalue()) * eps * jnp.linalg.norm(problem.v_star) * (1 + ratio)
    return root**2

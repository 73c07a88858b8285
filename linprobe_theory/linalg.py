"""Small dense linear-algebra helpers: orthonormal bases, polar factors, principal angles."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def random_orthonormal_columns(key: PRNGKeyArray, d: int, p: int, *, after=None) -> Float[Array, "d p"]:
    """A Haar-distributed `d × p` matrix with orthonormal columns (QR of a Gaussian, signs fixed).

    Costs `O(d p²)`, so it never forms a `d × d` rotation. `after`: an array this QR must wait
    for. Two independent batched QRs in one XLA:CPU program were seen to deadlock (jax 0.10.2,
    vmap over ≥ 64 problems at d = 1000); a zero-valued data dependency orders them.
    """
    g = jax.random.normal(key, (d, p))
    if after is not None:
        g = g + 0.0 * jnp.sum(after)
    q, r = jnp.linalg.qr(g)
    # Multiplying by sign(diag r) makes the distribution exactly Haar.
    return q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)


def polar_factor(M: Float[Array, "k k"]) -> Float[Array, "k k"]:
    """The orthogonal polar factor `W Vᵀ` of `M = W Σ Vᵀ`.

    It maximises `tr(Uᵀ M)` over orthogonal `U`; for `M = B0 B⋆ᵀ` it is the rotation that best
    aligns `B⋆` to `B0`.
    """
    w, _, vt = jnp.linalg.svd(M)
    return w @ vt


def principal_cosines(E: Float[Array, "d r"], F: Float[Array, "d t"]) -> Float[Array, " r"]:
    """Cosines of the principal angles between span(E) and span(F), largest first.

    `E`, `F` have orthonormal columns and `r ≤ t`; the cosines are the singular values of `Eᵀ F`.
    """
    return jnp.linalg.svd(E.T @ F, compute_uv=False)[: E.shape[1]]


def column_space_basis(X: Float[Array, "n d"], rank: int) -> Float[Array, "d rank"]:
    """Orthonormal basis of the row space of `X` (its top-`rank` right singular vectors)."""
    _, _, vt = jnp.linalg.svd(X, full_matrices=False)
    return vt[:rank].T


def numerical_rank(X, rtol: float | None = None) -> int:
    """Rank of a concrete matrix, counting singular values above `rtol · σ_max`.

    The default `rtol = max(n, d) · machine epsilon` is numpy's `matrix_rank` rule.
    """
    s = jnp.linalg.svd(jnp.asarray(X), compute_uv=False)
    if rtol is None:
        rtol = max(X.shape) * jnp.finfo(s.dtype).eps
    return int(jnp.sum(s > rtol * s[0])) if s.size else 0

"""Small dense linear-algebra helpers: orthonormal bases, polar factors, principal angles.

Every LAPACK-backed decomposition in the library goes through the wrappers below, which run one
matrix at a time under `vmap`. Why: jaxlib 0.10.2's CPU LAPACK kernels split a batch over XLA's
intra-op thread pool and block until the pieces finish, so two large batched decompositions that
XLA runs concurrently can occupy every pool thread and wait on each other forever. We saw it hang
`vmap(make_problem)` + `ReducedProblem.from_problem` (a QR beside an SVD) at d = 100–1000 on 2
cores; native stacks show both pool threads in `jax::ParallelBatchMap` → `BlockingCounter::Wait`.
Later jaxlib builds drop that parallel path. Unbatched calls run inline, so sequencing the batch
(`jax.custom_batching.sequential_vmap`) removes the hang at the cost of LAPACK's batch
parallelism, which only the O(d) set-up (never the flows) uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

_one_at_a_time = jax.custom_batching.sequential_vmap


@_one_at_a_time
def singular_values(a: Float[Array, "r c"]) -> Float[Array, " s"]:
    """Singular values of `a`, largest first."""
    return jnp.linalg.svd(a, compute_uv=False)


@_one_at_a_time
def thin_svd(a: Float[Array, "r c"]):
    """`(U, s, Vᵀ)` with `a = U diag(s) Vᵀ`, `s` largest first, thin factors."""
    return jnp.linalg.svd(a, full_matrices=False)


@_one_at_a_time
def thin_qr(a: Float[Array, "r c"]):
    """`(Q, R)` with `a = Q R`, `Q` with orthonormal columns (thin, `r ≥ c`)."""
    return jnp.linalg.qr(a)


@_one_at_a_time
def symmetric_eigh(a: Float[Array, "r r"]):
    """`(λ, V)` with `a = V diag(λ) Vᵀ` for a symmetric `a`, `λ` ascending."""
    return jnp.linalg.eigh(a)


@_one_at_a_time
def solve_linear(a: Float[Array, "r r"], b: Float[Array, " r"]) -> Float[Array, " r"]:
    """`a⁻¹ b` for a square non-singular `a` (LU)."""
    return jnp.linalg.solve(a, b)


@_one_at_a_time
def pinv(a: Float[Array, "r c"]) -> Float[Array, "c r"]:
    """Moore–Penrose pseudo-inverse (numpy's default cut-off for small singular values)."""
    return jnp.linalg.pinv(a)


@_one_at_a_time
def pinv_hermitian(a: Float[Array, "r r"]) -> Float[Array, "r r"]:
    """Pseudo-inverse of a symmetric matrix, via its eigendecomposition."""
    return jnp.linalg.pinv(a, hermitian=True)


def spectral_norm(a: Float[Array, "r c"]) -> Float[Array, ""]:
    """`‖a‖₂ = σ_max(a)`."""
    return singular_values(a)[0]


def random_orthonormal_columns(key: PRNGKeyArray, d: int, p: int) -> Float[Array, "d p"]:
    """A Haar-distributed `d × p` matrix with orthonormal columns: the `Q` of the thin QR
    `G = Q R` of a Gaussian `G` with `diag(R) > 0`.

    Costs `O(d p²)`, so it never forms a `d × d` rotation. Tall frames (`d ≥ 2p`) use
    `cholesky_qr2`, whose work is two matrix products (GEMM speed); Householder QR of a
    `10⁴ × 70` Gaussian runs ~3× slower per matrix on XLA:CPU (benchmarks/RESULTS.md).
    """
    g = jax.random.normal(key, (d, p))
    if d >= 2 * p:
        return cholesky_qr2(g)
    q, r = thin_qr(g)
    # Multiplying by sign(diag r) makes the distribution exactly Haar.
    return q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)


@_one_at_a_time
def _inverse_cholesky_factor(gram: Float[Array, "p p"]) -> Float[Array, "p p"]:
    """`R⁻¹` for `gram = Rᵀ R`, `R` upper triangular with a positive diagonal."""
    R = jnp.linalg.cholesky(gram).T
    return jax.scipy.linalg.solve_triangular(R, jnp.eye(gram.shape[0], dtype=gram.dtype), lower=False)


def cholesky_qr2(a: Float[Array, "r c"]) -> Float[Array, "r c"]:
    """The `Q` of `a = Q R` with `diag(R) > 0`, by CholeskyQR2: `Q₁ = a R₁⁻¹` from
    `aᵀa = R₁ᵀR₁`, then once more on `Q₁` (Yamamoto et al. 2015). One pass loses
    orthogonality as `ε κ(a)²`; the second brings it to `O(ε)` for `κ(a) ≲ ε^{-1/2} ≈ 10⁸`.
    Tall Gaussians are far inside that (`κ ≤ (1 + √(c/r))/(1 − √(c/r))` roughly, ≈ 6 at
    `r = 2c`). The product of the two positive-diagonal factors is positive-diagonal, so this is
    the same `Q` as Householder QR with its signs fixed, to round-off."""
    for _ in range(2):
        a = a @ _inverse_cholesky_factor(a.T @ a)
    return a


def polar_factor(M: Float[Array, "k k"]) -> Float[Array, "k k"]:
    """The orthogonal polar factor `W Vᵀ` of `M = W Σ Vᵀ`.

    It maximises `tr(Uᵀ M)` over orthogonal `U`; for `M = B0 B⋆ᵀ` it is the rotation that best
    aligns `B⋆` to `B0`.
    """
    w, _, vt = thin_svd(M)
    return w @ vt


def principal_cosines(E: Float[Array, "d r"], F: Float[Array, "d t"]) -> Float[Array, " r"]:
    """Cosines of the principal angles between span(E) and span(F), largest first.

    `E`, `F` have orthonormal columns and `r ≤ t`; the cosines are the singular values of `Eᵀ F`.
    """
    return singular_values(E.T @ F)[: E.shape[1]]


def column_space_basis(X: Float[Array, "n d"], rank: int) -> Float[Array, "d rank"]:
    """Orthonormal basis of the row space of `X` (its top-`rank` right singular vectors)."""
    _, _, vt = thin_svd(X)
    return vt[:rank].T


def numerical_rank(X, rtol: float | None = None) -> int:
    """Rank of a concrete matrix, counting singular values above `rtol · σ_max`.

    The default `rtol = max(n, d) · machine epsilon` is numpy's `matrix_rank` rule.
    """
    s = singular_values(jnp.asarray(X))
    if rtol is None:
        rtol = max(X.shape) * jnp.finfo(s.dtype).eps
    return int(jnp.sum(s > rtol * s[0])) if s.size else 0

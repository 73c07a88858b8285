"""Shared hypothesis strategies, problem builders and reference helpers for the tests.

JAX compiles `fine_tune` once per (shapes, number of saved times, rtol, atol, grad_tol,
coordinates, max_steps), so the tests draw dimensions from a small fixed set, save on the same
grid length everywhere, and use a handful of tolerance settings (below). Seeds, eps, heads and φ
are what hypothesis varies; after the first compile each solve costs milliseconds.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st

import linprobe_theory as lt

# (d, k, m, n): all satisfy 1 ≤ m < d − k, n ≥ m, k ≤ m and m + 2k ≤ d (so `coverage` works).
DIMS = [(12, 2, 4, 8), (16, 3, 6, 12)]

# The integrator's defaults in `fine_tune`/`linear_probe` (PID controller, Tsit5).
RTOL, ATOL = 1e-8, 1e-12
# A tighter setting, used where a test compares two integrations against each other.
RTOL_TIGHT, ATOL_TIGHT = 1e-10, 1e-12

# FT on DIMS reaches zero training loss (to ~1e-16 relative) by t ≈ 25–50 (the slowest draw we
# measured still had relative training loss 4e-8 at t = 10 and 1e-13 at t = 25), so 100 covers
# the transient and a long stretch of the converged regime.
T_FT = 100.0

dims = st.sampled_from(DIMS)
seeds = st.integers(0, 2**31 - 1)
eps_values = st.sampled_from([0.0, 1e-3, 1e-2, 0.1, 0.5])
small_eps = st.sampled_from([0.0, 1e-4, 1e-3])
coverages = st.sampled_from([None, 0.6, 0.95])
set_coverages = st.sampled_from([0.6, 0.95])
subspaces = st.sampled_from(["random", "axis"])
head_kinds = st.sampled_from(["zero", "random", "phi"])
phis = st.floats(0.0, 2.0)


def build(dims, seed, eps=0.0, coverage=None, **spec_kwargs) -> lt.Problem:
    d, k, m, n = dims
    spec = lt.ProblemSpec(d=d, k=k, m=m, n=n, eps=eps, coverage=coverage, **spec_kwargs)
    return lt.make_problem(spec, key=jax.random.key(seed))


def make_head(problem, kind, seed, phi=0.5):
    """`zero_head`, `random_head`, or `head_with_alignment(φ)` with an orthogonal part."""
    key = jax.random.fold_in(jax.random.key(seed), 12345)
    if kind == "zero":
        return lt.zero_head(problem)
    if kind == "random":
        return lt.random_head(problem, key=key)
    return lt.head_with_alignment(problem, phi, key=key, orthogonal_norm=0.3)


def time_grid(t_final, num=40):
    """0 followed by `num` log-spaced times from 1e-4·t_final to t_final (num + 1 times)."""
    return jnp.concatenate([jnp.zeros(1), jnp.logspace(-4, 0, num) * t_final])


def random_orthogonal(seed, k, reflect=False):
    """A Haar orthogonal `k × k` matrix; `reflect` forces det = −1, otherwise det = +1."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(k, k)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q


def perp_basis(Q_S):
    """An explicit orthonormal basis of S⊥ (`d × (d − m)`), from a full SVD (small d only)."""
    Q_S = np.asarray(Q_S)
    return np.linalg.svd(Q_S.T, full_matrices=True)[2][Q_S.shape[1] :].T


def ft_bound_reference(problem, v0):
    """The FT lower bound recomputed in numpy from its definition, independently of the library:
    explicit S⊥ basis for the coverage, numpy SVD for the aligning rotation and the feature
    error, dense Σ for σ_min. Returns the squared, clipped right-hand side."""
    B0, Bs, vs = (np.asarray(a) for a in (problem.B0, problem.B_star, problem.v_star))
    k = B0.shape[0]
    coverage = np.linalg.svd(B0 @ perp_basis(problem.Q_S), compute_uv=False)[k - 1]
    w, _, vt = np.linalg.svd(B0 @ Bs.T)
    U = w @ vt
    eps = np.linalg.norm(B0 - U @ Bs, 2)
    vs_aligned = U @ vs
    phi = math.sqrt(abs(float(np.asarray(v0) @ vs_aligned) ** 2 - float(vs_aligned @ vs_aligned) ** 2))
    w_norm = np.linalg.norm(Bs.T @ vs)
    sigma_min = np.linalg.eigvalsh(np.asarray(problem.ood.dense()))[0]
    rhs = coverage / math.sqrt(k) * min(phi, phi**2 / w_norm) / (1 + w_norm) ** 2 - eps
    return sigma_min * max(rhs, 0.0) ** 2


def rank_deficient_problem(seed=0, d=12, k=3, m=2, n=5):
    """A problem with m < k built from arrays: A = X B0ᵀ has rank m < k, so LP's limit keeps the
    component of v0 in null(A)."""
    rng = np.random.default_rng(seed)
    frame = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = rng.normal(size=(n, m)) @ frame[:, :m].T
    B_star = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    B0 = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    v_star = rng.normal(size=k)
    return lt.Problem.from_arrays(X=X, y=X @ B_star.T @ v_star, B_star=B_star, v_star=v_star, B0=B0)

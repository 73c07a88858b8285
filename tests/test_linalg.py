"""`linalg.py`: the Haar frame's fast path (CholeskyQR2) is Householder QR with its signs fixed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linprobe_theory.linalg import cholesky_qr2, random_orthonormal_columns


@pytest.mark.parametrize(("d", "p"), [(10, 5), (100, 50), (3000, 70)])
def test_cholesky_qr2_is_the_positive_diagonal_qr_factor(d, p):
    g = jax.random.normal(jax.random.key(d + p), (d, p))
    q, r = jnp.linalg.qr(g)
    signs = jnp.where(jnp.diag(r) < 0, -1.0, 1.0)
    fast = cholesky_qr2(g)
    # Both are backward stable; the factors agree to a few ε·κ(g) (κ ≤ ~6 at d = 2p).
    np.testing.assert_allclose(fast, q * signs, atol=1e-13)
    np.testing.assert_allclose(fast.T @ fast, np.eye(p), atol=1e-14)
    # The R it implies, fastᵀ g, is upper triangular with a positive diagonal.
    implied = fast.T @ g
    np.testing.assert_allclose(np.tril(implied, -1), 0.0, atol=1e-12)
    assert np.all(np.diag(implied) > 0)


@pytest.mark.parametrize(("d", "p"), [(12, 8), (40, 20)])
def test_both_paths_of_the_haar_frame_give_orthonormal_columns(d, p):
    # d < 2p takes Householder QR, d ≥ 2p CholeskyQR2; under vmap as in make_problem.
    q = jax.vmap(lambda k: random_orthonormal_columns(k, d, p))(jax.random.split(jax.random.key(1), 3))
    gram = jnp.einsum("rdi,rdj->rij", q, q)
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(p), (3, p, p)), atol=1e-14)

"""OODCovariance: factored Σ against dense numpy, for every constructor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from linprobe_theory import OODCovariance

D = 7


def _cases():
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.normal(size=(D, 3)))[0]
    A = rng.normal(size=(D, D))
    dense = A @ A.T + 0.1 * np.eye(D)
    V = np.linalg.qr(rng.normal(size=(D, 2)))[0]
    W = np.linalg.qr(rng.normal(size=(D, D)))[0]
    lam = np.linspace(0.2, 4.0, D)
    return {
        "isotropic": (OODCovariance.isotropic(D, 2.0), 2.0 * np.eye(D)),
        "isotropic_rank": (OODCovariance.isotropic(D, 0.7, rank=3), 0.7 * np.eye(D)),
        "two_subspace_shift": (
            OODCovariance.two_subspace(jnp.asarray(Q), 0.1, 3.0),
            0.1 * Q @ Q.T + 3.0 * (np.eye(D) - Q @ Q.T),
        ),
        "two_subspace_id_heavy": (
            OODCovariance.two_subspace(jnp.asarray(Q), 5.0, 0.5),
            5.0 * Q @ Q.T + 0.5 * (np.eye(D) - Q @ Q.T),
        ),
        "from_matrix": (OODCovariance.from_matrix(dense), dense),
        "from_eigh_partial": (
            OODCovariance.from_eigh(V, [5.0, 0.5], floor=1.5),
            V @ np.diag([5.0, 0.5]) @ V.T + 1.5 * (np.eye(D) - V @ V.T),
        ),
        "from_eigh_full": (OODCovariance.from_eigh(W, lam), W @ np.diag(lam) @ W.T),
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_factored_covariance_matches_dense(case):
    """Quadratic forms, products, the dense matrix and the extreme eigenvalues, against numpy.
    All are a few products of O(1) numbers: 1e-10 relative is round-off with a wide margin."""
    cov, dense = _cases()[case]
    rng = np.random.default_rng(len(case))
    e = rng.normal(size=(5, D))
    np.testing.assert_allclose(
        cov.quadratic_form(jnp.asarray(e)), np.einsum("ni,ij,nj->n", e, dense, e), rtol=1e-10
    )
    np.testing.assert_allclose(cov.quadratic_form(jnp.asarray(e[0])), e[0] @ dense @ e[0], rtol=1e-10)
    M = rng.normal(size=(D, 3))
    np.testing.assert_allclose(cov.matmul(jnp.asarray(M)), dense @ M, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cov.dense(), dense, atol=1e-10)
    eig = np.linalg.eigvalsh(dense)
    np.testing.assert_allclose(cov.min_eigenvalue(), eig[0], rtol=1e-9)
    np.testing.assert_allclose(cov.max_eigenvalue(), eig[-1], rtol=1e-9)
    assert cov.dim == D


def test_two_subspace_is_traceable_in_the_weights():
    Q = jnp.asarray(np.linalg.qr(np.random.default_rng(1).normal(size=(D, 2)))[0])
    weights = jnp.array([0.1, 1.0, 4.0])
    mins = jax.vmap(lambda w: OODCovariance.two_subspace(Q, w, 1.0).min_eigenvalue())(weights)
    np.testing.assert_allclose(mins, [0.1, 1.0, 1.0], rtol=1e-14)


def test_invalid_covariances_raise():
    with pytest.raises(ValueError, match="sigma_ood must be symmetric"):
        OODCovariance.from_matrix(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive definite"):
        OODCovariance.from_matrix(np.diag([1.0, 0.0]))
    with pytest.raises(ValueError, match="sigma_ood must be a square"):
        OODCovariance.from_matrix(np.ones((2, 3)))
    with pytest.raises(ValueError, match="sigma_ood contains 1 non-finite"):
        OODCovariance.from_matrix(np.diag([1.0, np.nan]))
    with pytest.raises(ValueError, match="scale"):
        OODCovariance.isotropic(3, -1.0)
    with pytest.raises(ValueError, match="id_weight"):
        OODCovariance.two_subspace(jnp.eye(3)[:, :1], 0.0, 1.0)
    with pytest.raises(ValueError, match="orth_weight"):
        OODCovariance.two_subspace(jnp.eye(3)[:, :1], 1.0, -2.0)
    with pytest.raises(ValueError, match="positive definite"):
        OODCovariance.from_eigh(np.eye(3)[:, :2], [1.0, 2.0], floor=0.0)
    with pytest.raises(ValueError, match=r"eigenvalues must have shape \(2,\)"):
        OODCovariance.from_eigh(np.eye(3)[:, :2], [1.0, 2.0, 3.0], floor=1.0)
    with pytest.raises(ValueError, match="eigenvalues contains 1 non-finite"):
        OODCovariance.from_eigh(np.eye(3)[:, :2], [1.0, np.inf], floor=1.0)

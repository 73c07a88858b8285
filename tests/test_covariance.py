"""OODCovariance: factored Σ against dense numpy."""

import jax.numpy as jnp
import numpy as np
import pytest

from linprobe_theory import OODCovariance


def _cases():
    rng = np.random.default_rng(0)
    d = 7
    Q = np.linalg.qr(rng.normal(size=(d, 3)))[0]
    A = rng.normal(size=(d, d))
    dense = A @ A.T + 0.1 * np.eye(d)
    V = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    return [
        (OODCovariance.isotropic(d, 2.0), 2.0 * np.eye(d)),
        (OODCovariance.two_subspace(jnp.asarray(Q), 0.1, 3.0), 0.1 * Q @ Q.T + 3.0 * (np.eye(d) - Q @ Q.T)),
        (OODCovariance.from_matrix(dense), dense),
        (
            OODCovariance.from_eigh(V, [5.0, 0.5], floor=1.5),
            V @ np.diag([5.0, 0.5]) @ V.T + 1.5 * (np.eye(d) - V @ V.T),
        ),
    ]


@pytest.mark.parametrize("case", range(4))
def test_factored_covariance_matches_dense(case):
    cov, dense = _cases()[case]
    rng = np.random.default_rng(case)
    e = rng.normal(size=(5, dense.shape[0]))
    np.testing.assert_allclose(
        cov.quadratic_form(jnp.asarray(e)), np.einsum("ni,ij,nj->n", e, dense, e), rtol=1e-10
    )
    np.testing.assert_allclose(cov.dense(), dense, atol=1e-10)
    eig = np.linalg.eigvalsh(dense)
    np.testing.assert_allclose(cov.min_eigenvalue(), eig[0], rtol=1e-9)
    np.testing.assert_allclose(cov.max_eigenvalue(), eig[-1], rtol=1e-9)


def test_invalid_covariances_raise():
    with pytest.raises(ValueError, match="sigma_ood must be symmetric"):
        OODCovariance.from_matrix(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive definite"):
        OODCovariance.from_matrix(np.diag([1.0, 0.0]))
    with pytest.raises(ValueError, match="sigma_ood must be a square"):
        OODCovariance.from_matrix(np.ones((2, 3)))
    with pytest.raises(ValueError, match="scale"):
        OODCovariance.isotropic(3, -1.0)
    with pytest.raises(ValueError, match="positive definite"):
        OODCovariance.from_eigh(np.eye(3)[:, :2], [1.0, 2.0], floor=0.0)

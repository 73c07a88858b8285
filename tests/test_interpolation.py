"""Weight-space interpolation (WiSE-FT): the error is a quadratic in α and every quadratic loss
a quartic, with coefficients checked against `losses` at arbitrary α (also outside [0, 1],
under a non-isotropic Σ and with label noise), and the quartic's minimiser on [0, 1] against a
dense grid and numpy's polynomial roots."""

import jax
import jax.numpy as jnp
import numpy as np
from _strategies import build, coverages, dims, eps_values, seeds
from hypothesis import given
from hypothesis import strategies as st

import linprobe_theory as lt
from linprobe_theory import interpolation as ip


def two_states(problem, seed, scale=0.3):
    """Two generic states `(v, B)`, the second's features moved in S and S⊥ alike."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    v_a = jax.random.normal(k1, (problem.k,))
    v_b = jax.random.normal(k2, (problem.k,))
    B_b = problem.B0 + scale * jax.random.normal(k3, (problem.k, problem.d))
    return v_a, problem.B0, v_b, B_b


def test_interpolate_hits_both_ends_exactly_and_batches_over_alpha():
    problem = build((16, 3, 6, 12), 0, 0.1)
    v_a, B_a, v_b, B_b = two_states(problem, 1)
    v, B = ip.interpolate(v_a, B_a, v_b, B_b, jnp.array([0.0, 0.25, 1.0]))
    assert v.shape == (3, 3) and B.shape == (3, 3, 16)
    np.testing.assert_array_equal(v[0], v_a)
    np.testing.assert_array_equal(B[0], B_a)
    np.testing.assert_array_equal(v[2], v_b)
    np.testing.assert_array_equal(B[2], B_b)
    np.testing.assert_allclose(v[1], 0.75 * v_a + 0.25 * v_b, rtol=1e-14)
    v_s, B_s = ip.interpolate(v_a, B_a, v_b, B_b, 0.25)
    assert v_s.shape == (3,) and B_s.shape == (3, 16)


@given(
    dims=dims,
    seed=seeds,
    eps=eps_values,
    coverage=coverages,
    id_w=st.sampled_from([1.0, 0.3]),
    noise=st.sampled_from([0.0, 0.1]),
)
def test_quartics_equal_the_losses_along_the_path(dims, seed, eps, coverage, id_w, noise):
    """Both sides sum O(scale) terms in float64, so 1e-10 of Σ|c_p||α|^p is round-off with a wide
    margin; α outside [0, 1] too, since the identity is algebraic."""
    problem = build(dims, seed, eps, coverage, ood_id_weight=id_w, ood_orth_weight=2.0, label_noise=noise)
    a_v, a_B, b_v, b_B = two_states(problem, seed)
    alphas = jnp.linspace(-1.0, 2.0, 13)
    v, B = ip.interpolate(a_v, a_B, b_v, b_B, alphas)
    E = ip.error_coefficients(problem, a_v, a_B, b_v, b_B)
    e = E[0] + alphas[:, None] * E[1] + alphas[:, None] ** 2 * E[2]
    np.testing.assert_allclose(e, lt.losses.predictor(v, B) - problem.w_star, atol=1e-12)
    for quartic, loss in (
        (ip.ood_quartic, lt.ood_loss),
        (ip.id_quartic, lt.id_loss),
        (ip.train_quartic, lt.train_loss),
    ):
        c = quartic(problem, a_v, a_B, b_v, b_B)
        assert c.shape == (5,)
        direct = loss(problem, v, B)
        error = np.abs(ip.quartic_value(c, alphas) - direct)
        assert np.all(error <= 1e-10 * ip.quartic_scale(c, alphas)), (quartic.__name__, error.max())


def test_quartic_from_gram_by_hand():
    """L(α) = Σ_ij α^{i+j} G_ij for G = [[1, 2, 3], [2, 5, 7], [3, 7, 11]]:
    c = [1, 2·2, 5 + 2·3, 2·7, 11]."""
    G = jnp.array([[1.0, 2.0, 3.0], [2.0, 5.0, 7.0], [3.0, 7.0, 11.0]])
    np.testing.assert_array_equal(ip.quartic_from_gram(G), [1.0, 4.0, 11.0, 14.0, 11.0])
    np.testing.assert_allclose(ip.quartic_value(ip.quartic_from_gram(G), 2.0), 1 + 8 + 44 + 112 + 176)


def _reference_minimum(c):
    """min over [0, 1] of the quartic: end points and numpy's real roots of L' inside."""
    d1 = np.polynomial.polynomial.Polynomial(c).deriv()
    roots = d1.roots() if np.any(d1.coef != 0) else np.array([])
    cand = np.concatenate([[0.0, 1.0], np.real(roots[np.abs(np.imag(roots)) < 1e-9])])
    cand = cand[(cand >= 0) & (cand <= 1)]
    values = np.polynomial.polynomial.polyval(cand, c)
    return cand[np.argmin(values)], values.min()


def test_quartic_minimum_matches_roots_and_a_dense_grid():
    """Random quartics (L ≥ 0 ones from Gram matrices, and arbitrary signs), plus degenerate ones
    (c4 = 0, a quadratic, a constant, a double well whose global minimum is near α = 1)."""
    rng = np.random.default_rng(0)
    coeffs = [ip.quartic_from_gram(jnp.asarray(M @ M.T)) for M in rng.normal(size=(20, 3, 3))]
    coeffs += [jnp.asarray(c) for c in rng.normal(size=(20, 5))]
    coeffs += [
        jnp.array([1.0, -3.0, 2.0, 0.5, 0.0]),
        jnp.array([1.0, -1.0, 1.0, 0.0, 0.0]),
        jnp.array([2.0, 0.0, 0.0, 0.0, 0.0]),
        # (α − 0.2)²(α − 0.9)² − 0.01 α: wells at 0.2 and 0.9, the second lower
        jnp.asarray(np.polynomial.polynomial.polyfromroots([0.2, 0.2, 0.9, 0.9]) - [0.0, 0.01, 0, 0, 0]),
    ]
    batch = jnp.stack(coeffs)
    alpha, value = jax.jit(jax.vmap(ip.quartic_minimum))(batch)
    grid = np.linspace(0.0, 1.0, 200_001)
    for c, a, v in zip(np.asarray(batch), np.asarray(alpha), np.asarray(value), strict=True):
        ref_a, ref_v = _reference_minimum(c)
        scale = np.sum(np.abs(c))
        assert 0.0 <= a <= 1.0
        np.testing.assert_allclose(v, np.polynomial.polynomial.polyval(a, c), atol=1e-14 * scale)
        assert v <= ref_v + 1e-13 * scale
        assert v <= np.polynomial.polynomial.polyval(grid, c).min() + 1e-13 * scale
    np.testing.assert_allclose(alpha[-1], 0.9, atol=1e-2)

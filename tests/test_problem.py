"""Problem construction: geometry as specified, from_arrays round trip, traced overrides."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import build, coverages, dims, eps_values, rank_deficient_problem, seeds, subspaces
from hypothesis import given
from hypothesis import strategies as st

import linprobe_theory as lt

# Construction is a handful of QRs and products of O(1) numbers: round-off is ~1e-15, so 1e-12
# absolute leaves three orders of magnitude and still catches any real construction error.
GEOM_ATOL = 1e-12


@given(dims=dims, seed=seeds, eps=eps_values, coverage=coverages, subspace=subspaces)
def test_constructed_geometry(dims, seed, eps, coverage, subspace):
    problem = build(dims, seed, eps, coverage, subspace=subspace, v_star_norm=1.3)
    d, k, m, n = dims
    assert (problem.d, problem.k, problem.m, problem.n) == (d, k, m, n)
    np.testing.assert_allclose(problem.Q_S.T @ problem.Q_S, np.eye(m), atol=GEOM_ATOL)
    # X spans exactly S: rank m and no component in S⊥.
    assert np.linalg.matrix_rank(np.asarray(problem.X)) == m
    np.testing.assert_allclose(problem.X - problem.X @ problem.Q_S @ problem.Q_S.T, 0.0, atol=GEOM_ATOL)
    np.testing.assert_allclose(problem.y, problem.X @ problem.w_star, atol=GEOM_ATOL)
    np.testing.assert_allclose(jnp.linalg.norm(problem.v_star), 1.3, rtol=GEOM_ATOL)
    np.testing.assert_allclose(jnp.linalg.norm(problem.w_star), 1.3, rtol=1e-10)  # ‖w⋆‖ = ‖v⋆‖
    np.testing.assert_allclose(problem.B0 @ problem.B0.T, np.eye(k), atol=GEOM_ATOL)
    np.testing.assert_allclose(problem.B_star @ problem.B_star.T, np.eye(k), atol=GEOM_ATOL)
    if subspace == "axis":
        np.testing.assert_array_equal(problem.Q_S, np.eye(d, m))
        np.testing.assert_allclose(problem.X[:, m:], 0.0, atol=1e-15)


@given(dims=dims, seed=seeds, id_w=st.sampled_from([1.0, 0.05, 3.0]), orth_w=st.sampled_from([1.0, 0.5]))
def test_ood_second_moment_weights_s_and_its_complement(dims, seed, id_w, orth_w):
    """`Σ = ood_id_weight · P_S + ood_orth_weight · P_{S⊥}` as a dense matrix."""
    problem = build(dims, seed, 0.1, ood_id_weight=id_w, ood_orth_weight=orth_w)
    P_S = np.asarray(problem.Q_S @ problem.Q_S.T)
    expected = id_w * P_S + orth_w * (np.eye(problem.d) - P_S)
    np.testing.assert_allclose(problem.ood.dense(), expected, atol=GEOM_ATOL)
    np.testing.assert_allclose(problem.ood.min_eigenvalue(), min(id_w, orth_w), rtol=1e-14)
    np.testing.assert_allclose(problem.ood.max_eigenvalue(), max(id_w, orth_w), rtol=1e-14)


def test_label_noise_is_added_only_when_asked():
    clean = build((12, 2, 4, 8), seed=0)
    noisy = build((12, 2, 4, 8), seed=0, label_noise=0.1)
    np.testing.assert_allclose(clean.y, clean.X @ clean.w_star, atol=GEOM_ATOL)
    residual = np.asarray(noisy.y - noisy.X @ noisy.w_star)
    assert 0.01 < np.std(residual) < 1.0
    np.testing.assert_array_equal(clean.X, noisy.X)


def test_input_scale_scales_the_inputs():
    base = build((12, 2, 4, 8), seed=3)
    scaled = build((12, 2, 4, 8), seed=3, input_scale=2.5)
    np.testing.assert_allclose(scaled.X, 2.5 * base.X, rtol=1e-14)
    np.testing.assert_allclose(scaled.y, 2.5 * base.y, rtol=1e-12)


def test_from_arrays_round_trip_and_rank_detection():
    problem = build((16, 3, 6, 12), seed=5, eps=0.2)
    again = lt.Problem.from_arrays(
        X=np.asarray(problem.X),
        y=np.asarray(problem.y),
        B_star=problem.B_star,
        v_star=problem.v_star,
        B0=problem.B0,
    )
    assert again.m == problem.m
    # Same subspace (bases may differ by a rotation).
    np.testing.assert_allclose(again.Q_S @ again.Q_S.T, problem.Q_S @ problem.Q_S.T, atol=1e-10)
    np.testing.assert_allclose(lt.feature_error(again.B0, again.B_star), 0.2, rtol=1e-9)
    np.testing.assert_allclose(again.ood.dense(), np.eye(16), atol=1e-15)  # default Σ = I


def test_from_arrays_detects_rank_below_k():
    problem = rank_deficient_problem()
    assert (problem.d, problem.k, problem.m, problem.n) == (12, 3, 2, 5)
    np.testing.assert_allclose(problem.X - problem.X @ problem.Q_S @ problem.Q_S.T, 0.0, atol=1e-12)


def test_from_arrays_accepts_dense_sigma_and_with_ood():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    sigma = np.diag(np.linspace(0.5, 2.0, 12))
    custom = problem.with_ood(sigma)
    e = np.asarray(problem.B0.T @ problem.v_star - problem.w_star)
    np.testing.assert_allclose(lt.ood_loss(custom, problem.v_star, problem.B0), e @ sigma @ e, rtol=1e-10)
    via_arrays = lt.Problem.from_arrays(
        X=problem.X, y=problem.y, B_star=problem.B_star, v_star=problem.v_star, B0=problem.B0, sigma_ood=sigma
    )
    np.testing.assert_allclose(via_arrays.ood.min_eigenvalue(), 0.5, rtol=1e-12)
    np.testing.assert_allclose(via_arrays.ood.dense(), sigma, atol=1e-12)
    via_cov = lt.Problem.from_arrays(
        X=problem.X,
        y=problem.y,
        B_star=problem.B_star,
        v_star=problem.v_star,
        B0=problem.B0,
        sigma_ood=lt.OODCovariance.isotropic(12, 2.0),
    )
    np.testing.assert_allclose(via_cov.ood.dense(), 2.0 * np.eye(12), atol=1e-15)


def test_with_B0_replaces_only_the_features():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    other = problem.with_B0(problem.B_star)
    np.testing.assert_array_equal(other.B0, problem.B_star)
    np.testing.assert_array_equal(other.X, problem.X)
    assert float(lt.feature_error(other.B0, other.B_star)) <= 1e-14


def test_traced_overrides_match_spec_fields():
    """make_problem(spec, eps=…) under vmap equals building with that eps in the spec."""
    spec = lt.ProblemSpec(d=16, k=3, m=6, n=12, eps=0.0, coverage=0.9)
    eps = jnp.array([0.0, 0.05, 0.3])
    key = jax.random.key(2)
    batched = jax.vmap(lambda e: lt.make_problem(spec, key=key, eps=e, ood_id_weight=0.5))(eps)
    for i, e in enumerate([0.0, 0.05, 0.3]):
        single = lt.make_problem(
            lt.ProblemSpec(d=16, k=3, m=6, n=12, eps=e, coverage=0.9, ood_id_weight=0.5), key=key
        )
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single), strict=True):
            np.testing.assert_allclose(a[i], b, atol=1e-14)


def test_theta_matches_eps():
    assert lt.ProblemSpec(d=10, k=2, m=3, n=3, eps=math.sqrt(2)).theta == pytest.approx(math.pi / 2)
    assert lt.ProblemSpec(d=10, k=2, m=3, n=3, eps=0.3).theta == pytest.approx(2 * math.asin(0.15))

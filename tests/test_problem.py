"""Problem construction: geometry as specified, from_arrays round trip, traced overrides."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import build, coverages, dims, eps_values, seeds
from hypothesis import given
from hypothesis import strategies as st

import linprobe_theory as lt


@given(
    dims=dims, seed=seeds, eps=eps_values, coverage=coverages, subspace=st.sampled_from(["random", "axis"])
)
def test_constructed_geometry(dims, seed, eps, coverage, subspace):
    problem = build(dims, seed, eps, coverage, subspace=subspace, v_star_norm=1.3)
    d, k, m, n = dims
    assert (problem.d, problem.k, problem.m, problem.n) == (d, k, m, n)
    np.testing.assert_allclose(problem.Q_S.T @ problem.Q_S, np.eye(m), atol=1e-12)
    # X spans exactly S: rank m and no component in S⊥.
    assert np.linalg.matrix_rank(np.asarray(problem.X)) == m
    np.testing.assert_allclose(problem.X - problem.X @ problem.Q_S @ problem.Q_S.T, 0.0, atol=1e-12)
    np.testing.assert_allclose(problem.y, problem.X @ problem.w_star, atol=1e-12)
    np.testing.assert_allclose(jnp.linalg.norm(problem.v_star), 1.3, rtol=1e-12)
    if subspace == "axis":
        np.testing.assert_allclose(problem.X[:, m:], 0.0, atol=1e-15)


def test_label_noise_is_added_only_when_asked():
    clean = build((12, 2, 4, 8), seed=0)
    noisy = build((12, 2, 4, 8), seed=0, label_noise=0.1)
    residual = np.asarray(noisy.y - noisy.X @ noisy.w_star)
    assert 0.01 < np.std(residual) < 1.0
    np.testing.assert_array_equal(clean.X, noisy.X)


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
        np.testing.assert_allclose(batched.B_star[i], single.B_star, atol=1e-14)
        np.testing.assert_allclose(batched.ood.spectrum[i], single.ood.spectrum, atol=1e-14)


def test_theta_matches_eps():
    assert lt.ProblemSpec(d=10, k=2, m=3, n=3, eps=math.sqrt(2)).theta == pytest.approx(math.pi / 2)

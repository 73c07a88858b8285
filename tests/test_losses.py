"""Losses against direct numpy formulas, in full and reduced coordinates."""

import jax
import jax.numpy as jnp
import numpy as np
from _strategies import build, coverages, dims, eps_values, seeds
from hypothesis import given
from hypothesis import strategies as st

import linprobe_theory as lt
from linprobe_theory import reduced


def _random_state(problem, seed):
    kv, kz = jax.random.split(jax.random.key(seed))
    v = jax.random.normal(kv, (problem.k,))
    dZ = 0.3 * jax.random.normal(kz, (problem.k, problem.m))
    return v, problem.B0 + dZ @ problem.Q_S.T


@given(dims=dims, seed=seeds, eps=eps_values, coverage=coverages, id_w=st.sampled_from([1.0, 0.1]))
def test_losses_match_numpy(dims, seed, eps, coverage, id_w):
    problem = build(dims, seed, eps, coverage, ood_id_weight=id_w, ood_orth_weight=2.0)
    v, B = _random_state(problem, seed)
    X, y, w = np.asarray(problem.X), np.asarray(problem.y), np.asarray(problem.w_star)
    e = np.asarray(B).T @ np.asarray(v) - w
    P_S = np.asarray(problem.Q_S @ problem.Q_S.T)
    sigma = id_w * P_S + 2.0 * (np.eye(problem.d) - P_S)
    np.testing.assert_allclose(
        lt.train_loss(problem, v, B), np.sum((X @ (np.asarray(B).T @ v) - y) ** 2), rtol=1e-10
    )
    np.testing.assert_allclose(lt.id_loss(problem, v, B), e @ P_S @ e, rtol=1e-10)
    np.testing.assert_allclose(lt.ood_loss(problem, v, B), e @ sigma @ e, rtol=1e-10)


@given(dims=dims, seed=seeds, eps=eps_values, coverage=coverages, id_w=st.sampled_from([1.0, 0.1]))
def test_reduced_losses_equal_full_losses(dims, seed, eps, coverage, id_w):
    """Reduced losses expand quadratics in Gram blocks: equal up to absolute round-off ~1e-13."""
    problem = build(dims, seed, eps, coverage, ood_id_weight=id_w)
    v, B = _random_state(problem, seed)
    rp = reduced.ReducedProblem.from_problem(problem)
    Z = B @ problem.Q_S
    np.testing.assert_allclose(
        reduced.train_loss(rp, v, Z), lt.train_loss(problem, v, B), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(reduced.id_loss(rp, v, Z), lt.id_loss(problem, v, B), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(reduced.ood_loss(rp, v, Z), lt.ood_loss(problem, v, B), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rp.features(problem, Z), B, atol=1e-12)
    np.testing.assert_allclose(
        reduced.linear_probe_head(rp, v), lt.linear_probe_solution(problem, v), rtol=1e-8, atol=1e-10
    )


def test_losses_broadcast_over_leading_axes():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    states = [_random_state(problem, s) for s in range(3)]
    v = jnp.stack([s[0] for s in states])
    B = jnp.stack([s[1] for s in states])
    for loss in (lt.train_loss, lt.id_loss, lt.ood_loss):
        np.testing.assert_allclose(loss(problem, v, B), [loss(problem, *s) for s in states], rtol=1e-12)


def test_perfect_predictor_has_zero_losses():
    problem = build((12, 2, 4, 8), seed=0, eps=0.0)
    v, B = problem.v_star, problem.B_star
    for loss in (lt.train_loss, lt.id_loss, lt.ood_loss):
        assert float(loss(problem, v, B)) <= 1e-24

"""Losses against direct numpy formulas."""

import jax
import jax.numpy as jnp
import numpy as np
from _strategies import build, coverages, dims, eps_values, random_orthogonal, seeds
from hypothesis import given
from hypothesis import strategies as st

import linprobe_theory as lt


def random_state(problem, seed, scale=0.3):
    """A head and features `B0 + (something in S) + (something in S⊥)`: a generic point."""
    kv, kz = jax.random.split(jax.random.key(seed))
    v = jax.random.normal(kv, (problem.k,))
    B = problem.B0 + scale * jax.random.normal(kz, (problem.k, problem.d))
    return v, B


@given(dims=dims, seed=seeds, eps=eps_values, coverage=coverages, id_w=st.sampled_from([1.0, 0.1]))
def test_losses_match_numpy(dims, seed, eps, coverage, id_w):
    """Sums of squares of O(1) numbers: 1e-10 relative is round-off with a wide margin."""
    problem = build(dims, seed, eps, coverage, ood_id_weight=id_w, ood_orth_weight=2.0)
    v, B = random_state(problem, seed)
    X, y, w = np.asarray(problem.X), np.asarray(problem.y), np.asarray(problem.w_star)
    e = np.asarray(B).T @ np.asarray(v) - w
    P_S = np.asarray(problem.Q_S @ problem.Q_S.T)
    sigma = id_w * P_S + 2.0 * (np.eye(problem.d) - P_S)
    np.testing.assert_allclose(
        lt.train_loss(problem, v, B), np.sum((X @ (np.asarray(B).T @ v) - y) ** 2), rtol=1e-10
    )
    np.testing.assert_allclose(lt.id_loss(problem, v, B), e @ P_S @ e, rtol=1e-10)
    np.testing.assert_allclose(lt.ood_loss(problem, v, B), e @ sigma @ e, rtol=1e-10)


@given(dims=dims, seed=seeds, eps=eps_values)
def test_losses_depend_only_on_the_predictor(dims, seed, eps):
    """f = vᵀBx is unchanged by (v, B) → (U v, U B), U orthogonal: so are all three losses."""
    problem = build(dims, seed, eps)
    v, B = random_state(problem, seed)
    U = jnp.asarray(random_orthogonal(seed % 1000, problem.k, reflect=bool(seed % 2)))
    for loss in (lt.train_loss, lt.id_loss, lt.ood_loss):
        np.testing.assert_allclose(loss(problem, U @ v, U @ B), loss(problem, v, B), rtol=1e-10)


def test_id_loss_is_train_loss_in_the_metric_of_the_data():
    """L̂ = ‖X e‖² with y = X w⋆, and L_id = ‖P_S e‖²: σ_m(X)² L_id ≤ L̂ ≤ σ_1(X)² L_id."""
    problem = build((16, 3, 6, 12), seed=2, eps=0.2)
    s = np.linalg.svd(np.asarray(problem.X), compute_uv=False)[: problem.m]
    for seed in range(5):
        v, B = random_state(problem, seed)
        train, idl = float(lt.train_loss(problem, v, B)), float(lt.id_loss(problem, v, B))
        assert s[-1] ** 2 * idl * (1 - 1e-12) <= train <= s[0] ** 2 * idl * (1 + 1e-12)


def test_losses_broadcast_over_leading_axes():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    states = [random_state(problem, s) for s in range(3)]
    v = jnp.stack([s[0] for s in states])
    B = jnp.stack([s[1] for s in states])
    for loss in (lt.train_loss, lt.id_loss, lt.ood_loss):
        np.testing.assert_allclose(loss(problem, v, B), [loss(problem, *s) for s in states], rtol=1e-12)


def test_perfect_predictor_has_zero_losses():
    problem = build((12, 2, 4, 8), seed=0, eps=0.3)
    v, B = problem.v_star, problem.B_star
    for loss in (lt.train_loss, lt.id_loss, lt.ood_loss):
        assert float(loss(problem, v, B)) <= 1e-24
    # With imperfect features and the true head, the OOD loss is ‖(B0 − B⋆)ᵀ v⋆‖²; the
    # construction rotates every direction by θ, so this is (2 − 2 cos θ) ‖v⋆‖² = eps² ‖v⋆‖².
    np.testing.assert_allclose(lt.ood_loss(problem, problem.v_star, problem.B0), 0.3**2, rtol=1e-10)

"""Reduced coordinates `Z = B E` (`E = Q_S U`, the singular basis of X in S): losses, gradients,
features and the LP limit equal their full-coordinate counterparts.

The reduced losses expand quadratics in precomputed Gram blocks, so their round-off is absolute,
~1e-16 × (the size of the terms, here O(1–10)); hence rtol 1e-9 with atol 1e-12 throughout.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from _strategies import (
    RTOL,
    build,
    coverages,
    dims,
    eps_values,
    head_kinds,
    make_head,
    rank_deficient_problem,
    seeds,
    time_grid,
)
from hypothesis import given
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

import linprobe_theory as lt
from linprobe_theory import reduced
from linprobe_theory.dynamics import _ft_field_reduced


def _random_reduced_state(problem, rp, seed, scale=0.5):
    kv, kz = jax.random.split(jax.random.key(seed))
    v = 1.5 * jax.random.normal(kv, (problem.k,))
    Z = problem.B0 @ rp.subspace_basis(problem) + scale * jax.random.normal(kz, (problem.k, problem.m))
    return v, Z


@given(
    dims=dims,
    seed=seeds,
    eps=eps_values,
    coverage=coverages,
    id_w=st.sampled_from([1.0, 0.1, 4.0]),
    noise=st.sampled_from([0.0, 0.1]),
)
def test_reduced_losses_equal_full_losses(dims, seed, eps, coverage, id_w, noise):
    problem = build(dims, seed, eps, coverage, ood_id_weight=id_w, label_noise=noise)
    rp = reduced.ReducedProblem.from_problem(problem)
    v, Z = _random_reduced_state(problem, rp, seed)
    B = rp.features(problem, Z)
    np.testing.assert_allclose(B @ rp.subspace_basis(problem), Z, atol=1e-12)
    for red_loss, full_loss in (
        (reduced.train_loss, lt.train_loss),
        (reduced.id_loss, lt.id_loss),
        (reduced.ood_loss, lt.ood_loss),
    ):
        np.testing.assert_allclose(red_loss(rp, v, Z), full_loss(problem, v, B), rtol=1e-9, atol=1e-12)


@given(dims=dims, seed=seeds, eps=eps_values, coverage=coverages)
def test_reduced_problem_features_start_at_b0(dims, seed, eps, coverage):
    problem = build(dims, seed, eps, coverage)
    rp = reduced.ReducedProblem.from_problem(problem)
    E = rp.subspace_basis(problem)
    # E is an orthonormal basis of S in which the Gram matrix of X is diag(curvature).
    np.testing.assert_allclose(E.T @ E, np.eye(problem.m), atol=1e-13)
    np.testing.assert_allclose(E @ E.T, problem.Q_S @ problem.Q_S.T, atol=1e-13)
    gram = problem.X @ E
    scale = float(jnp.max(rp.curvature))
    np.testing.assert_allclose(gram.T @ gram, np.diag(rp.curvature), atol=1e-12 * scale)
    np.testing.assert_allclose(rp.b, E.T @ (problem.X.T @ problem.y), rtol=1e-12, atol=1e-12 * scale)
    np.testing.assert_allclose(rp.Z0, problem.B0 @ E, atol=1e-14)
    np.testing.assert_allclose(rp.features(problem, rp.Z0), problem.B0, atol=1e-15)
    np.testing.assert_allclose(rp.w_S, E.T @ problem.w_star, atol=1e-14)


@given(dims=dims, seed=seeds, eps=eps_values)
def test_reduced_gradients_are_the_full_gradients_restricted_to_s(dims, seed, eps):
    """jax.grad of the full training loss: ∇_v matches, ∇_B = ∇_Z Eᵀ, so ∇_B P_{S⊥} = 0 —
    the mechanism behind the S⊥ invariance — at any B, including one with an S⊥ component."""
    problem = build(dims, seed, eps)
    rp = reduced.ReducedProblem.from_problem(problem)
    v, Z = _random_reduced_state(problem, rp, seed)
    B = rp.features(problem, Z)
    gv_full, gB_full = jax.grad(lambda v, B: lt.train_loss(problem, v, B), argnums=(0, 1))(v, B)
    gv, gZ = reduced.ft_gradients(rp, v, Z)
    np.testing.assert_allclose(gv, gv_full, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gZ @ rp.subspace_basis(problem).T, gB_full, rtol=1e-9, atol=1e-12)
    # Off the reduced manifold too: add an S⊥ part to B; the B-gradient still lies in S.
    g = jax.random.normal(jax.random.key(seed % 997), B.shape)
    B_off = B + 0.3 * (g - (g @ problem.Q_S) @ problem.Q_S.T)
    gB_off = jax.grad(lambda B: lt.train_loss(problem, v, B))(B_off)
    perp = gB_off - (gB_off @ problem.Q_S) @ problem.Q_S.T
    assert float(jnp.max(jnp.abs(perp))) <= 1e-12 * (1.0 + float(jnp.max(jnp.abs(gB_off))))


@given(dims=dims, seed=seeds, eps=eps_values, kind=head_kinds)
def test_reduced_lp_head_equals_closed_form(dims, seed, eps, kind):
    problem = build(dims, seed, eps)
    rp = reduced.ReducedProblem.from_problem(problem)
    v0 = make_head(problem, kind, seed)
    np.testing.assert_allclose(
        reduced.linear_probe_head(rp, v0), lt.linear_probe_solution(problem, v0), rtol=1e-8, atol=1e-10
    )


def test_reduced_lp_head_keeps_the_null_space_part_when_rank_deficient():
    problem = rank_deficient_problem()
    rp = reduced.ReducedProblem.from_problem(problem)
    v0 = jnp.array([0.3, -1.2, 0.8])
    np.testing.assert_allclose(
        reduced.linear_probe_head(rp, v0), lt.linear_probe_solution(problem, v0), rtol=1e-8, atol=1e-10
    )


@given(dims=dims, seed=seeds, eps=st.sampled_from([0.0, 0.1, 0.5]), kind=head_kinds)
def test_reduced_and_full_linear_probe_agree(dims, seed, eps, kind):
    """Both integrate the same linear ODE at the default rtol 1e-8; each has global error
    ≲ 2·rtol·|v| (measured against the exact matrix exponential), so they agree to
    100·rtol·scale."""
    problem = build(dims, seed, eps)
    v0 = make_head(problem, kind, seed)
    opts = dict(t_final=50.0, save_at=time_grid(50.0), grad_tol=None)
    full = lt.linear_probe(problem, v0, coordinates="full", **opts)
    red = lt.linear_probe(problem, v0, coordinates="reduced", **opts)
    scale = 1.0 + float(jnp.max(jnp.abs(full.v)))
    assert float(jnp.max(jnp.abs(red.v - full.v))) <= 100 * RTOL * scale
    np.testing.assert_array_equal(red.B, full.B)


@given(dims=dims, seed=seeds, eps=eps_values, kind=head_kinds)
def test_stiffness_bounds_the_flow_jacobian_at_a_stationary_point(dims, seed, eps, kind):
    """At a stationary point (labels moved so that `g = 0` at `(v, Z0)`) the FT Jacobian is
    `−2 A diag(λ) Aᵀ`: its largest rate is `2 λ_max(D^{1/2}(Z0ᵀZ0 + ‖v‖² I)D^{1/2})` (D = diag λ),
    between `2 λ_max ‖v‖²` and `stiffness(v) = 2 λ_max (σ_max(Z0)² + ‖v‖²)`."""
    problem = build(dims, seed, eps)
    rp = reduced.ReducedProblem.from_problem(problem)
    v = make_head(problem, kind, seed) + 0.1  # never exactly 0
    rp = eqx.tree_at(lambda r: r.b, rp, rp.curvature * (rp.Z0.T @ v))
    flat, unravel = ravel_pytree((v, rp.Z0))
    J = jax.jacfwd(lambda y: ravel_pytree(_ft_field_reduced(0.0, unravel(y), rp))[0])(flat)
    rate = float(jnp.max(jnp.abs(jnp.linalg.eigvals(J))))
    D = jnp.sqrt(rp.curvature)
    inner = D[:, None] * (rp.Z0.T @ rp.Z0 + jnp.dot(v, v) * jnp.eye(problem.m)) * D[None, :]
    np.testing.assert_allclose(rate, 2.0 * float(jnp.linalg.eigvalsh(inner)[-1]), rtol=1e-9)
    assert 2.0 * float(jnp.max(rp.curvature)) * float(v @ v) <= rate * (1 + 1e-12)
    assert rate <= float(rp.stiffness(v)) * (1 + 1e-12)

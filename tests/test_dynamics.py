"""Gradient-flow dynamics: the invariance, conservation law, FT bound, LP limit, LP-FT at ε = 0,
agreement with an independent integrator, and batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import (
    build,
    coverages,
    dims,
    eps_values,
    head_kinds,
    make_head,
    phis,
    seeds,
    small_eps,
    time_grid,
)
from hypothesis import given
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

import linprobe_theory as lt
from linprobe_theory.dynamics import SolveStatus

T_FINAL = 40.0  # long enough for FT to converge on DIMS (time scale ~ 1/(‖v‖² λ_min(XᵀX)))


@given(
    dims=dims, seed=seeds, eps=eps_values, kind=head_kinds, phi=phis, method=st.sampled_from(["ft", "lpft"])
)
def test_features_orthogonal_to_id_subspace_never_move(dims, seed, eps, kind, phi, method):
    """Statement 1, in full coordinates (where it is a property of the flow, not of the
    parametrisation): ‖(B(t) − B0) P_{S⊥}‖_F stays at round-off (≤ 1e-10) at every saved time."""
    problem = build(dims, seed, eps)
    v0 = make_head(problem, kind, seed, phi)
    run = lt.fine_tune if method == "ft" else lt.lp_ft
    traj = run(problem, v0, t_final=T_FINAL, save_at=time_grid(T_FINAL), coordinates="full")
    assert np.max(lt.orthogonal_drift(problem, traj.B)) <= 1e-10


@given(dims=dims, seed=seeds, eps=eps_values, kind=head_kinds)
def test_balancedness_is_conserved_to_solver_tolerance(dims, seed, eps, kind):
    """Statement 2: v vᵀ − B Bᵀ is constant. The invariant has entries O(1 + ‖v‖²); the solver
    controls the local error to rtol·|y| + atol per step, so the accumulated drift is a modest
    multiple of rtol. Measured: ≤ ~2e-9 at rtol 1e-8, ≤ ~2e-11 at rtol 1e-10 on these sizes."""
    problem = build(dims, seed, eps)
    v0 = make_head(problem, kind, seed)
    drifts = {}
    for rtol in (1e-8, 1e-10):
        traj = lt.fine_tune(
            problem, v0, t_final=T_FINAL, save_at=time_grid(T_FINAL), rtol=rtol, atol=rtol * 1e-4
        )
        drifts[rtol] = float(np.max(lt.balancedness_drift(traj.v, traj.B, v0, problem.B0)))
        scale = 1.0 + float(jnp.max(jnp.sum(traj.v**2, axis=-1)))
        assert drifts[rtol] <= 100 * rtol * scale
    assert drifts[1e-10] < drifts[1e-8] or drifts[1e-8] < 1e-12


@given(
    dims=dims,
    seed=seeds,
    eps=small_eps,
    coverage=coverages,
    kind=head_kinds,
    phi=phis,
    ood_id_weight=st.sampled_from([1.0, 0.05]),
)
def test_ft_ood_loss_never_below_the_lower_bound(dims, seed, eps, coverage, kind, phi, ood_id_weight):
    """Statement 4 at every saved time (dense log grid), for zero, random and φ-prescribed heads,
    isotropic and S⊥-concentrated Σ. The OOD loss carries integration error ~rtol relative."""
    problem = build(dims, seed, eps, coverage, ood_id_weight=ood_id_weight)
    v0 = make_head(problem, kind, seed, phi)
    traj = lt.fine_tune(problem, v0, t_final=T_FINAL, save_at=time_grid(T_FINAL, 60))
    ood = lt.ood_loss(problem, traj.v, traj.B)
    bound = lt.ft_ood_lower_bound(problem, v0)
    assert np.all(ood >= bound * (1 - 1e-6))


@pytest.mark.parametrize("kind", ["zero", "random", "phi"])
def test_ft_bound_is_positive_and_respected_with_good_coverage(kind):
    """The bound check above is not vacuous: with cos θ_max(R0, S⊥) = 0.95 and ε = 1e-3 the
    bound is strictly positive, and FT's OOD loss stays above it along the whole trajectory."""
    problem = build((16, 3, 6, 12), seed=3, eps=1e-3, coverage=0.95)
    v0 = make_head(problem, kind, seed=3, phi=0.6)
    bound = float(lt.ft_ood_lower_bound(problem, v0))
    assert bound > 1e-4
    traj = lt.fine_tune(problem, v0, t_final=T_FINAL, save_at=time_grid(T_FINAL, 80))
    assert np.min(lt.ood_loss(problem, traj.v, traj.B)) >= bound


@given(dims=dims, seed=seeds, eps=eps_values, kind=head_kinds)
def test_linear_probe_flow_converges_to_closed_form_and_obeys_upper_bound(dims, seed, eps, kind):
    """Statement 5 and the LP limit: LP flow reaches A⁺y (to ~grad_tol / σ_min(A)²) and its OOD
    loss is at most our explicit upper bound."""
    problem = build(dims, seed, eps)
    v0 = make_head(problem, kind, seed)
    traj = lt.linear_probe(problem, v0, t_final=400.0, grad_tol=1e-12)
    v_lp = lt.linear_probe_solution(problem, v0)
    np.testing.assert_allclose(traj.v[-1], v_lp, atol=1e-9)
    assert (
        float(lt.ood_loss(problem, v_lp, problem.B0))
        <= float(lt.lp_ood_upper_bound(problem)) * (1 + 1e-9) + 1e-24
    )


def test_linear_probe_rank_deficient_keeps_the_null_space_part_of_v0():
    """With m < k, A = X B0ᵀ has rank m: LP converges to A⁺y + (I − A⁺A) v0, which depends on v0."""
    rng = np.random.default_rng(0)
    d, k, m, n = 12, 3, 2, 5
    frame = np.linalg.qr(rng.normal(size=(d, d)))[0]
    X = rng.normal(size=(n, m)) @ frame[:, :m].T
    B_star = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    B0 = np.linalg.qr(rng.normal(size=(d, k)))[0].T
    v_star = rng.normal(size=k)
    problem = lt.Problem.from_arrays(X=X, y=X @ B_star.T @ v_star, B_star=B_star, v_star=v_star, B0=B0)
    assert problem.m == m
    v0 = jnp.asarray(rng.normal(size=k))
    traj = lt.linear_probe(problem, v0, t_final=400.0, grad_tol=1e-12)
    v_lp = lt.linear_probe_solution(problem, v0)
    np.testing.assert_allclose(traj.v[-1], v_lp, atol=1e-9)
    assert np.linalg.norm(v_lp - lt.linear_probe_solution(problem, jnp.zeros(k))) > 1e-3
    assert np.isinf(float(lt.lp_ood_upper_bound(problem)))


@given(dims=dims, seed=seeds, coverage=coverages)
def test_lpft_is_perfect_and_ft_is_not_when_features_are_perfect(dims, seed, coverage):
    """Statement 7 (ε = 0): LP-FT starts at a stationary point with zero OOD loss and stays there
    (≤ 1e-12 at every saved time); FT from a random head has OOD loss > 0 at every time."""
    problem = build(dims, seed, 0.0, coverage)
    ts = time_grid(T_FINAL)
    lpft = lt.lp_ft(problem, t_final=T_FINAL, save_at=ts)
    assert np.max(lt.ood_loss(problem, lpft.v, lpft.B)) <= 1e-12
    v0 = lt.random_head(problem, key=jax.random.key(seed + 1))
    ft = lt.fine_tune(problem, v0, t_final=T_FINAL, save_at=ts)
    assert np.min(lt.ood_loss(problem, ft.v, ft.B)) > 1e-8


@given(dims=dims, seed=seeds, eps=st.sampled_from([1e-2, 0.1, 0.5]), kind=st.sampled_from(["random", "phi"]))
def test_ft_fits_the_training_data_and_beats_lp_in_distribution(dims, seed, eps, kind):
    """Statement 6: FT converges to zero training (and ID) loss; with ε > 0, w⋆ ∉ rowspace(B0)
    and LP's ID loss stays positive, above FT's."""
    problem = build(dims, seed, eps)
    v0 = make_head(problem, kind, seed)
    ft = lt.fine_tune(problem, v0, t_final=200.0)
    v, B = ft.v[-1], ft.B[-1]
    assert float(lt.train_loss(problem, v, B)) <= 1e-10 * float(problem.y @ problem.y)
    lp_id = float(lt.id_loss(problem, lt.linear_probe_solution(problem, v0), problem.B0))
    assert lp_id > float(lt.id_loss(problem, v, B))
    assert lp_id > 1e-8


def _scipy_ft(problem, v0, ts):
    """Independent reference: scipy DOP853 on the flattened full-coordinate FT field (numpy)."""
    X, y = np.asarray(problem.X), np.asarray(problem.y)
    k, d = problem.B0.shape

    def field(t, state):
        v, B = state[:k], state[k:].reshape(k, d)
        r = X @ (B.T @ v) - y
        Xr = X.T @ r
        return np.concatenate([-2 * B @ Xr, (-2 * np.outer(v, Xr)).ravel()])

    y0 = np.concatenate([np.asarray(v0), np.asarray(problem.B0).ravel()])
    sol = solve_ivp(
        field, (0, float(ts[-1])), y0, method="DOP853", t_eval=np.asarray(ts), rtol=1e-12, atol=1e-14
    )
    assert sol.success
    return sol.y[:k].T, sol.y[k:].T.reshape(-1, k, d)


@pytest.mark.parametrize("coordinates", ["full", "reduced"])
def test_integrator_matches_scipy_reference(coordinates):
    """Check 8: diffrax at rtol 1e-11 agrees with scipy at rtol 1e-12 to 1e-7 relative."""
    problem = build((12, 2, 4, 8), seed=11, eps=0.1)
    v0 = lt.random_head(problem, key=jax.random.key(5))
    ts = jnp.linspace(0.0, 5.0, 11)
    traj = lt.fine_tune(
        problem, v0, t_final=5.0, save_at=ts, rtol=1e-11, atol=1e-13, grad_tol=None, coordinates=coordinates
    )
    v_ref, B_ref = _scipy_ft(problem, v0, ts)
    np.testing.assert_allclose(traj.v, v_ref, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(traj.B, B_ref, rtol=1e-7, atol=1e-9)


@given(dims=dims, seed=seeds, eps=eps_values, kind=head_kinds)
def test_reduced_and_full_coordinates_agree(dims, seed, eps, kind):
    """The reduced flow is exact: it matches the full-coordinate flow to the integrators'
    tolerance (both at rtol 1e-10, so states agree to ~1e-8)."""
    problem = build(dims, seed, eps)
    v0 = make_head(problem, kind, seed)
    ts = time_grid(T_FINAL, 20)
    opts = dict(t_final=T_FINAL, save_at=ts, rtol=1e-10, atol=1e-14)
    full = lt.fine_tune(problem, v0, coordinates="full", **opts)
    red = lt.fine_tune(problem, v0, coordinates="reduced", **opts)
    np.testing.assert_allclose(red.v, full.v, atol=1e-7)
    np.testing.assert_allclose(red.B, full.B, atol=1e-7)


def test_vmap_over_problems_and_heads_matches_single_runs():
    spec = lt.ProblemSpec(d=12, k=2, m=4, n=8, eps=0.1)
    keys = jax.random.split(jax.random.key(0), 3)

    def run(key):
        problem = lt.make_problem(spec, key=key)
        v0 = lt.random_head(problem, key=jax.random.fold_in(key, 1))
        return lt.fine_tune(problem, v0, t_final=10.0)

    batched = jax.jit(jax.vmap(run))(keys)
    for i, key in enumerate(keys):
        single = run(key)
        # Batched and single BLAS calls round differently (~1e-16); adaptive stepping then
        # amplifies that a little (measured: 3e-13). Far below the solver tolerance.
        np.testing.assert_allclose(batched.v[i], single.v, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(batched.B[i], single.B, rtol=1e-10, atol=1e-12)


def test_same_seed_gives_identical_numbers():
    spec = lt.ProblemSpec(d=12, k=2, m=4, n=8, eps=0.1)
    a, b = (lt.make_problem(spec, key=jax.random.key(7)) for _ in range(2))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    ta, tb = (lt.fine_tune(p, lt.random_head(p, key=jax.random.key(1)), t_final=5.0) for p in (a, b))
    np.testing.assert_array_equal(ta.B, tb.B)


def test_step_budget_exhaustion_is_reported_not_silent():
    problem = build((12, 2, 4, 8), seed=0, eps=0.1)
    v0 = lt.random_head(problem, key=jax.random.key(0))
    with pytest.raises(lt.SolveError, match="max_steps"):
        lt.fine_tune(problem, v0, t_final=50.0, max_steps=5)
    traj = lt.fine_tune(problem, v0, t_final=50.0, max_steps=5, check=False)
    assert int(traj.status) == SolveStatus.MAX_STEPS and not bool(traj.ok)


def test_steady_state_stops_early_and_holds_the_final_state():
    problem = build((12, 2, 4, 8), seed=0, eps=0.0)
    ts = jnp.linspace(0.0, 50.0, 6)
    traj = lt.lp_ft(problem, t_final=50.0, save_at=ts)
    assert int(traj.status) == SolveStatus.STEADY_STATE
    assert float(traj.t_stop) < 50.0
    assert np.all(np.isfinite(traj.B)) and np.all(np.isfinite(traj.v))
    np.testing.assert_array_equal(traj.v[-1], traj.v[-2])


def test_linear_probe_keeps_features_frozen():
    problem = build((12, 2, 4, 8), seed=2, eps=0.1)
    traj = lt.linear_probe(problem, jnp.zeros(2), t_final=10.0)
    np.testing.assert_array_equal(traj.B[-1], problem.B0)

"""`FusedTsit5` is diffrax's Tsit5 unrolled: the same step, the same order, the same solves.

Both use identical coefficients and differ only in the order of the stage sums. One step's
result therefore agrees to round-off (~1e-16 relative). The error estimate is a sum that cancels
to ~rtol of its terms, so its round-off is ~1e-16/rtol relative and the controller's step sizes
drift apart by ~1e-8 relative over a solve; whole solves then agree to the integration error, and
we compare them at 10·rtol (rtol = 1e-8).
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _strategies import build, dims, make_head, seeds
from hypothesis import given, settings
from hypothesis import strategies as st

from linprobe_theory import reduced
from linprobe_theory.dynamics import _ft_field_reduced
from linprobe_theory.solver import FusedTsit5


def _solve(solver, field, y0, args, t1, saveat, **kwargs):
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver,
        0.0,
        t1,
        None,
        y0,
        args,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=1e-8, atol=1e-12),
        max_steps=100_000,
        **kwargs,
    )


def _max_rel(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)) / (1.0 + jnp.max(jnp.abs(y))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


RTOL = 1e-8


@settings(max_examples=8)
@given(dims=dims, seed=seeds, h=st.sampled_from([1e-3, 1e-2, 0.05]))
def test_one_fused_step_equals_one_diffrax_tsit5_step(dims, seed, h):
    problem = build(dims, seed, 0.1)
    rp = reduced.ReducedProblem.from_problem(problem)
    y0 = (make_head(problem, "random", seed), rp.Z0)
    term = diffrax.ODETerm(_ft_field_reduced)
    out = {}
    for name, solver in (("ref", diffrax.Tsit5()), ("fused", FusedTsit5())):
        state = solver.init(term, 0.0, h, y0, rp)
        out[name] = solver.step(term, 0.0, h, y0, rp, state, False)
    (y1, err, dense, f1, _), (y1_ref, err_ref, dense_ref, state_ref, _) = out["fused"], out["ref"]
    assert _max_rel(y1, y1_ref) <= 1e-14
    # Stage values pass through f, which amplifies round-off by up to ~‖∂f/∂y‖·h (≲ 10² here).
    assert _max_rel(dense["k"], dense_ref["k"]) <= 1e-13
    assert _max_rel(f1, state_ref[1]) <= 1e-13  # FSAL: f(t1, y1) carried to the next step
    # The error estimate cancels: compare it against the size of the terms it sums (h·|f|).
    size = h * max(float(jnp.max(jnp.abs(k))) for k in jax.tree.leaves(dense_ref["k"])) / h
    assert (
        max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(err), jax.tree.leaves(err_ref), strict=True)
        )
        <= 1e-14 * size
    )


@settings(max_examples=8)
@given(dims=dims, seed=seeds)
def test_fused_tsit5_solves_the_ft_flow_as_diffrax_tsit5_does(dims, seed):
    problem = build(dims, seed, 0.1)
    rp = reduced.ReducedProblem.from_problem(problem)
    y0 = (make_head(problem, "random", seed), rp.Z0)
    ts = jnp.linspace(0.0, 20.0, 17)  # dense output between steps
    run = jax.jit(
        lambda solver: _solve(solver, _ft_field_reduced, y0, rp, 20.0, diffrax.SaveAt(ts=ts)),
        static_argnums=0,
    )
    ref, fused = run(diffrax.Tsit5()), run(FusedTsit5())
    assert int(fused.stats["num_accepted_steps"]) > 10
    assert (
        abs(int(fused.stats["num_steps"]) - int(ref.stats["num_steps"]))
        <= 0.02 * int(ref.stats["num_steps"]) + 2
    )
    assert _max_rel(fused.ys, ref.ys) <= 10 * RTOL


def _linear_system():
    """`ẏ = A y`, A symmetric with rates 0.1…50: exact solution `expm(tA) y0` at t = 2."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    lam = -np.geomspace(0.1, 50.0, 6)
    A = jnp.asarray(q @ np.diag(lam) @ q.T)
    y0 = jnp.asarray(rng.normal(size=6))
    exact = jnp.asarray(q @ (np.exp(2.0 * lam) * (q.T @ np.asarray(y0))))
    return A, y0, exact


def _linear_error(controller):
    A, y0, exact = _linear_system()
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, A: A @ y),
        FusedTsit5(),
        0.0,
        2.0,
        None,
        y0,
        A,
        stepsize_controller=controller,
        max_steps=100_000,
    )
    return float(jnp.max(jnp.abs(sol.ys[-1] - exact)))


def test_fused_tsit5_is_fifth_order():
    """Fixed steps h = 0.4 / 2^j on logistic growth `ẏᵢ = rᵢ yᵢ (1 − yᵢ)` (exact solution
    known): the slope of log-error against log-h is at least the order, 5 (a wrong coefficient
    drops it to ≤ 4; at these h Tsit5's small 6th-order terms still dominate, slope ≈ 6), and
    the errors are diffrax's Tsit5's to round-off."""
    rates = jnp.array([0.5, 1.0, 2.0, 3.0])
    y0 = jnp.full(4, 0.1)
    t1 = 4.0
    exact = 1.0 / (1.0 + (1.0 / y0 - 1.0) * jnp.exp(-rates * t1))

    def error(h, solver=None):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, r: r * y * (1.0 - y)),
            FusedTsit5() if solver is None else solver,
            0.0,
            t1,
            float(h),
            y0,
            rates,
            stepsize_controller=diffrax.ConstantStepSize(),
        )
        return float(jnp.max(jnp.abs(sol.ys[-1] - exact)))

    hs = 0.4 / 2.0 ** np.arange(3)
    errors = [error(h) for h in hs]
    assert min(errors) >= 1e-12  # well above round-off
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert slope >= 4.6, (slope, errors)
    np.testing.assert_allclose(errors, [error(h, diffrax.Tsit5()) for h in hs], rtol=1e-5)


def test_fused_tsit5_error_follows_rtol():
    """Under step control the global error is proportional to rtol (here ~1e-8 relative at the
    default rtol): tightening rtol 100× must shrink it at least 30×."""
    coarse = _linear_error(diffrax.PIDController(rtol=1e-6, atol=1e-14))
    fine = _linear_error(diffrax.PIDController(rtol=1e-8, atol=1e-14))
    assert coarse <= 1e-5
    assert fine <= coarse / 30


def test_fused_tsit5_works_with_events_and_pytrees():
    """A steady-state event (the toolkit's early stop) ends the solve as it does for Tsit5."""
    field = lambda t, y, args: (-y[0], -3.0 * y[1])
    y0 = (jnp.ones(3), jnp.ones((2, 2)))
    event = diffrax.Event(lambda t, y, args, **kw: jnp.max(jnp.abs(y[0])) < 1e-3)
    out = {}
    for name, solver in (("ref", diffrax.Tsit5()), ("fused", FusedTsit5())):
        out[name] = _solve(solver, field, y0, None, 100.0, diffrax.SaveAt(t1=True), event=event)
    assert out["fused"].result == diffrax.RESULTS.event_occurred
    np.testing.assert_allclose(out["fused"].ts, out["ref"].ts, rtol=10 * RTOL)
    assert _max_rel(out["fused"].ys, out["ref"].ys) <= 10 * RTOL


@pytest.mark.parametrize("batch", [1, 7])
def test_fused_tsit5_under_vmap_equals_single_runs(batch):
    """Under `vmap` every run keeps its own step size (lockstep only in the loop count)."""
    rates = jnp.linspace(0.5, 40.0, batch)
    solve = lambda r: _solve(
        FusedTsit5(), lambda t, y, r: -r * y, jnp.ones(2), r, 3.0, diffrax.SaveAt(t1=True)
    )
    batched = jax.jit(jax.vmap(solve))(rates)
    for i in range(batch):
        single = jax.jit(solve)(rates[i])
        assert int(batched.stats["num_steps"][i]) == int(single.stats["num_steps"])
        np.testing.assert_allclose(batched.ys[i], single.ys, rtol=1e-14)

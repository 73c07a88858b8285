"""The assembled flow: its `jax.grad` vector fields equal the paper's hand-written gradients,
and a `Flow` passes through `jit`/`vmap` like data (rates and strengths are arrays)."""

import jax
import jax.numpy as jnp
import numpy as np
from _strategies import build, dims, make_head, seeds
from hypothesis import given

import linprobe_theory as lt
from linprobe_theory import reduced
from linprobe_theory.coordinates import make_coordinates, reduced_coordinates
from linprobe_theory.flows import ft_field, lp_field


@given(dims=dims, seed=seeds)
def test_autodiff_fields_equal_the_papers_gradients(dims, seed):
    """`−∇` by `jax.grad` against `∇_v = 2 B Xᵀ r`, `∇_B = 2 v rᵀ X` (full) and
    `(2 Z g, 2 v gᵀ)` (reduced, `reduced.ft_gradients`), at a random state: equal to round-off.
    (The hand-written reduced gradient was 6.4 µs per run-step against 4.9 µs for jax.grad under
    vmap, benchmarks/RESULTS.md, so the flows use jax.grad.)"""
    problem = build(dims, seed, eps=0.1)
    flow = lt.make_flow()
    key = jax.random.key(seed)
    v = make_head(problem, "random", seed)
    B = problem.B0 + 0.3 * (jax.random.normal(key, (problem.k, problem.m)) @ problem.Q_S.T)
    r = problem.X @ (B.T @ v) - problem.y
    gv, gB = ft_field(0.0, (v, B), (flow, make_coordinates(problem, flow, "full")))
    np.testing.assert_allclose(gv, -2 * B @ (problem.X.T @ r), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gB, -2 * jnp.outer(v, problem.X.T @ r), rtol=1e-12, atol=1e-12)
    lp = lp_field(0.0, v, (flow, make_coordinates(problem, flow, "full")))
    r0 = problem.X @ (problem.B0.T @ v) - problem.y
    np.testing.assert_allclose(lp, -2 * problem.B0 @ (problem.X.T @ r0), rtol=1e-12, atol=1e-12)

    rp = reduced.ReducedProblem.from_problem(problem)
    Z = rp.Z0 + 0.3 * jax.random.normal(jax.random.fold_in(key, 1), rp.Z0.shape)
    hv, hZ = reduced.ft_gradients(rp, v, Z)
    av, aZ = ft_field(0.0, (v, Z), (flow, reduced_coordinates(rp)))
    np.testing.assert_allclose(av, -hv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(aZ, -hZ, rtol=1e-12, atol=1e-12)


def test_rates_and_strengths_are_traced_so_a_sweep_compiles_once():
    """`vmap` over learning rates and a regulariser strength in one compiled call equals the
    single runs (≤ 1e-12)."""
    problem = build((12, 2, 4, 8), seed=1, eps=0.1)
    v0 = make_head(problem, "random", 1)
    etas = jnp.array([0.5, 1.0, 2.0])
    lams = jnp.array([0.0, 0.1, 1.0])

    def run(eta_B, lam):
        traj = lt.fine_tune(
            problem, v0, t_final=5.0, learning_rates=(1.0, eta_B), regularizer=lt.L2SP(lam), check=False
        )
        return traj.v[-1]

    batched = jax.jit(jax.vmap(run))(etas, lams)
    for i in range(3):
        np.testing.assert_allclose(batched[i], run(float(etas[i]), float(lams[i])), rtol=1e-12, atol=1e-12)

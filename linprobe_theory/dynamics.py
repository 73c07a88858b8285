"""Gradient flow for fine-tuning (FT), linear probing (LP) and LP-FT, integrated by diffrax.

On the training loss `L̂(v, B) = ‖X Bᵀ v − y‖²` with residual `r = X Bᵀ v − y`:

    FT:    ∂t v = −2 B Xᵀ r,   ∂t B = −2 v rᵀ X,   from (v0, B0)
    LP:    ∂t v = −2 B0 Xᵀ r,  B ≡ B0
    LP-FT: FT from (v_lp, B0), v_lp the closed-form limit of LP.

Each is an ODE solved with an adaptive embedded Runge–Kutta method under a PID step-size
controller (`rtol`, `atol`). A solve ends at `t_final`, or earlier when the gradient norm drops
below `grad_tol` (steady state); saved times after that carry the final state.
`coordinates="reduced"` (default) integrates the exact `O(k m)`-per-evaluation flow of
`reduced.py`; `coordinates="full"` integrates `(v, B)` in `R^k × R^{k×d}` as written above and
is the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from . import reduced as red
from ._validation import check_finite, check_int_range, check_real_range, check_shape, is_concrete
from .linalg import pinv
from .problem import Problem, validate_head
from .solver import FusedTsit5

COORDINATES = ("reduced", "full")


class SolveStatus:
    """Integer codes in `Trajectory.status`."""

    COMPLETED = 0  # reached t_final
    STEADY_STATE = 1  # gradient norm fell below grad_tol
    MAX_STEPS = 2  # the solver hit max_steps before t_final
    DIVERGED = 3  # the state became non-finite
    FAILED = 4  # any other solver failure

    NAMES = ("completed", "steady_state", "max_steps", "diverged", "failed")


class SolveError(RuntimeError):
    """A gradient-flow solve ended without reaching `t_final` or a steady state."""


class Trajectory(eqx.Module):
    """Saved states of one gradient-flow run.

    Attributes:
        t: saved times, shape `(T,)`.
        v: heads, `(T, k)`.
        B: features, `(T, k, d)`.
        status: a `SolveStatus` code.
        num_steps: accepted + rejected solver steps.
        t_stop: the time the solve ended (`t_final`, or when steady state was reached).
    """

    t: Float[Array, " T"]
    v: Float[Array, "T k"]
    B: Float[Array, "T k d"]
    status: Int[Array, ""]
    num_steps: Int[Array, ""]
    t_stop: Float[Array, ""]

    @property
    def ok(self):
        """True where the solve completed or reached steady state."""
        return self.status <= SolveStatus.STEADY_STATE

    @property
    def steady_state(self):
        return self.status == SolveStatus.STEADY_STATE


class FlowSolution(eqx.Module):
    """What one gradient-flow solve saved, whatever its coordinates.

    Attributes:
        ys: the saved values, one per saved time (the state, or what `save_fn`/`observe` made of it).
        status: a `SolveStatus` code.
        num_steps: accepted + rejected solver steps.
        t_stop: the time the solve ended.
    """

    ys: object
    status: Int[Array, ""]
    num_steps: Int[Array, ""]
    t_stop: Float[Array, ""]

    @property
    def ok(self):
        """True where the solve completed or reached steady state."""
        return self.status <= SolveStatus.STEADY_STATE


def _status_code(result, final_state) -> Int[Array, ""]:
    code = jnp.where(
        result == diffrax.RESULTS.successful,
        SolveStatus.COMPLETED,
        jnp.where(
            result == diffrax.RESULTS.event_occurred,
            SolveStatus.STEADY_STATE,
            jnp.where(result == diffrax.RESULTS.max_steps_reached, SolveStatus.MAX_STEPS, SolveStatus.FAILED),
        ),
    )
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(final_state)]))
    return jnp.where(finite, code, SolveStatus.DIVERGED)


def integrate_gradient_flow(
    field: Callable,
    y0,
    args,
    *,
    t_final,
    save_at,
    rtol: float,
    atol: float,
    grad_tol: float | None,
    max_steps: int,
    solver: diffrax.AbstractSolver,
    save_fn: Callable | None = None,
) -> FlowSolution:
    """Integrate `∂t y = field(t, y, args)` on `[0, t_final]`, saving `save_fn(y)` at `save_at`.

    `save_at=None` saves the two ends, `[y(0), y(t_stop)]`, without dense output: diffrax's
    saving at given times costs as much per step as the reduced flow itself (measured 5.6 vs
    11–13 µs per run-step under `vmap`), so sweeps that need only end points skip it.
    Pure and traceable (no checks that raise); `field` returns minus the gradient, so the
    steady-state event compares its norm with `grad_tol`.
    """

    def save(t, y, args):
        return y if save_fn is None else save_fn(y)

    def at_steady_state(t, y, args, **kwargs):
        g = field(t, y, args)
        return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(g))) < grad_tol

    if save_at is None:
        saveat = diffrax.SaveAt(t0=True, t1=True, fn=save)
    else:
        saveat = diffrax.SaveAt(
            subs=[diffrax.SubSaveAt(ts=save_at, fn=save), diffrax.SubSaveAt(t1=True, fn=save)]
        )
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver,
        t0=0.0,
        t1=t_final,
        dt0=None,
        y0=y0,
        args=args,
        saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        event=None if grad_tol is None else diffrax.Event(at_steady_state),
        max_steps=max_steps,
        throw=False,
    )
    if save_at is None:
        status = _status_code(sol.result, jax.tree.map(lambda y: y[-1], sol.ys))
        return FlowSolution(ys=sol.ys, status=status, num_steps=sol.stats["num_steps"], t_stop=sol.ts[-1])
    ts_saved, t_end = sol.ts
    ys_saved, y_end = sol.ys
    # After an early stop diffrax fills the remaining saves with inf; the state is stationary
    # there (to grad_tol), so they take the final state.
    after_stop = ~jnp.isfinite(ts_saved)

    def fill(saved, final):
        mask = after_stop.reshape(after_stop.shape + (1,) * (saved.ndim - 1))
        return jnp.where(mask, final, saved)

    ys = jax.tree.map(fill, ys_saved, y_end)
    status = _status_code(sol.result, jax.tree.map(lambda y: y[0], y_end))
    return FlowSolution(ys=ys, status=status, num_steps=sol.stats["num_steps"], t_stop=t_end[0])


# --- vector fields (minus the gradient) --------------------------------------------------------


def _ft_field_full(t, y, args):
    v, B = y
    X, target = args
    r = X @ (B.T @ v) - target
    Xr = X.T @ r
    return -2.0 * B @ Xr, -2.0 * jnp.outer(v, Xr)


def _lp_field_full(t, v, args):
    X, target, B0 = args
    r = X @ (B0.T @ v) - target
    return -2.0 * B0 @ (X.T @ r)


def _ft_field_reduced(t, y, rp):
    gv, gZ = red.ft_gradients(rp, *y)
    return -gv, -gZ


def _lp_field_reduced(t, v, rp):
    return -red.ft_gradients(rp, v, rp.Z0)[0]


# --- public entry points -----------------------------------------------------------------------


def _prepare(problem: Problem, v0, t_final, save_at, rtol, atol, grad_tol, coordinates, max_steps):
    v0 = validate_head(problem, v0)
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates={coordinates!r} must be one of {COORDINATES}")
    return (v0, *_prepare_times(t_final, save_at, rtol, atol, grad_tol, max_steps))


def _prepare_times(t_final, save_at, rtol, atol, grad_tol, max_steps):
    check_int_range("max_steps", max_steps, 1)
    if is_concrete(t_final):
        check_real_range("t_final", t_final, 0.0, low_open=True)
    check_real_range("rtol", rtol, 0.0, low_open=True)
    check_real_range("atol", atol, 0.0, low_open=True)
    if grad_tol is not None:
        check_real_range("grad_tol", grad_tol, 0.0, low_open=True)
    t_final = jnp.asarray(t_final, float)
    if save_at is None:
        return t_final, None
    save_at = jnp.asarray(save_at, float)
    if save_at.ndim != 1 or save_at.shape[0] < 1:
        raise ValueError(f"save_at must be a non-empty 1-D array of times, got shape {save_at.shape}")
    if is_concrete(save_at, t_final):
        # A relative slack of 1e-12 forgives round-off in grids like logspace(…, log10(t_final)).
        if not (jnp.all(jnp.diff(save_at) > 0) and save_at[0] >= 0 and save_at[-1] <= t_final * (1 + 1e-12)):
            raise ValueError(
                f"save_at must be strictly increasing times in [0, t_final={float(t_final):g}], "
                f"got range [{float(save_at[0]):g}, {float(save_at[-1]):g}]"
            )
    return t_final, jnp.minimum(save_at, t_final)


def _saved_times(save_at, t_final):
    """The times a `Trajectory` reports: `save_at`, or `[0, t_final]` for the end points (the
    last save holds the state at `t_stop`, the end of the solve, as after any early stop)."""
    return jnp.stack([0.0 * t_final, t_final]) if save_at is None else save_at


def _raise_if_failed(traj: Trajectory, method: str) -> Trajectory:
    if is_concrete(traj.status) and traj.status.ndim == 0 and not bool(traj.ok):
        name = SolveStatus.NAMES[int(traj.status)]
        hint = {
            "diverged": "the state became non-finite",
            "max_steps": "raise max_steps or lower t_final",
        }.get(name, "see diffrax's result codes")
        raise SolveError(
            f"{method} gradient flow ended with status {name!r} at t={float(traj.t_stop):g} "
            f"after {int(traj.num_steps)} steps ({hint})"
        )
    return traj


def _options(t_final, save_at, rtol, atol, grad_tol, max_steps, solver):
    return dict(
        t_final=t_final,
        save_at=save_at,
        rtol=rtol,
        atol=atol,
        grad_tol=grad_tol,
        max_steps=max_steps,
        solver=solver,
    )


@eqx.filter_jit
def _fine_tune(problem, v0, t_final, save_at, rtol, atol, grad_tol, coordinates, max_steps, solver):
    opts = _options(t_final, save_at, rtol, atol, grad_tol, max_steps, solver)
    if coordinates == "full":
        sol = integrate_gradient_flow(_ft_field_full, (v0, problem.B0), (problem.X, problem.y), **opts)
        v, B = sol.ys
    else:
        rp = red.ReducedProblem.from_problem(problem)
        sol = integrate_gradient_flow(_ft_field_reduced, (v0, rp.Z0), rp, **opts)
        v, Z = sol.ys
        B = rp.features(problem, Z)
    return Trajectory(_saved_times(save_at, t_final), v, B, sol.status, sol.num_steps, sol.t_stop)


@eqx.filter_jit
def _linear_probe(problem, v0, t_final, save_at, rtol, atol, grad_tol, coordinates, max_steps, solver):
    opts = _options(t_final, save_at, rtol, atol, grad_tol, max_steps, solver)
    if coordinates == "full":
        args = (problem.X, problem.y, problem.B0)
        sol = integrate_gradient_flow(_lp_field_full, v0, args, **opts)
    else:
        rp = red.ReducedProblem.from_problem(problem)
        sol = integrate_gradient_flow(_lp_field_reduced, v0, rp, **opts)
    times = _saved_times(save_at, t_final)
    B = jnp.broadcast_to(problem.B0, (times.shape[0],) + problem.B0.shape)
    return Trajectory(times, sol.ys, B, sol.status, sol.num_steps, sol.t_stop)


def fine_tune(
    problem: Problem,
    v0,
    *,
    t_final,
    save_at=None,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    grad_tol: float | None = 1e-7,
    coordinates: str = "reduced",
    max_steps: int = 100_000,
    solver: diffrax.AbstractSolver | None = None,
    check: bool = True,
) -> Trajectory:
    """Fine-tuning: gradient flow on `(v, B)` from `(v0, B0)`.

    $$\\partial_t v = -2 B X^\\top r, \\quad \\partial_t B = -2 v r^\\top X,
      \\quad r = X B^\\top v - y.$$

    Args:
        problem: the problem instance.
        v0: initial head, shape `(k,)`.
        t_final: end of the integration interval `[0, t_final]`.
        save_at: increasing times in `[0, t_final]` to save at (default `[0, t_final]`).
        rtol, atol: the step-size controller's relative and absolute tolerances.
        grad_tol: stop early once `‖∇L̂‖ < grad_tol` (steady state); `None` never stops early.
            Once converged, an explicit solver sits at its stability limit and the gradient norm
            jitters at ~1e-9 (rtol 1e-8, unit-scale data), so much smaller values never trigger.
        coordinates: `"reduced"` (exact, `O(k m)` per evaluation) or `"full"` (reference).
        max_steps: solver step budget.
        solver: a diffrax solver (default `FusedTsit5()`, diffrax's Tsit5 with its stages
            unrolled; `diffrax.Tsit5()` is the same method, slower per step).
        check: raise `SolveError` when a concrete run diverged or failed; under `jit`/`vmap`
            the status is returned in `Trajectory.status` instead.
    """
    v0, t_final, save_at = _prepare(
        problem, v0, t_final, save_at, rtol, atol, grad_tol, coordinates, max_steps
    )
    solver = FusedTsit5() if solver is None else solver
    traj = _fine_tune(problem, v0, t_final, save_at, rtol, atol, grad_tol, coordinates, max_steps, solver)
    return _raise_if_failed(traj, "FT") if check else traj


def linear_probe(
    problem: Problem,
    v0,
    *,
    t_final,
    save_at=None,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    grad_tol: float | None = 1e-7,
    coordinates: str = "reduced",
    max_steps: int = 100_000,
    solver: diffrax.AbstractSolver | None = None,
    check: bool = True,
) -> Trajectory:
    """Linear probing: gradient flow on the head alone, features frozen at `B0`.

    $$\\partial_t v = -2 B_0 X^\\top (X B_0^\\top v - y).$$

    A convex problem whose limit is `linear_probe_solution(problem, v0)`. Arguments as in
    `fine_tune`; `Trajectory.B` repeats `B0`.
    """
    v0, t_final, save_at = _prepare(
        problem, v0, t_final, save_at, rtol, atol, grad_tol, coordinates, max_steps
    )
    solver = FusedTsit5() if solver is None else solver
    traj = _linear_probe(problem, v0, t_final, save_at, rtol, atol, grad_tol, coordinates, max_steps, solver)
    return _raise_if_failed(traj, "LP") if check else traj


def fine_tune_reduced(
    rp: red.ReducedProblem,
    v0,
    *,
    t_final,
    save_at=None,
    observe: Callable | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    grad_tol: float | None = 1e-7,
    max_steps: int = 100_000,
    solver: diffrax.AbstractSolver | None = None,
) -> FlowSolution:
    """Fine-tuning in reduced coordinates alone: the flow of `fine_tune` written in `(v, Z)`,
    from `(v0, Z0)`, touching no `d`-sized array.

    $$\\partial_t v = -2 Z g, \\quad \\partial_t Z = -2 v g^\\top,
      \\quad g = \\mathrm{diag}(\\lambda) Z^\\top v - b.$$

    Reduce a problem once (`ReducedProblem.from_problem`, `O(d)`), then solve it from many
    heads, or sweep many reduced problems with `sweep.run_batch`. `observe(v, Z)` is saved at
    `save_at` (default: the state `(v, Z)`; e.g. `reduced.ood_loss` to save losses only);
    without `save_at` only the two ends are saved (`ys[0]` at 0, `ys[-1]` where the solve
    stopped), which skips dense output and halves the cost per step of a batched sweep.
    `B(t) = rp.features(problem, Z(t))` when features are wanted. Other arguments as in
    `fine_tune`. Never raises on a failed solve: read `FlowSolution.status`.
    """
    v0 = jnp.asarray(v0, float)
    check_shape("v0", v0, (rp.Z0.shape[-2],))
    if is_concrete(v0):
        check_finite("v0", v0)
    t_final, save_at = _prepare_times(t_final, save_at, rtol, atol, grad_tol, max_steps)
    solver = FusedTsit5() if solver is None else solver
    return _fine_tune_reduced(rp, v0, t_final, save_at, observe, rtol, atol, grad_tol, max_steps, solver)


@eqx.filter_jit
def _fine_tune_reduced(rp, v0, t_final, save_at, observe, rtol, atol, grad_tol, max_steps, solver):
    save_fn = None if observe is None else (lambda y: observe(*y))
    opts = _options(t_final, save_at, rtol, atol, grad_tol, max_steps, solver)
    return integrate_gradient_flow(_ft_field_reduced, (v0, rp.Z0), rp, save_fn=save_fn, **opts)


def linear_probe_solution(problem: Problem, v0=None) -> Float[Array, " k"]:
    """The limit of LP gradient flow: `v_lp = A⁺ y + (I − A⁺ A) v0`, `A = X B0ᵀ`.

    With `A` of full column rank this is the least-squares head `(AᵀA)⁻¹ Aᵀ y`, whatever `v0`.
    """
    v0 = jnp.zeros((problem.k,)) if v0 is None else validate_head(problem, v0)
    A = problem.X @ problem.B0.T
    A_pinv = pinv(A)
    return A_pinv @ problem.y + v0 - A_pinv @ (A @ v0)


def lp_ft(problem: Problem, v0=None, *, t_final, **kwargs) -> Trajectory:
    """LP-FT: linear probing to convergence (its closed form), then fine-tuning from
    `(v_lp, B0)`. Takes the same keyword arguments as `fine_tune`; `v0` only matters for LP
    when `X B0ᵀ` is rank deficient."""
    return fine_tune(problem, linear_probe_solution(problem, v0), t_final=t_final, **kwargs)


def state_at(traj: Trajectory, index: int = -1) -> tuple[Float[Array, " k"], Float[Array, "k d"]]:
    """`(v, B)` at one saved index (default: the last)."""
    return traj.v[index], traj.B[index]

"""`SolveOptions`: how a gradient flow is integrated, in one validated, keyword-only object.

Every flow in the toolkit (FT, LP, LP-FT and their variants, in full or reduced coordinates)
takes the same eight settings; they are checked once here instead of in each entry point.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._validation import check_int_range, check_real_range, is_concrete
from .solver import FusedTsit5

SOLVE_FIELDS = (
    "t_final",
    "save_at",
    "rtol",
    "atol",
    "grad_tol",
    "steady_tol",
    "max_steps",
    "solver",
    "dtmin",
)


class SolveOptions(eqx.Module):
    """Integrate on `[0, t_final]` with an adaptive solver, saving at `save_at`.

    Attributes:
        t_final: end of the integration interval (may be traced, e.g. swept under `vmap`).
        save_at: strictly increasing times in `[0, t_final]` to save at; `None` saves the two
            ends `[y(0), y(t_stop)]` without dense output (cheaper per step).
        rtol, atol: the PID step-size controller's tolerances: each step's local error stays
            below `rtol·|y| + atol`.
        grad_tol: `None` never stops early (every solve runs to `t_final`). Otherwise a solve
            stops at steady state (`steady_state.py`): by `steady_tol` where the flow has an
            exact test, else once its speed `‖∂t y‖` (the rate-weighted gradient norm) falls
            below `grad_tol`. Once converged, an explicit solver sits at its stability limit and
            the speed jitters at ~`r_max · rtol · ‖y‖` (`r_max` the flow's largest rate: up to
            1e-5 on the main study's problems), so an absolute `grad_tol` may never trigger.
        steady_tol: for the paper's flow (and its learning-rate variants) in reduced
            coordinates: stop once the fit `u = Zᵀv` is within `steady_tol · (rtol ‖u⋆‖ + atol)`
            of the least-squares fit `u⋆`, and report the flow's limit from there
            (`steady_state.FitStop`); `None` uses the speed test for these flows too.
        max_steps: the solver's step budget.
        solver: a diffrax solver (default `FusedTsit5()`, diffrax's Tsit5 with its stages
            unrolled; `diffrax.Tsit5()` is the same method, slower per step).
        dtmin: a floor on the step size (default none), for non-smooth flows. With ReLU or
            leaky ReLU a pre-activation `bᵢᵀxₙ` can slide along the kink at 0 (a Filippov
            sliding mode: the field points into the surface from both sides); an explicit
            solver then chatters across it and error control shrinks the step without bound,
            ending in `max_steps`. With a floor it advances at `dtmin` there, and the chatter
            averages to the sliding motion with an `O(dtmin)` error (measured on one run to t = 20: per-neuron
            balancedness drift 1.7e-4, 1.0e-5, 1.0e-6 at dtmin 1e-3, 1e-4, 1e-5). Away from
            kinks error control is unchanged.

    Tolerances and the solver are static (a change recompiles); `t_final` and `save_at` are
    arrays, and so is `grad_tol` when it is given traced.
    """

    t_final: Float[Array, ""]
    save_at: Float[Array, " T"] | None
    rtol: float
    atol: float
    grad_tol: float | Float[Array, ""] | None
    steady_tol: float | None
    max_steps: int
    solver: diffrax.AbstractSolver
    dtmin: float | None
    # Where every saved time is 0 or t_final (e.g. `save_at=[t_final]`): for each, 0 (the start)
    # or 1 (the end), so the solve saves its two ends and needs no dense output; else None.
    end_pattern: tuple[int, ...] | None = eqx.field(static=True)

    def __init__(
        self,
        *,
        t_final,
        save_at=None,
        rtol: float = 1e-8,
        atol: float = 1e-12,
        grad_tol: float | None = 1e-7,
        steady_tol: float | None = 10.0,
        max_steps: int = 100_000,
        solver: diffrax.AbstractSolver | None = None,
        dtmin: float | None = None,
    ):
        check_int_range("max_steps", max_steps, 1)
        if is_concrete(t_final):
            check_real_range("t_final", t_final, 0.0, low_open=True)
        check_real_range("rtol", rtol, 0.0, low_open=True)
        check_real_range("atol", atol, 0.0, low_open=True)
        if grad_tol is not None and is_concrete(grad_tol):
            check_real_range("grad_tol", grad_tol, 0.0, low_open=True)
        if steady_tol is not None:
            check_real_range("steady_tol", steady_tol, 0.0, low_open=True)
        if dtmin is not None:
            check_real_range("dtmin", dtmin, 0.0, low_open=True)
        self.end_pattern = _end_pattern(save_at, t_final)
        t_final = jnp.asarray(t_final, float)
        if save_at is not None:
            save_at = jnp.asarray(save_at, float)
            if save_at.ndim != 1 or save_at.shape[0] < 1:
                raise ValueError(f"save_at must be a non-empty 1-D array of times, got shape {save_at.shape}")
            if is_concrete(save_at, t_final):
                # A relative slack of 1e-12 forgives round-off in grids like logspace(…, log10(t_final)).
                ok = (
                    jnp.all(jnp.diff(save_at) > 0)
                    & (save_at[0] >= 0)
                    & (save_at[-1] <= t_final * (1 + 1e-12))
                )
                if not bool(ok):
                    raise ValueError(
                        f"save_at must be strictly increasing times in [0, t_final={float(t_final):g}], "
                        f"got range [{float(save_at[0]):g}, {float(save_at[-1]):g}]"
                    )
            save_at = jnp.minimum(save_at, t_final)
        self.t_final = t_final
        self.save_at = save_at
        self.rtol = float(rtol)
        self.atol = float(atol)
        # A traced grad_tol (e.g. scaled per run by the rates of a vmapped sweep) stays an array.
        if grad_tol is not None:
            grad_tol = float(grad_tol) if is_concrete(grad_tol) else jnp.asarray(grad_tol, float)
        self.grad_tol = grad_tol
        self.steady_tol = None if steady_tol is None else float(steady_tol)
        self.max_steps = int(max_steps)
        self.solver = FusedTsit5() if solver is None else solver
        self.dtmin = None if dtmin is None else float(dtmin)

    @property
    def controller(self) -> diffrax.PIDController:
        """The PID step-size controller (with the `dtmin` floor forced when one is set)."""
        if self.dtmin is None:
            return diffrax.PIDController(rtol=self.rtol, atol=self.atol)
        return diffrax.PIDController(rtol=self.rtol, atol=self.atol, dtmin=self.dtmin, force_dtmin=True)

    def end_points(self) -> SolveOptions:
        """The same options, saving only the two ends."""
        return SolveOptions(
            t_final=self.t_final,
            rtol=self.rtol,
            atol=self.atol,
            grad_tol=self.grad_tol,
            steady_tol=self.steady_tol,
            max_steps=self.max_steps,
            solver=self.solver,
            dtmin=self.dtmin,
        )

    @property
    def saved_times(self) -> Float[Array, " T"]:
        """The times a `Trajectory` reports: `save_at`, or `[0, t_final]` for the end points (the
        last save holds the state at `t_stop`, the end of the solve, as after any early stop)."""
        if self.save_at is None:
            return jnp.stack([0.0 * self.t_final, self.t_final])
        return self.save_at


def _end_pattern(save_at, t_final) -> tuple[int, ...] | None:
    """`(0 | 1, …)` when every time in a concrete `save_at` is 0 or `t_final`, else None."""
    if save_at is None or not is_concrete(save_at, t_final):
        return None
    times, end = np.ravel(np.asarray(save_at, float)), float(np.asarray(t_final, float))
    if not times.size or not np.all((times == 0.0) | (times == end)):
        return None
    return tuple(int(t == end) for t in times)


def solve_options(options: SolveOptions | None, solve_kwargs: dict) -> SolveOptions:
    """The options of a call that takes either `options=SolveOptions(...)` or today's loose
    keywords (`t_final=…, rtol=…`), never both."""
    unknown = set(solve_kwargs) - set(SOLVE_FIELDS)
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {sorted(unknown)}; solve options are {SOLVE_FIELDS}")
    if options is None:
        if "t_final" not in solve_kwargs:
            raise TypeError("missing keyword argument 't_final' (or pass options=SolveOptions(...))")
        return SolveOptions(**solve_kwargs)
    if solve_kwargs:
        raise ValueError(f"pass either options= or the solve keywords {sorted(solve_kwargs)}, not both")
    if not isinstance(options, SolveOptions):
        raise ValueError(f"options must be a SolveOptions, got {type(options).__name__}")
    return options

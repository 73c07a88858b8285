"""Fine-tuning (FT), linear probing (LP) and LP-FT as gradient flows: the user-facing faces.

On the training loss `L̂(v, B) = ‖X Bᵀ v − y‖²` with residual `r = X Bᵀ v − y`:

    FT:    ∂t v = −2 B Xᵀ r,   ∂t B = −2 v rᵀ X,   from (v0, B0)
    LP:    ∂t v = −2 B0 Xᵀ r,  B ≡ B0
    LP-FT: FT from (v_lp, B0), v_lp the closed-form limit of LP.

Each face builds a `Flow` from keywords (`activation`, `loss`, `regularizer`, `learning_rates`:
the paper's flow by default), its coordinates (`"reduced"`, exact, the default; `"full"`, the
reference) and a `SolveOptions` (`t_final`, `save_at`, `rtol`, `atol`, `grad_tol`,
`max_steps`, `solver`, given as keywords or as `options=`), and calls `flows.solve`.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .coordinates import COORDINATES, make_coordinates, reduced_coordinates
from .flows import Flow, ft_field, make_flow, paper_flow, solve
from .integrate import FlowSolution, SolveError, SolveStatus, raise_if_failed
from .options import solve_options
from .probing import has_closed_form, linear_probe_solution, lp_limit
from .problem import Problem, validate_head
from .reduced_flow import fine_tune_reduced

__all__ = [
    "FlowSolution",
    "SolveError",
    "SolveStatus",
    "Trajectory",
    "fine_tune_reduced",
    "linear_probe_solution",
]


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


VARIANT_DOC = """
    Variants (defaults give the paper's flow):
        activation: `"identity"`, `"relu"`, `"leaky_relu"`, `"tanh"`, `"gelu"` or a callable σ;
            the model is `f(x) = vᵀ σ(B x)`.
        loss: `"squared"` or `"logistic"` (`Σ log(1 + e^{−y f})` on labels `sign(teacher(x))`).
        regularizer: `None`, `WeightDecay(μ, on="B" | "both")`, `L2SP(λ)` or a list of them,
            added to the objective as written (no ½).
        learning_rates: `(η_v, η_B)`: `∂t v = −η_v ∇_v`, `∂t B = −η_B ∇_B`.
"""


def _variant(activation, loss, regularizer, learning_rates) -> Flow:
    return make_flow(activation=activation, loss=loss, regularizer=regularizer, learning_rates=learning_rates)


def _check_coordinates(coordinates):
    if coordinates not in COORDINATES:
        raise ValueError(f"coordinates={coordinates!r} must be one of {COORDINATES}")


def _trajectory(problem, coords, sol, options, method) -> Trajectory:
    if method == "lp":
        v = sol.ys
        B = jnp.broadcast_to(problem.B0, (v.shape[0],) + problem.B0.shape)
    else:
        v, W, s = sol.ys
        B = coords.features(problem, W, s)
    return Trajectory(options.saved_times, v, B, sol.status, sol.num_steps, sol.t_stop)


def _lp_head(problem, coords, flow, v0, options):
    """LP's limit: the closed form, or (logistic loss) the LP flow's end state."""
    if has_closed_form(flow):
        return lp_limit(problem, v0, flow)
    return solve(flow, coords, v0, options.end_points(), method="lp", observe=lambda v, W, s: v).ys[-1]


@eqx.filter_jit
def _run(problem, v0, options, flow, coordinates, method):
    coords = make_coordinates(problem, flow, coordinates)
    if method == "lpft":
        v0, method = _lp_head(problem, coords, flow, v0, options), "ft"
    observe = (lambda v, W, s: v) if method == "lp" else None
    sol = solve(flow, coords, v0, options, method=method, observe=observe)
    return _trajectory(problem, coords, sol, options, method)


def _face(method, name, problem, v0, options, coordinates, check, flow, solve_kwargs) -> Trajectory:
    v0 = validate_head(problem, v0)
    _check_coordinates(coordinates)
    options = solve_options(options, solve_kwargs)
    traj = _run(problem, v0, options, flow, coordinates, method)
    if check:
        raise_if_failed(traj.status, traj.t_stop, traj.num_steps, name)
    return traj


def fine_tune(
    problem: Problem,
    v0,
    *,
    options=None,
    coordinates: str = "reduced",
    check: bool = True,
    activation="identity",
    loss="squared",
    regularizer=None,
    learning_rates=(1.0, 1.0),
    **solve_kwargs,
) -> Trajectory:
    r"""Fine-tuning: gradient flow on `(v, B)` from `(v0, B0)`.

    $$\partial_t v = -2 B X^\top r, \quad \partial_t B = -2 v r^\top X,
      \quad r = X B^\top v - y.$$

    Args:
        problem: the problem instance.
        v0: initial head, shape `(k,)`.
        options: a `SolveOptions`; or give its fields as keywords: `t_final` (required),
            `save_at` (default `[0, t_final]`), `rtol=1e-8`, `atol=1e-12`, `grad_tol=1e-7`
            (`None` never stops early), `steady_tol=10` (the paper's flow stops once its fit
            is within 10× the solver's tolerance and reports the flow's end point;
            `steady_state.py`; other flows stop on their speed `< grad_tol`),
            `max_steps=100_000`, `solver` (default `FusedTsit5()`), `dtmin` (a step floor for
            ReLU flows that slide along their kink; default none).
        coordinates: `"reduced"` (exact, `O(k m)` per evaluation for the paper's flow) or
            `"full"` (reference).
        check: raise `SolveError` when a concrete run diverged or failed; under `jit`/`vmap`
            the status is returned in `Trajectory.status` instead.
    """
    flow = _variant(activation, loss, regularizer, learning_rates)
    return _face("ft", "FT", problem, v0, options, coordinates, check, flow, solve_kwargs)


def linear_probe(
    problem: Problem,
    v0,
    *,
    options=None,
    coordinates: str = "reduced",
    check: bool = True,
    activation="identity",
    loss="squared",
    regularizer=None,
    learning_rates=(1.0, 1.0),
    **solve_kwargs,
) -> Trajectory:
    r"""Linear probing: gradient flow on the head alone, features frozen at `B0`.

    $$\partial_t v = -2 B_0 X^\top (X B_0^\top v - y).$$

    For the squared loss a convex problem whose limit is `probing.lp_limit` (for the paper's
    flow `linear_probe_solution(problem, v0)`). Arguments as in `fine_tune`; `Trajectory.B`
    repeats `B0`.
    """
    flow = _variant(activation, loss, regularizer, learning_rates)
    return _face("lp", "LP", problem, v0, options, coordinates, check, flow, solve_kwargs)


def lp_ft(
    problem: Problem,
    v0=None,
    *,
    options=None,
    coordinates: str = "reduced",
    check: bool = True,
    activation="identity",
    loss="squared",
    regularizer=None,
    learning_rates=(1.0, 1.0),
    **solve_kwargs,
) -> Trajectory:
    """LP-FT: linear probing to convergence, then fine-tuning from `(v_lp, B0)`.

    The LP head is its closed form for the squared loss (`probing.lp_limit`; ridge regression
    with a head penalty), else the LP flow's state at the end of a solve with the same options.
    Arguments as in `fine_tune`; `v0` (default 0) only matters for LP when `σ(X B0ᵀ)` is rank
    deficient, or as the LP flow's start.
    """
    v0 = jnp.zeros((problem.k,)) if v0 is None else v0
    flow = _variant(activation, loss, regularizer, learning_rates)
    return _face("lpft", "LP-FT", problem, v0, options, coordinates, check, flow, solve_kwargs)


for _face_fn in (fine_tune, linear_probe, lp_ft):
    _face_fn.__doc__ += VARIANT_DOC


def _ft_field_reduced(t, y, rp):
    """The paper's FT vector field in reduced coordinates, `args = rp` (for diffrax terms built
    by hand, e.g. the solver tests)."""
    return ft_field(t, y, (paper_flow(), reduced_coordinates(rp)))


def state_at(traj: Trajectory, index: int = -1) -> tuple[Float[Array, " k"], Float[Array, "k d"]]:
    """`(v, B)` at one saved index (default: the last)."""
    return traj.v[index], traj.B[index]

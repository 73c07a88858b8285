"""`fine_tune_reduced` and `linear_probe_reduced`: FT and LP in reduced coordinates alone, for
sweeps that never touch `d`.

Reduce a problem once (`ReducedProblem.from_problem`, `O(d)`), then solve its flow in `(v, Z)`
from many heads, or many reduced problems with `sweep.run_batch`.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp

from . import reduced as red
from ._validation import check_finite, check_shape, is_concrete
from .coordinates import reduced_coordinates
from .flows import make_flow, solve
from .integrate import FlowSolution
from .options import solve_options


def fine_tune_reduced(
    rp: red.ReducedProblem,
    v0,
    *,
    observe: Callable | None = None,
    options=None,
    regularizer=None,
    learning_rates=(1.0, 1.0),
    **solve_kwargs,
) -> FlowSolution:
    r"""Fine-tuning in reduced coordinates alone: the flow of `fine_tune` written in `(v, Z)`,
    from `(v0, Z0)`, touching no `d`-sized array.

    $$\partial_t v = -2 Z g, \quad \partial_t Z = -2 v g^\top,
      \quad g = \mathrm{diag}(\lambda) Z^\top v - b.$$

    Reduce a problem once (`ReducedProblem.from_problem`, `O(d)`), then solve it from many
    heads, or sweep many reduced problems with `sweep.run_batch`. `observe(v, Z)` is saved at
    `save_at` (default: the state `(v, Z)`; e.g. `reduced.ood_loss` to save losses only);
    without `save_at` only the two ends are saved (`ys[0]` at 0, `ys[-1]` where the solve
    stopped), which skips dense output and halves the cost per step of a batched sweep.
    `B(t) = rp.features(problem, Z(t))` when features are wanted. Solve options as in
    `fine_tune`; `learning_rates` and `regularizer` as there (a weight decay on B also moves
    the S⊥ part: then `observe(v, Z, s)` gets its scale `s(t)`, `B P_{S⊥} = s B0 P_{S⊥}`).
    The linear model with the squared loss only (activations need the inputs: use
    `fine_tune`). Never raises on a failed solve: read `FlowSolution.status`.
    """
    v0, options, flow = _checked(rp, v0, options, solve_kwargs, regularizer, learning_rates)
    return _fine_tune_reduced(rp, v0, options, observe, flow)


def _checked(rp, v0, options, solve_kwargs, regularizer, learning_rates):
    """The validated head, the solve options and the flow of a reduced-coordinates call."""
    v0 = jnp.asarray(v0, float)
    check_shape("v0", v0, (rp.Z0.shape[-2],))
    if is_concrete(v0):
        check_finite("v0", v0)
    flow = make_flow(regularizer=regularizer, learning_rates=learning_rates)
    return v0, solve_options(options, solve_kwargs), flow


@eqx.filter_jit
def _fine_tune_reduced(rp, v0, options, observe, flow):
    moves_perp = any(r.moves_perp for r in flow.regularizers)
    if observe is None:
        observe_full = (lambda v, Z, s: (v, Z, s)) if moves_perp else (lambda v, Z, s: (v, Z))
    else:
        observe_full = (lambda v, Z, s: observe(v, Z, s)) if moves_perp else (lambda v, Z, s: observe(v, Z))
    return solve(flow, reduced_coordinates(rp, None, flow), v0, options, observe=observe_full)


def linear_probe_reduced(
    rp: red.ReducedProblem,
    v0,
    *,
    observe: Callable | None = None,
    options=None,
    regularizer=None,
    learning_rates=(1.0, 1.0),
    **solve_kwargs,
) -> FlowSolution:
    r"""Linear probing in reduced coordinates alone: the head's flow with the features frozen,
    `Z ≡ Z0` (so `B ≡ B0`), from `v0`.

    $$\partial_t v = -2 Z_0 g, \quad g = \mathrm{diag}(\lambda) Z_0^\top v - b.$$

    The flow of `linear_probe` for the linear model with the squared loss; its limit is
    `probing.lp_limit` (for the paper's flow `linear_probe_solution`). `observe(v, Z)` is saved
    at `save_at` with `Z = Z0` (default: `v`); without `save_at`, only the two ends. Solve
    options, `regularizer` (only its head terms act) and `learning_rates` as in
    `fine_tune_reduced`. Never raises on a failed solve: read `FlowSolution.status`.
    """
    v0, options, flow = _checked(rp, v0, options, solve_kwargs, regularizer, learning_rates)
    return _linear_probe_reduced(rp, v0, options, observe, flow)


@eqx.filter_jit
def _linear_probe_reduced(rp, v0, options, observe, flow):
    observe_full = (lambda v, Z, s: v) if observe is None else (lambda v, Z, s: observe(v, Z))
    return solve(flow, reduced_coordinates(rp, None, flow), v0, options, method="lp", observe=observe_full)

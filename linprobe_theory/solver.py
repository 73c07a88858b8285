"""`FusedTsit5`: diffrax's Tsit5 with its stages written out as straight-line code.

diffrax runs the stages of a Runge–Kutta step as an inner `while_loop` (so that one
implementation serves explicit, implicit and reversible-mode methods). For the tiny vector
fields of the reduced flow that loop's bookkeeping is the cost of a step: on XLA:CPU we measured
18.5 µs per step of a single run (13.7 µs fused), and 45 µs vs 13.8 µs per run-step under
`vmap` over 64 runs (benchmarks/RESULTS.md). Unrolled, the seven stages become one program that
XLA fuses into a few loops.

The method is exactly Tsitouras' 5(4) pair with diffrax's own coefficients
(`diffrax.Tsit5.tableau`), error estimate and 5th-order dense output
(`diffrax.Tsit5.interpolation_cls`); it plugs into `diffrax.diffeqsolve` like any solver, so step
control (`PIDController`), `SaveAt` and events are diffrax's. One step equals diffrax's
`Tsit5` step to round-off (the stage sums are added in another order); the error estimate
cancels to ~rtol of its terms, so over a solve the step sizes drift apart by ~1e-8 relative and
whole solves agree to the integration tolerance (tests/test_solver.py).
"""

from __future__ import annotations

from typing import ClassVar

import diffrax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

_TABLEAU = diffrax.Tsit5.tableau
# step() takes y1 as the last stage point and reuses f(t1, y1): true for Tsit5 (first same as
# last: b_sol is the last row of a, with b_7 = 0).
if not (np.array_equal(_TABLEAU.b_sol[:-1], _TABLEAU.a_lower[-1]) and _TABLEAU.b_sol[-1] == 0):
    raise ImportError("diffrax's Tsit5 tableau is not FSAL as FusedTsit5 assumes; pin diffrax")


def _combine(y0, h, coefficients, fs):
    """`y0 + h Σ_j a_j f_j` over the non-zero `a_j` (leaf by leaf; `y0=None` omits it)."""
    terms = [(float(a), f) for a, f in zip(coefficients, fs, strict=False) if a != 0.0]

    def leaf(y, *f_leaves):
        total = sum(a * f for (a, _), f in zip(terms, f_leaves, strict=True))
        return h * total if y is None else y + h * total

    if y0 is None:
        return jtu.tree_map(lambda *f: leaf(None, *f), *(f for _, f in terms))
    return jtu.tree_map(leaf, y0, *(f for _, f in terms))


class FusedTsit5(diffrax.AbstractAdaptiveSolver):
    r"""Tsitouras' 5(4) explicit Runge–Kutta pair (FSAL, 7 stages), stages unrolled.

    For $\dot y = f(t, y)$ and a step $h$: $k_1 = f(t_0, y_0)$ (reused from the previous
    step), $k_i = f(t_0 + c_i h,\; y_0 + h \sum_{j<i} a_{ij} k_j)$, $y_1 = y_0 + h \sum_i b_i
    k_i$ (the last stage point), error estimate $h \sum_i \hat b_i k_i$. ODE terms only
    (`diffrax.ODETerm`); the solver state is the vector field at the current point.
    """

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.Tsit5.interpolation_cls

    def order(self, terms):
        return 5

    def init(self, terms, t0, t1, y0, args):
        return terms.vf(t0, y0, args)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        h = terms.contr(t0, t1)  # t1 − t0 for an ODE term
        f0 = solver_state
        if made_jump is not False:
            # After a discontinuity the stored f(t0, y0) is stale (never the case for our flows:
            # diffrax resolves made_jump to a static False without jump times).
            fresh = terms.vf(t0, y0, args)
            f0 = jtu.tree_map(lambda new, old: jnp.where(made_jump, new, old), fresh, f0)
        fs = [f0]
        y_stage = y0
        for a_row, c in zip(_TABLEAU.a_lower, _TABLEAU.c, strict=True):
            y_stage = _combine(y0, h, a_row, fs)
            fs.append(terms.vf(t0 + c * (t1 - t0), y_stage, args))
        # First-same-as-last: b_sol equals the last row of a, so y1 is the last stage point and
        # fs[-1] = f(t1, y1) starts the next step.
        y1 = y_stage
        y_error = _combine(None, h, _TABLEAU.b_error, fs)
        ks = jtu.tree_map(lambda *f: h * jnp.stack(f), *fs)
        dense_info = dict(y0=y0, y1=y1, k=ks)
        return y1, y_error, dense_info, fs[-1], diffrax.RESULTS.successful

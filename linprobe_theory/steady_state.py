"""When a gradient flow has reached its steady state, and the state it would settle at.

A stop rule has two methods: `reached(t, y, args)`, tested after every accepted step (a
`diffrax.Event`), and `limit(y, args)`, applied once to the state where the solve stopped.

- `SpeedStop`: `‖∂t y‖ < grad_tol`, for any flow; `limit` is the identity. Absolute, so it
  depends on the problem's scale, and an explicit solver past convergence steps at its stability
  limit, where the state jitters at the controller's tolerance along the stiff directions: the
  speed jitters at ~`r_max · rtol · ‖y‖` (`r_max` the flow's largest rate), up to 1e-5 on the main
  study's problems, and about half of its runs never went below 1e-7.
- `FitStop`: the paper's flow (linear model, squared loss, no regulariser, any rates), in reduced
  or full coordinates (`coordinates.FitFrame`; in full ones `Z = B E`, `δB = δZ Eᵀ`).
  Its only driving force is the fit residual: with `u = Zᵀ v` and `u⋆ = b / λ` (the
  exact least-squares fit on S), `∂t v = −2 η_v Z g`, `∂t Z = −2 η_B v gᵀ`, `g = λ ⊙ (u − u⋆)`.
  It stops once `‖u − u⋆‖ ≤ steady_tol · (rtol ‖u⋆‖ + atol)`: the fit has converged to a few
  times the solver's own tolerance, which the stiff jitter reaches in every run. Near the
  manifold of minimisers the flow is linear, `∂t y = −2 P A diag(λ) Aᵀ (y − y∞)` with
  `A g = (Z g, v gᵀ)`, `Aᵀ(δv, δZ) = Zᵀ δv + δZᵀ v`, `P = diag(η_v, η_B)`, and its limit is

      y∞ = y − P A (Aᵀ P A)⁻¹ (u − u⋆),    Aᵀ P A = η_v ZᵀZ + η_B ‖v‖² I    (m × m),

  exact up to `O(‖u − u⋆‖²)`; `limit` returns it, so a stopped run reports the flow's end point,
  not a point still `~‖u − u⋆‖` away from it. The stop is allowed only where the remaining
  horizon lets the slowest mode decay below a tenth of the solver's tolerance by `t_final`:
  `‖u − u⋆‖ e^{−r (t_final − t)} ≤ 0.1 (rtol ‖u⋆‖ + atol)`, with `r = 2 η_B λ_min ‖v‖²` a lower
  bound on the smallest non-zero rate of the linear flow; so the reported end point is the state
  at `t_final` to within what one step of the controller may err, not a state beyond it.

Measured on the main study's 240 FT runs (rtol 1e-8, t_final 20): `FitStop` fires in all of them
after 114 steps on average (2636 to `t_final`); the final OOD losses agree with runs to `t_final`
at rtol 1e-10 within 1.1e-8 relative, closer than runs to `t_final` at rtol 1e-8 (6.4e-7).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp

from .coordinates import uses_gram_form
from .linalg import solve_linear

HORIZON_FRACTION = 0.1
"""`FitStop` stops only where what is left of the fit's gap at `t_final` is below this fraction
of the solver's tolerance (`‖u − u⋆‖ e^{−r (t_final − t)} ≤ HORIZON_FRACTION · tol`)."""


class SpeedStop(eqx.Module):
    """Stop once `speed(t, y, args) < grad_tol` (default speed: `‖∂t y‖`)."""

    grad_tol: float | jnp.ndarray
    speed: Callable = eqx.field(static=True)

    def reached(self, t, y, args):
        return self.speed(t, y, args) < self.grad_tol

    def limit(self, y, args):
        return y


class FitStop(eqx.Module):
    """Stop the paper's flow once its fit has converged to the solver's tolerance, and report the
    flow's limit from there (see the module docstring); in any coordinates with a `fit_frame`."""

    steady_tol: float
    rtol: float
    atol: float
    t_final: jnp.ndarray

    def reached(self, t, y, args):
        flow, coords = args
        frame = coords.fit_frame
        v, W = y
        size = jnp.linalg.norm(frame.gap(v, W))
        tol = self.rtol * jnp.linalg.norm(frame.u_star) + self.atol
        smallest_curvature = jnp.min(jnp.where(frame.curvature > 0, frame.curvature, jnp.inf))
        slowest_rate = 2.0 * flow.rates.B * smallest_curvature * jnp.dot(v, v)
        decays_needed = jnp.log(size / (HORIZON_FRACTION * tol))
        return (size <= self.steady_tol * tol) & ((self.t_final - t) * slowest_rate >= decays_needed)

    def limit(self, y, args):
        flow, coords = args
        frame = coords.fit_frame
        v, W = y
        Z = frame.in_frame(W)
        eta_v, eta_B = flow.rates.v, flow.rates.B
        gram = eta_v * (Z.T @ Z) + eta_B * jnp.dot(v, v) * jnp.eye(Z.shape[1])
        return frame.move(v, W, solve_linear(gram, frame.gap(v, W)), eta_v, eta_B)


def has_fit_stop(flow, coords) -> bool:
    """Whether `FitStop` describes this flow exactly: the linear model with the squared loss, no
    regulariser (one moves the minimiser off `u = u⋆`), and coordinates that know their fit."""
    return (
        uses_gram_form(flow.model, flow.loss)
        and not flow.regularizers
        and getattr(coords, "fit_frame", None) is not None
    )


def stop_rule(flow, coords, options, speed: Callable):
    """The rule a solve of `flow` in `coords` stops by: `None` with `grad_tol=None` (run to
    `t_final`), `FitStop` where it applies and `steady_tol` is set, else `SpeedStop`."""
    if options.grad_tol is None:
        return None
    if options.steady_tol is not None and has_fit_stop(flow, coords):
        return FitStop(options.steady_tol, options.rtol, options.atol, options.t_final)
    return SpeedStop(options.grad_tol, speed)

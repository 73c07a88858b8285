"""A gradient flow assembled from parts, and the one `solve` that integrates any of them.

A `Flow` is a model (`TwoLayer`, activation σ), an objective (a loss plus regularisers) and
per-layer learning rates. Its vector field is minus the rate-weighted gradient of the
objective, by `jax.grad`:

    FT:  ∂t v = −η_v ∇_v 𝓛(v, B),   ∂t B = −η_B ∇_B 𝓛(v, B)
    LP:  ∂t v = −η_v ∇_v 𝓛(v, B0),  B ≡ B0

written in full coordinates `(v, B)` or in exact reduced coordinates `(v, Z = B E)`
(`coordinates.py`). `solve(flow, coords, v0, options, method=...)` integrates it; the faces in
`dynamics.py` (`fine_tune`, `linear_probe`, `lp_ft`, …) build the parts from keywords.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._validation import check_real_range, is_concrete
from .integrate import FlowSolution, integrate, tree_norm
from .models import TwoLayer, make_model
from .objectives import Objective, as_regularizers, make_loss, perp_scale, perp_speed
from .options import SolveOptions
from .steady_state import SpeedStop, stop_rule

METHODS = ("ft", "lp")


class LearningRates(eqx.Module):
    """Per-layer rates `(η_v, η_B)`: `∂t v = −η_v ∇_v`, `∂t B = −η_B ∇_B` (default 1, 1).

    Along FT the conserved quantity becomes `v vᵀ/η_v − B Bᵀ/η_B`; `η_B → 0` recovers LP.
    A zero rate freezes its layer: `(1, 0)` is LP, `(0, 1)` trains the features under a fixed
    head (e.g. the LP head, "features only" after LP); at least one rate must be positive."""

    v: Array
    B: Array

    def __init__(self, v=1.0, B=1.0):
        concrete = is_concrete(v) and is_concrete(B)
        for name, value in (("learning_rates[0] (η_v)", v), ("learning_rates[1] (η_B)", B)):
            if is_concrete(value):
                check_real_range(name, value, 0.0)
        if concrete and float(v) == 0.0 and float(B) == 0.0:
            raise ValueError("learning_rates=(0.0, 0.0): at least one of η_v, η_B must be positive")
        self.v = jnp.asarray(v, float)
        self.B = jnp.asarray(B, float)


def make_rates(learning_rates) -> LearningRates:
    if isinstance(learning_rates, LearningRates):
        return learning_rates
    try:
        eta_v, eta_B = learning_rates
    except (TypeError, ValueError):
        raise ValueError(f"learning_rates={learning_rates!r} must be a pair (η_v, η_B)") from None
    return LearningRates(eta_v, eta_B)


class Flow(eqx.Module):
    """What a gradient flow descends and how fast: model, objective, per-layer rates."""

    model: TwoLayer
    objective: Objective
    rates: LearningRates

    @property
    def loss(self):
        return self.objective.loss

    @property
    def regularizers(self):
        return self.objective.regularizers


def make_flow(*, activation="identity", loss="squared", regularizer=None, learning_rates=(1.0, 1.0)) -> Flow:
    """A `Flow` from the user-facing keywords of `fine_tune` & co.

    Args:
        activation: `"identity"` (the paper), `"relu"`, `"leaky_relu"`, `"tanh"`, `"gelu"`, or
            a callable σ; the model is `f(x) = vᵀ σ(B x)`.
        loss: `"squared"` (`Σ (f − y)²`) or `"logistic"` (`Σ log(1 + e^{−y f})` on labels
            `sign(teacher(x))`).
        regularizer: `None`, a `WeightDecay`, an `L2SP`, or a sequence of them (their sum).
        learning_rates: `(η_v, η_B)`, both positive.
    """
    objective = Objective(make_loss(loss), as_regularizers(regularizer))
    return Flow(make_model(activation), objective, make_rates(learning_rates))


def paper_flow() -> Flow:
    """The paper's flow: the linear model, the squared loss, no regulariser, equal rates. Built
    on call (not at import), so importing the package creates no array: `jax.distributed`
    must be initialised before the first one."""
    return make_flow()


def _objective(flow: Flow, coords):
    data_fit = coords.data_fit(flow.model, flow.loss)

    def value(v, W):
        return flow.objective(data_fit, v, W, coords.W0)

    return value


def ft_field(t, y, args):
    """`(v, W) ↦ −(η_v ∇_v 𝓛, η_B ∇_W 𝓛)`, `args = (flow, coords)`."""
    flow, coords = args
    gv, gW = jax.grad(_objective(flow, coords), argnums=(0, 1))(*y)
    return -flow.rates.v * gv, -flow.rates.B * gW


def lp_field(t, v, args):
    """`v ↦ −η_v ∇_v 𝓛(v, W0)`: the head alone, features frozen; `args = (flow, coords)`."""
    flow, coords = args
    return -flow.rates.v * jax.grad(_objective(flow, coords))(v, coords.W0)


def solve(flow: Flow, coords, v0, options: SolveOptions, *, method: str = "ft", observe=None) -> FlowSolution:
    """Integrate `flow` in `coords` from `(v0, W0)`.

    Saves `observe(v, W, s)` (default `(v, W, s)`) at `options.save_at`, where `s(t)` is the
    scale of the S⊥ part of the features (`B P_{S⊥} = s B0 P_{S⊥}`; 1 unless a regulariser
    shrinks it; only reduced coordinates need it, full ones carry B whole). For `method="lp"`
    the state is `v` alone and `W ≡ W0`, `s ≡ 1`. Pure and traceable; read `status`.
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")
    observe = observe or (lambda v, W, s: (v, W, s))
    regs, eta_B = flow.regularizers, flow.rates.B
    tracks_perp = coords.name == "reduced" and any(r.moves_perp for r in regs)

    args = (flow, coords)
    if method == "lp":
        one = jnp.ones(())
        stop = None if options.grad_tol is None else SpeedStop(options.grad_tol, _lp_speed)
        return integrate(
            lp_field, v0, args, options, save_fn=lambda t, v: observe(v, coords.W0, one), stop=stop
        )

    def save(t, y):
        s = perp_scale(regs, eta_B, t) if tracks_perp else jnp.ones_like(t)
        return observe(*y, s)

    speed = _ft_speed
    if tracks_perp:
        # The S⊥ part is not in the reduced state; its speed joins the steady-state test so a
        # stop means what it means in full coordinates.
        def speed(t, y, args):
            perp = perp_speed(regs, eta_B, perp_scale(regs, eta_B, t)) * args[1].perp_norm
            return jnp.sqrt(tree_norm(ft_field(t, y, args)) ** 2 + perp**2)

    stop = stop_rule(flow, coords, options, speed)
    return integrate(ft_field, (v0, coords.W0), args, options, save_fn=save, stop=stop)


def _ft_speed(t, y, args):
    """`‖∂t (v, W)‖`, the speed `SpeedStop` compares with `grad_tol`."""
    return tree_norm(ft_field(t, y, args))


def _lp_speed(t, v, args):
    return tree_norm(lp_field(t, v, args))

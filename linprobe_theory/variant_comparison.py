"""FT, LP and LP-FT of any variant of the flow, scored the same way: the comparison the studies
of the extensions tabulate (`compare_methods` is the paper's flow alone, in the Gram form).

A variant is given as in `fine_tune` (`activation`, `loss`, `regularizer`, `learning_rates`).
States are scored by `Risks`: the OOD risk `E_{x∼N(0,Σ)}[(f(x) − f⋆(x))²]` and the ID risk
`E_{x∼N(0,P_S)}[(f(x) − f⋆(x))²]`, exact where a closed form exists (`losses`, and
`ood.gaussian_ood_risk` for identity/ReLU students and teachers) and otherwise estimated on one
fixed sample shared by every method and time, so differences between methods carry no
independent sampling noise.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import losses
from .comparison import log_time_grid
from .coordinates import training_targets
from .diagnostics import orthogonal_drift
from .dynamics import fine_tune, lp_ft
from .flows import make_flow
from .models import make_model
from .objectives import perp_scale
from .ood import CLOSED_FORM_ACTIVATIONS, gaussian_ood_risk, id_inputs, ood_inputs, sampled_ood_risk
from .problem import Problem
from .theory import head_alignment_error

EXACT, SAMPLED = 0, 1
"""Codes of the `*_estimator` keys: how a risk was computed."""


def _named(activation) -> str | None:
    return activation if isinstance(activation, str) else None


class Risks(eqx.Module):
    """OOD and ID risks of states `(v, B)` of the model `vᵀσ(Bx)` (leading axes of `(v, B)` map).

    `ood_x`/`id_x` hold the fixed samples where a risk has no closed form (`None`: exact).
    """

    activation: object = eqx.field(static=True)
    ood_x: Float[Array, "N d"] | None
    id_x: Float[Array, "N d"] | None

    def ood(self, problem: Problem, v, B):
        if self.ood_x is not None:
            return sampled_ood_risk(problem, v, B, inputs=self.ood_x, activation=self.activation)
        if self.activation == "identity" and problem.teacher_activation == "identity":
            return losses.ood_loss(problem, v, B)
        return gaussian_ood_risk(problem, v, B, activation=self.activation)

    def id(self, problem: Problem, v, B):
        if self.id_x is not None:
            return sampled_ood_risk(problem, v, B, inputs=self.id_x, activation=self.activation)
        return losses.id_loss(problem, v, B)

    @property
    def estimators(self) -> dict[str, Array]:
        return {
            "ood_estimator": jnp.asarray(EXACT if self.ood_x is None else SAMPLED),
            "id_estimator": jnp.asarray(EXACT if self.id_x is None else SAMPLED),
        }


def make_risks(problem: Problem, activation="identity", *, key=None, num_samples: int = 4096, exact=True):
    """`Risks` for `problem` and a student activation: closed forms where they exist (unless
    `exact=False`), else a sample of `num_samples` inputs drawn with `key` (required then)."""
    name = _named(activation)
    both_linear = name == "identity" and problem.teacher_activation == "identity"
    ood_exact = (
        exact and name in CLOSED_FORM_ACTIVATIONS and problem.teacher_activation in CLOSED_FORM_ACTIVATIONS
    )
    id_exact = exact and both_linear
    if not (ood_exact and id_exact) and key is None:
        raise ValueError(
            f"activation={activation!r} with teacher_activation={problem.teacher_activation!r} "
            "has no closed-form risk: pass key= to draw the sample it is estimated on"
        )
    ood_x = None if ood_exact else ood_inputs(problem, key, num_samples)
    id_x = None if id_exact else id_inputs(problem, jax.random.fold_in(key, 1), num_samples)
    return Risks(activation, ood_x, id_x)


def compare_variant(
    problem: Problem,
    v0,
    *,
    risks: Risks,
    t_final,
    num_saves: int = 32,
    coordinates: str = "reduced",
    activation="identity",
    loss="squared",
    regularizer=None,
    learning_rates=(1.0, 1.0),
    **solve_kwargs,
) -> dict[str, Array]:
    """FT from `(v0, B0)`, LP's limit and LP-FT, for one variant of the flow.

    Saves at `log_time_grid(t_final, num_saves)` (0 first, so LP-FT's first state is LP's limit).
    Keys, for `m ∈ {ft, lpft}`: `m_ood_final`, `m_ood_min` (over the saved times), `m_id_final`,
    `m_id_min`, `m_id_at_ood_min` and `m_t_ood_min` (ID risk and time where OOD is least),
    `m_train_final` (the data term `Σᵢ ℓ(f(xᵢ), yᵢ)`), `m_status`, `m_steps`,
    `m_t_stop`, `m_perp_residual` (max over saves of `‖(B − s(t) B0) P_{S⊥}‖_F`, `s` the exact
    S⊥ scale a regulariser imposes, `objectives.perp_scale`, at `min(t, t_stop)`: a measurement
    only in full coordinates, structurally 0 in reduced ones), `m_conserved_drift` (max over
    saves of `‖Q(t) − Q(0)‖_F`, `Q = (η_B v vᵀ − η_v B Bᵀ)/max(η_v, η_B)`, conserved by the linear
    squared-loss flow without regulariser) and `m_conserved_scale` (`‖Q(0)‖_F`), and `m_ood_t`,
    `m_id_t` `(num_saves,)`; `lp_ood`, `lp_id`, `lp_train`; `phi`, `t`, and the
    `ood_estimator`/`id_estimator` codes.
    Runs are returned with their status (`check=False`), so this maps under `jit`/`vmap`.
    """
    ts = log_time_grid(t_final, num_saves)
    variant = dict(activation=activation, loss=loss, regularizer=regularizer, learning_rates=learning_rates)
    kwargs = dict(
        t_final=t_final, save_at=ts, coordinates=coordinates, check=False, **variant, **solve_kwargs
    )
    flow = make_flow(**variant)
    model = make_model(activation)
    targets = training_targets(problem, flow.loss)
    eta_v, eta_B = flow.rates.v, flow.rates.B
    scale = jnp.maximum(eta_v, eta_B)

    def data_term(v, B):
        return flow.loss(model(v, B, problem.X), targets)

    def conserved(v, B):
        return (eta_B * jnp.outer(v, v) - eta_v * B @ B.T) / scale

    out = {"phi": head_alignment_error(problem, v0), "t": ts, **risks.estimators}
    trajectories = {"ft": fine_tune(problem, v0, **kwargs), "lpft": lp_ft(problem, v0, **kwargs)}
    for name, traj in trajectories.items():
        ood, idr = risks.ood(problem, traj.v, traj.B), risks.id(problem, traj.v, traj.B)
        # After a steady-state stop the remaining saves hold the state at t_stop.
        s = perp_scale(flow.regularizers, flow.rates.B, jnp.minimum(ts, traj.t_stop))
        q = jax.vmap(conserved)(traj.v, traj.B)
        out |= {
            f"{name}_ood_final": ood[-1],
            f"{name}_ood_min": jnp.min(ood),
            f"{name}_id_final": idr[-1],
            f"{name}_id_min": jnp.min(idr),
            f"{name}_id_at_ood_min": idr[jnp.argmin(ood)],
            f"{name}_t_ood_min": ts[jnp.argmin(ood)],
            f"{name}_train_final": data_term(traj.v[-1], traj.B[-1]),
            f"{name}_status": traj.status,
            f"{name}_steps": traj.num_steps,
            f"{name}_t_stop": traj.t_stop,
            f"{name}_perp_residual": jnp.max(orthogonal_drift(problem, traj.B, s)),
            f"{name}_conserved_drift": jnp.max(jnp.sqrt(jnp.sum((q - q[0]) ** 2, axis=(-2, -1)))),
            f"{name}_conserved_scale": jnp.sqrt(jnp.sum(q[0] ** 2)),
            f"{name}_ood_t": ood,
            f"{name}_id_t": idr,
        }
    v_lp = trajectories["lpft"].v[0]
    out |= {
        "lp_ood": risks.ood(problem, v_lp, problem.B0),
        "lp_id": risks.id(problem, v_lp, problem.B0),
        "lp_train": data_term(v_lp, problem.B0),
    }
    return out

"""Per-run computations behind the studies in `experiments/` (pure core: no I/O).

Each function handles one run and is meant to be `vmap`ped by `sweep.run_batch`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .diagnostics import feature_distortion
from .dynamics import fine_tune
from .heads import head_with_alignment, random_head, zero_head
from .ood import id_inputs, ood_inputs
from .probing import linear_probe_solution
from .problem import Problem

HEAD_KINDS = ("phi", "zero", "random")
"""Head initialisations a sweep can mix: prescribed φ, zero, and `random_head`."""


def select_head(problem: Problem, kind, phi, *, key) -> Float[Array, " k"]:
    """The head of kind `HEAD_KINDS[kind]` (an integer, possibly traced), with target `phi` for
    the φ-prescribed kind."""
    candidates = jnp.stack(
        [head_with_alignment(problem, phi), zero_head(problem), random_head(problem, key=key)]
    )
    return candidates[kind]


def distortion_over_time(
    problem: Problem,
    v0,
    *,
    key,
    save_at,
    t_final,
    num_inputs: int = 512,
    input_scale=1.0,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    grad_tol: float | None = 1e-7,
) -> dict[str, Array]:
    """Feature change `(1/N) Σ_x (1/k) ‖(B(t) − B0) x‖²` for FT and LP-FT over time, on fresh ID
    inputs and on OOD inputs `x ~ N(0, Σ)`; the OOD change is split into the parts from `P_S x`
    and from `P_{S⊥} x`. Integrated in full coordinates, so the S⊥ part is a measurement, not an
    identity of the parametrisation. After a steady-state stop (`‖∇L̂‖ < grad_tol`) the remaining
    saves hold the final state. Returns arrays of shape `(len(save_at),)`.
    """
    k_id, k_ood = jax.random.split(key)
    x_id = id_inputs(problem, k_id, num_inputs, input_scale)
    x_ood = ood_inputs(problem, k_ood, num_inputs)
    x_ood_S = (x_ood @ problem.Q_S) @ problem.Q_S.T
    x_ood_perp = x_ood - x_ood_S
    opts = dict(t_final=t_final, save_at=save_at, rtol=rtol, atol=atol, grad_tol=grad_tol)
    opts.update(coordinates="full", check=False)
    out = {}
    ft = fine_tune(problem, v0, **opts)
    lpft = fine_tune(problem, linear_probe_solution(problem, v0), **opts)
    for name, traj in (("ft", ft), ("lpft", lpft)):
        out[f"{name}_id"] = feature_distortion(problem.B0, traj.B, x_id)
        out[f"{name}_ood"] = feature_distortion(problem.B0, traj.B, x_ood)
        out[f"{name}_ood_S"] = feature_distortion(problem.B0, traj.B, x_ood_S)
        out[f"{name}_ood_perp"] = feature_distortion(problem.B0, traj.B, x_ood_perp)
        out[f"{name}_status"] = traj.status
    return out

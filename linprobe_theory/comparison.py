"""One run of the paper's comparison: FT, LP and LP-FT from the same problem and head.

`compare_methods` returns a flat dict of scalars (plus the OOD-loss time series) that a sweep
can `vmap` over problems and heads. It works in exact reduced coordinates, saving losses rather
than `d`-sized states, so its cost per step is independent of `d` and `n`.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import reduced as red
from .coordinates import make_coordinates, reduced_coordinates
from .diagnostics import orthogonal_drift
from .flows import paper_flow, solve
from .options import SolveOptions
from .problem import Problem
from .theory import (
    coverage_cosine,
    feature_error,
    ft_ood_lower_bound,
    head_alignment_error,
    lp_ood_upper_bound,
)


def log_time_grid(t_final, num: int, t_min_fraction: float = 1e-6) -> Float[Array, " num"]:
    """`[0, t_min, …, t_final]`: 0 then `num − 1` log-spaced times, so early and late phases of
    the flow are both resolved."""
    t_final = jnp.asarray(t_final, float)
    return jnp.concatenate([jnp.zeros(1), t_final * jnp.logspace(jnp.log10(t_min_fraction), 0.0, num - 1)])


def _losses(rp: red.ReducedProblem):
    def save(v, Z, s):
        return {
            "ood": red.ood_loss(rp, v, Z),
            "id": red.id_loss(rp, v, Z),
            "train": red.train_loss(rp, v, Z),
        }

    return save


def compare_methods(
    problem: Problem,
    v0,
    *,
    t_final,
    num_saves: int = 64,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    grad_tol: float | None = 1e-7,
    max_steps: int = 100_000,
    solver: diffrax.AbstractSolver | None = None,
    full_reference: bool = False,
) -> dict[str, Array]:
    """FT, LP and LP-FT on one problem, with the theory's quantities beside them.

    Keys (all scalars unless noted):
    - `phi`, `feature_error`, `coverage` (`cos θ_max(R0, S⊥)`), `ft_bound`
      (`ft_ood_lower_bound`), `lp_bound` (`lp_ood_upper_bound`), `w_star_norm`;
    - `ft_ood_final`, `ft_ood_min` (minimum over the saved times), `ft_id_final`,
      `ft_train_final`, `ft_status`, `ft_steps`, `ft_t_stop`; `ft_ood_t`, `ft_id_t` `(num_saves,)`;
    - `lp_ood`, `lp_id`, `lp_train` (closed-form LP limit);
    - `lpft_ood_final`, `lpft_ood_min`, `lpft_id_final`, `lpft_train_final`, `lpft_status`,
      `lpft_ood_t` `(num_saves,)`;
    - `t` `(num_saves,)`, the saved times (`log_time_grid`);
    - with `full_reference=True`: FT is integrated again in full coordinates and
      `ft_orthogonal_drift` (max over saves of `‖(B − B0) P_{S⊥}‖_F`) and `ft_full_vs_reduced`
      (max |OOD loss difference|) are added.
    """
    rp = red.ReducedProblem.from_problem(problem)
    ts = log_time_grid(t_final, num_saves)
    opts = SolveOptions(
        t_final=t_final,
        save_at=ts,
        rtol=rtol,
        atol=atol,
        grad_tol=grad_tol,
        max_steps=max_steps,
        solver=solver,
    )
    coords = reduced_coordinates(rp)
    v_lp = red.linear_probe_head(rp, v0)
    # FT and LP-FT are one ODE from two initial heads: a single vmapped solve compiles once.
    heads = jnp.stack([v0, v_lp])
    both = jax.vmap(lambda v: solve(paper_flow(), coords, v, opts, observe=_losses(rp)))(heads)
    ft, lpft = (jax.tree.map(lambda x, i=i: x[i], both) for i in range(2))

    out = {
        "phi": head_alignment_error(problem, v0),
        "feature_error": feature_error(problem.B0, problem.B_star),
        "coverage": coverage_cosine(problem),
        "ft_bound": ft_ood_lower_bound(problem, v0),
        "lp_bound": lp_ood_upper_bound(problem),
        "w_star_norm": jnp.linalg.norm(problem.w_star),
        "ft_ood_final": ft.ys["ood"][-1],
        "ft_ood_min": jnp.min(ft.ys["ood"]),
        "ft_id_final": ft.ys["id"][-1],
        "ft_train_final": ft.ys["train"][-1],
        "ft_status": ft.status,
        "ft_steps": ft.num_steps,
        "ft_t_stop": ft.t_stop,
        "lp_ood": red.ood_loss(rp, v_lp, rp.Z0),
        "lp_id": red.id_loss(rp, v_lp, rp.Z0),
        "lp_train": red.train_loss(rp, v_lp, rp.Z0),
        "lpft_ood_final": lpft.ys["ood"][-1],
        "lpft_ood_min": jnp.min(lpft.ys["ood"]),
        "lpft_id_final": lpft.ys["id"][-1],
        "lpft_train_final": lpft.ys["train"][-1],
        "lpft_status": lpft.status,
        "t": ts,
        "ft_ood_t": ft.ys["ood"],
        "ft_id_t": ft.ys["id"],
        "lpft_ood_t": lpft.ys["ood"],
    }
    if full_reference:
        full_coords = make_coordinates(problem, paper_flow(), "full")
        v_full, B_full, _ = solve(paper_flow(), full_coords, v0, opts).ys
        e = jnp.einsum("tkd,tk->td", B_full, v_full) - problem.w_star
        out["ft_orthogonal_drift"] = jnp.max(orthogonal_drift(problem, B_full))
        out["ft_full_vs_reduced"] = jnp.max(jnp.abs(problem.ood.quadratic_form(e) - ft.ys["ood"]))
    return out

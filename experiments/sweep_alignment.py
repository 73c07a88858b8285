"""The main job: FT's OOD error against the head alignment error φ, with the FT lower bound.

Sweeps heads built to a prescribed φ, plus zero and random heads, over seeds and feature errors
ε; runs FT, LP and LP-FT on each problem and checks that FT's OOD loss never falls below the
bound at any saved time (the FT lower bound of Kumar et al., ICLR 2022).
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before numpy/jax load: sets OPENBLAS_NUM_THREADS
    import _prelude  # noqa: F401  (experiments/_prelude.py)

import dataclasses

import jax
import numpy as np

import linprobe_theory as lt
from linprobe_theory.comparison import compare_methods
from linprobe_theory.experiment import Study, field
from linprobe_theory.plotting import COLORS, new_figure, positive
from linprobe_theory.studies import HEAD_KINDS, select_head
from linprobe_theory.study_tools import CommonConfig, failed_solves, run_sweep

ROUND_OFF = 1e-14  # OOD losses below this are zero up to float64 round-off


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    eps: tuple = field((0.0, 1e-3, 1e-2), "feature errors d(B0, B⋆) to sweep (comma-separated)")
    phi_min: float = field(0.02, "smallest prescribed φ")
    phi_max: float = field(3.0, "largest prescribed φ (‖v⋆‖ = 1, so φ = 1 is the zero head's)")
    num_phi: int = field(16, "number of prescribed φ values (log-spaced)")
    random_heads: int = field(3, "random heads N(0, I/k) per seed and ε")
    seeds: int = field(4, "problems drawn per ε")
    rtol: float = field(1e-8, "solver relative tolerance")

    @classmethod
    def quick(cls):
        return cls(d=40, m=10, n=20, eps=(0.0, 1e-3), num_phi=6, random_heads=1, seeds=2)


def grid(config: Config) -> dict[str, np.ndarray]:
    phis = np.geomspace(config.phi_min, config.phi_max, config.num_phi)
    heads = [(0, p) for p in phis] + [(1, 1.0)] + [(2, np.nan)] * config.random_heads
    rows = [(e, s, kind, phi) for e in config.eps for s in range(config.seeds) for kind, phi in heads]
    eps, seed, kind, phi = (np.array(col) for col in zip(*rows, strict=True))
    return {"eps": eps, "seed": seed, "head_kind": kind, "phi_target": phi}


def compute(config: Config, store, progress):
    spec = lt.ProblemSpec(d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage)
    base = jax.random.key(config.seed)

    def setup(p, key):
        problem = lt.make_problem(spec, key=jax.random.fold_in(base, p["seed"]), eps=p["eps"])
        return problem, select_head(problem, p["head_kind"], jax.numpy.nan_to_num(p["phi_target"]), key=key)

    def one_run(p, key):
        problem, v0 = setup(p, key)
        out = compare_methods(
            problem,
            v0,
            t_final=config.t_final,
            rtol=config.rtol,
            grad_tol=config.grad_tol,
            full_reference=True,
        )
        return {
            k: v
            for k, v in out.items()
            if np.ndim(v) == 0 or k not in ("t", "ft_ood_t", "ft_id_t", "lpft_ood_t")
        }

    params = grid(config)
    out = run_sweep(one_run, params, key=base, config=config, store=store, progress=progress, setup=setup)
    table = {"run": np.arange(len(params["eps"])), **params, **out}
    table["head"] = np.array([HEAD_KINDS[i] for i in params["head_kind"]])
    bound = table["ft_bound"]
    table["tightness"] = np.where(bound > 0, table["ft_ood_min"] / np.where(bound > 0, bound, 1.0), np.nan)
    # The loss carries integration error ~rtol relative; a violation must exceed that.
    table["bound_violation"] = (table["ft_ood_min"] < bound * (1 - 1e-6)).astype(int)
    return table


ZERO = 1e-13
"""Losses at or below this are zero up to round-off (the losses are O(1) sums of squares)."""


def plot(table, config: Config):
    eps_values = np.unique(table["eps"])
    nrows = -(-(len(eps_values) + 1) // 2)
    fig, grid_axes = new_figure(ncols=2, nrows=nrows, width=5.0, height=3.9)
    axes = grid_axes.reshape(1, -1)
    for extra in axes[0, len(eps_values) + 1 :]:
        extra.set_axis_off()
    markers = {"phi": ("o", "prescribed φ"), "zero": ("s", "zero head"), "random": ("^", "random head")}
    shades = ["#d1495b", "#7b2cbf", "#2a9d8f", "#e76f51"]
    ax_ratio = axes[0, len(eps_values)]
    for j, eps in enumerate(eps_values):
        ax = axes[0, j]
        sel = table["eps"] == eps
        for head, (marker, label) in markers.items():
            s = sel & (table["head"] == head)
            ax.scatter(
                table["phi"][s],
                positive(table["ft_ood_min"][s]),
                marker=marker,
                s=20,
                color=COLORS["FT"],
                alpha=0.75,
                label=f"FT (min over t), {label}",
            )
        order = np.argsort(table["phi"][sel])
        ax.plot(
            table["phi"][sel][order],
            positive(table["ft_bound"][sel][order]),
            color=COLORS["bound"],
            lw=1.5,
            ls="--",
            label="FT lower bound",
        )
        notes = []
        for name, column in (("LP", "lp_ood"), ("LP-FT", "lpft_ood_final")):
            values = table[column][sel]
            if np.all(values <= ZERO):
                notes.append(f"{name}: OOD loss 0 in every run (max {np.max(values):.0e}, round-off)")
            else:
                ax.axhline(
                    np.median(values),
                    color=COLORS[name],
                    lw=1.5,
                    ls="-" if name == "LP" else "-.",
                    label=f"{name} (median over runs)",
                )
        if notes:
            ax.text(0.03, 0.62, "\n".join(notes), transform=ax.transAxes, va="top", fontsize=7)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="head alignment error φ",
            ylabel="OOD loss",
            title=f"ε = d(B0, B⋆) = {eps:g}",
        )
        ax.title.set_fontsize(10)
        ax.legend(fontsize=6, loc="lower right")
        ratio = table["tightness"][sel]
        ax_ratio.scatter(
            table["phi"][sel],
            positive(ratio),
            s=14,
            color=shades[j % len(shades)],
            label=f"ε={eps:g} ({int(np.sum(np.isfinite(ratio)))} runs with bound > 0)",
        )
    ax_ratio.axhline(1.0, color=COLORS["bound"], lw=1)
    ax_ratio.set(
        xscale="log",
        yscale="log",
        xlabel="head alignment error φ",
        ylabel="tightness: min_t FT OOD / bound (≥ 1)",
        title="How loose the FT bound is",
    )
    ax_ratio.title.set_fontsize(10)
    ax_ratio.legend(fontsize=7)
    return fig


def summarise(table, config: Config) -> str:
    ratio = table["tightness"][np.isfinite(table["tightness"])]
    failed = failed_solves(table, "ft_status", "lpft_status")
    not_steady = int(np.sum(table["ft_status"] == 0)), int(np.sum(table["lpft_status"] == 0))
    lines = [
        f"sweep_alignment: {len(table['run'])} runs (ε ∈ {[float(e) for e in np.unique(table['eps'])]}, "
        f"{config.seeds} seeds, φ-prescribed + zero + random heads)",
        f"  bound violations (FT OOD < bound at some saved time): {int(np.sum(table['bound_violation']))}",
        f"  runs with a positive bound: {ratio.size}; tightness FT/bound median {np.median(ratio):.3g}, "
        f"worst (smallest) {np.min(ratio):.3g}"
        if ratio.size
        else "  no run had a positive bound",
        f"  solver failures (status > 1): {failed}; reached t_final before steady state: FT {not_steady[0]}, "
        f"LP-FT {not_steady[1]}; max training loss at the end: FT {np.max(table['ft_train_final']):.2e}, "
        f"LP-FT {np.max(table['lpft_train_final']):.2e}",
        f"  max orthogonal drift (full-coordinate FT): {np.max(table['ft_orthogonal_drift']):.2e}",
    ]
    for eps in np.unique(table["eps"]):
        s = table["eps"] == eps
        ft, lpft = table["ft_ood_final"][s], table["lpft_ood_final"][s]
        lines.append(
            f"  ε={eps:g}: median OOD  FT {np.median(ft):.3g}  LP {np.median(table['lp_ood'][s]):.3g}  "
            f"LP-FT {np.median(lpft):.3g}  (median LP-FT/FT ratio {np.median(lpft / ft):.3g}); "
            f"median ID  FT {np.median(table['ft_id_final'][s]):.2g}  LP {np.median(table['lp_id'][s]):.3g}"
        )
    return "\n".join(lines)


def check(table, config: Config) -> list[str]:
    failures = []
    if np.sum(table["bound_violation"]):
        failures.append(f"{int(np.sum(table['bound_violation']))} runs violate the FT lower bound")
    if failed_solves(table, "ft_status", "lpft_status"):
        failures.append("some solves failed (status > 1)")
    return failures


STUDY = Study("sweep_alignment", __doc__, Config, compute, plot, summarise, check)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

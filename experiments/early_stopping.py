"""No stopping time saves FT: its OOD loss along the whole trajectory stays above the bound.

The FT lower bound holds at every t (Kumar et al., ICLR 2022), so early stopping cannot
recover LP's OOD error. Plots FT, LP-FT and LP OOD losses against time with each run's bound.
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
from linprobe_theory.study_tools import CommonConfig, failed_solves, run_sweep


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    # A CommonConfig field with this study's help text (it keeps its place in the CLI).
    t_final: float = field(20.0, "horizon; saves after a steady-state stop hold the final state")
    eps: float = field(1e-3, "feature error d(B0, B⋆)")
    phis: tuple = field((0.3, 0.6, 1.0, 2.0), "prescribed head alignment errors φ")
    seeds: int = field(3, "problems per φ")
    num_saves: int = field(96, "saved times (0 and a log grid up to t_final)")

    @classmethod
    def quick(cls):
        return cls(d=40, m=10, n=20, phis=(0.5, 1.5), seeds=2, num_saves=48)


def compute(config: Config, store, progress):
    spec = lt.ProblemSpec(
        d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage, eps=config.eps
    )
    base = jax.random.key(config.seed)
    phis = np.array(config.phis, dtype=float)
    params = {
        "phi_target": np.repeat(phis, config.seeds),
        "seed": np.tile(np.arange(config.seeds), len(phis)),
    }

    def one_run(p, key):
        problem = lt.make_problem(spec, key=jax.random.fold_in(base, p["seed"]))
        v0 = lt.head_with_alignment(problem, p["phi_target"], key=key, orthogonal_norm=0.3)
        out = compare_methods(
            problem, v0, t_final=config.t_final, num_saves=config.num_saves, grad_tol=config.grad_tol
        )
        keep = ("t", "ft_ood_t", "lpft_ood_t", "lp_ood", "ft_bound", "phi", "ft_status", "lpft_status")
        return {name: out[name] for name in keep}

    out = run_sweep(one_run, params, key=base, config=config, store=store, progress=progress)
    num_runs, num_t = out["t"].shape
    # Long (tidy) format: one row per run and saved time.
    return {
        "run": np.repeat(np.arange(num_runs), num_t),
        "seed": np.repeat(params["seed"], num_t),
        "phi_target": np.repeat(params["phi_target"], num_t),
        "phi": np.repeat(out["phi"], num_t),
        "t": out["t"].ravel(),
        "ft_ood": out["ft_ood_t"].ravel(),
        "lpft_ood": out["lpft_ood_t"].ravel(),
        "lp_ood": np.repeat(out["lp_ood"], num_t),
        "ft_bound": np.repeat(out["ft_bound"], num_t),
        "ft_status": np.repeat(out["ft_status"], num_t),
        "lpft_status": np.repeat(out["lpft_status"], num_t),
    }


def per_run(table):
    runs = np.unique(table["run"])
    min_ft = np.array([table["ft_ood"][table["run"] == r].min() for r in runs])
    bound = np.array([table["ft_bound"][table["run"] == r][0] for r in runs])
    phi = np.array([table["phi"][table["run"] == r][0] for r in runs])
    return runs, min_ft, bound, phi


def plot(table, config: Config):
    fig, axes = new_figure(ncols=2, width=5.2)
    ax, ax_min = axes[0]
    runs, min_ft, bound, phi = per_run(table)
    shades = ["#d1495b", "#7b2cbf", "#2a9d8f", "#8d6e63", "#1d4ed8", "#8ab17d"]
    phi_targets = sorted(set(table["phi_target"]))
    for i, r in enumerate(runs):
        s = (table["run"] == r) & (table["t"] > 0)
        j = phi_targets.index(table["phi_target"][s][0])
        first = table["seed"][s][0] == 0
        color = shades[j % len(shades)]
        ax.plot(
            table["t"][s],
            table["ft_ood"][s],
            color=color,
            lw=1.2,
            label=f"FT, φ={phi_targets[j]:g}" if first else None,
        )
        ax.axhline(
            positive(bound[i]),
            color=color,
            lw=0.8,
            ls="--",
            label=f"bound, φ={phi_targets[j]:g}" if first else None,
        )
        ax.plot(
            table["t"][s],
            positive(table["lpft_ood"][s]),
            color=COLORS["LP-FT"],
            lw=0.8,
            alpha=0.7,
            label="LP-FT" if r == runs[0] else None,
        )
        ax.axhline(
            table["lp_ood"][s][0], color=COLORS["LP"], lw=0.6, ls=":", label="LP" if r == runs[0] else None
        )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="time t (gradient flow)",
        ylabel="OOD loss",
        title=f"FT OOD loss over time vs its bound (ε={config.eps:g})",
    )
    ax.legend(fontsize=7, ncol=2)
    ax_min.scatter(phi, min_ft, color=COLORS["FT"], label="FT: min over t of OOD loss")
    ax_min.scatter(phi, positive(bound), color=COLORS["bound"], marker="_", s=200, label="FT lower bound")
    ax_min.set(
        xscale="log",
        yscale="log",
        xlabel="head alignment error φ",
        ylabel="OOD loss",
        title="Best stopping time vs bound",
    )
    ax_min.legend(fontsize=8)
    return fig


def summarise(table, config: Config) -> str:
    runs, min_ft, bound, _ = per_run(table)
    positive_bound = bound > 0
    lines = [
        f"early_stopping: {len(runs)} runs × {int(np.sum(table['run'] == runs[0]))} saved times (ε={config.eps:g})",
        f"  runs where min over t of FT OOD < bound: {int(np.sum(min_ft < bound * (1 - 1e-6)))}",
        f"  runs with a positive bound: {int(np.sum(positive_bound))}; min over runs of (min_t FT OOD)/bound: "
        + (
            f"{np.min(min_ft[positive_bound] / bound[positive_bound]):.3g}" if positive_bound.any() else "n/a"
        ),
        f"  median over runs of min_t FT OOD: {np.median(min_ft):.3g}; LP OOD median: "
        f"{np.median([table['lp_ood'][table['run'] == r][0] for r in runs]):.3g}",
    ]
    return "\n".join(lines)


def check(table, config: Config) -> list[str]:
    _, min_ft, bound, _ = per_run(table)
    bad = int(np.sum(min_ft < bound * (1 - 1e-6)))
    failures = [f"{bad} runs dip below the FT lower bound"] if bad else []
    if failed_solves(table, "ft_status"):
        failures.append("some FT solves failed")
    return failures


STUDY = Study("early_stopping", __doc__, Config, compute, plot, summarise, check)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

"""LP beats FT out of distribution as the pretrained features improve.

Sweeps the feature error ε over a log grid with random heads: LP's OOD loss falls as ε² while
FT's stays put, so their ratio goes to 0 (LP is near-perfect OOD with good features,
Kumar et al., ICLR 2022).
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
from linprobe_theory.plotting import COLORS, median_band, new_figure, positive
from linprobe_theory.study_tools import CommonConfig, failed_solves, run_sweep


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    eps_min: float = field(1e-4, "smallest feature error")
    eps_max: float = field(1.0, "largest feature error (≤ √2)")
    num_eps: int = field(13, "number of ε values (log-spaced)")
    seeds: int = field(6, "problems (each with its own random head) per ε")
    fit_max_eps: float = field(0.1, "fit LP's log-log slope on ε ≤ this")

    @classmethod
    def quick(cls):
        return cls(d=40, m=10, n=20, num_eps=5, seeds=2)


def compute(config: Config, store, progress):
    spec = lt.ProblemSpec(d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage)
    base = jax.random.key(config.seed)
    eps = np.geomspace(config.eps_min, config.eps_max, config.num_eps)
    params = {"eps": np.repeat(eps, config.seeds), "seed": np.tile(np.arange(config.seeds), len(eps))}

    def setup(p, key):
        # The same problem (data, B⋆ frame) and head for every ε of a seed: only B0 moves.
        problem = lt.make_problem(spec, key=jax.random.fold_in(base, p["seed"]), eps=p["eps"])
        return problem, lt.random_head(problem, key=jax.random.fold_in(base, 10_000 + p["seed"]))

    def one_run(p, key):
        problem, v0 = setup(p, key)
        out = compare_methods(problem, v0, t_final=config.t_final, grad_tol=config.grad_tol)
        keep = (
            "phi",
            "feature_error",
            "lp_ood",
            "lp_bound",
            "ft_ood_final",
            "ft_ood_min",
            "ft_status",
            "lpft_ood_final",
            "ft_train_final",
        )
        return {name: out[name] for name in keep}

    out = run_sweep(one_run, params, key=base, config=config, store=store, progress=progress, setup=setup)
    table = {"run": np.arange(len(params["eps"])), **params, **out}
    table["lp_over_ft"] = table["lp_ood"] / table["ft_ood_min"]
    return table


def lp_slope(table, config: Config) -> float:
    """Least-squares slope of log(median LP OOD loss) against log ε, for ε ≤ fit_max_eps."""
    eps, med, _, _ = median_band(table["eps"], table["lp_ood"])
    sel = (eps <= config.fit_max_eps) & (med > 0)
    return float(np.polyfit(np.log(eps[sel]), np.log(med[sel]), 1)[0])


def plot(table, config: Config):
    fig, axes = new_figure(ncols=2, width=5.2)
    ax, ax_ratio = axes[0]
    for label, column, color in (
        ("FT (min over t)", "ft_ood_min", COLORS["FT"]),
        ("LP", "lp_ood", COLORS["LP"]),
        ("LP-FT", "lpft_ood_final", COLORS["LP-FT"]),
        ("LP upper bound (ours)", "lp_bound", COLORS["bound"]),
    ):
        eps, med, lo, hi = median_band(table["eps"], table[column])
        ls = "--" if "bound" in label else "-"
        ax.plot(eps, positive(med), ls, marker="o", ms=3, color=color, label=label)
        ax.fill_between(eps, positive(lo), positive(hi), color=color, alpha=0.15, lw=0)
    slope = lp_slope(table, config)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="feature error ε = d(B0, B⋆)",
        ylabel="OOD loss (median, IQR)",
        title=f"LP's OOD loss ∝ ε^{slope:.2f}; FT's does not vanish",
    )
    ax.legend(fontsize=8)
    eps, med, lo, hi = median_band(table["eps"], table["lp_over_ft"])
    ax_ratio.plot(eps, positive(med), marker="o", ms=3, color=COLORS["LP"])
    ax_ratio.fill_between(eps, positive(lo), positive(hi), color=COLORS["LP"], alpha=0.15, lw=0)
    ax_ratio.axhline(1.0, color=COLORS["bound"], lw=0.8)
    ax_ratio.set(
        xscale="log",
        yscale="log",
        xlabel="feature error ε",
        ylabel="OOD(LP) / OOD(FT)",
        title="LP / FT ratio → 0 as ε → 0",
    )
    return fig


def summarise(table, config: Config) -> str:
    eps, med, _, _ = median_band(table["eps"], table["lp_over_ft"])
    lines = [
        f"sweep_epsilon: {len(table['run'])} runs, ε from {eps[0]:.1e} to {eps[-1]:.2g}, {config.seeds} seeds",
        f"  fitted slope of log LP OOD vs log ε (ε ≤ {config.fit_max_eps:g}): {lp_slope(table, config):.3f} "
        "(theory: 2)",
        f"  median OOD(LP)/OOD(FT): {med[0]:.2e} at ε={eps[0]:.1e}, {med[-1]:.3g} at ε={eps[-1]:.2g}",
        f"  LP above our upper bound: {int(np.sum(table['lp_ood'] > table['lp_bound'] * (1 + 1e-9)))} runs",
        f"  solver failures: {failed_solves(table, 'ft_status')}",
    ]
    return "\n".join(lines)


def check(table, config: Config) -> list[str]:
    failures = []
    slope = lp_slope(table, config)
    if not 1.8 <= slope <= 2.2:
        failures.append(f"LP OOD slope {slope:.3f} is not ≈ 2")
    eps, med, _, _ = median_band(table["eps"], table["lp_over_ft"])
    if not med[0] < 1e-3 * med[-1]:
        failures.append("OOD(LP)/OOD(FT) does not fall towards 0 as ε → 0")
    if np.any(table["lp_ood"] > table["lp_bound"] * (1 + 1e-9)):
        failures.append("LP exceeds its upper bound")
    return failures


STUDY = Study("sweep_epsilon", __doc__, Config, compute, plot, summarise, check)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

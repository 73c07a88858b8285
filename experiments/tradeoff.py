"""When does each method win? A grid over feature error ε and distribution shift.

The shift is the share of Σ's per-direction weight on S⊥: `Σ = 2(1 − ρ) P_S + 2ρ P_{S⊥}`.
ρ → 0 makes OOD inputs look like ID ones; ρ → 1 puts them where the ID data never were. Heatmaps
of OOD(FT)/OOD(LP), ID(LP) − ID(FT) and OOD(LP-FT)/min(OOD(FT), OOD(LP)) (Kumar et al., ICLR
2022: LP wins OOD with good features, FT wins ID, LP-FT gets both).
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
from linprobe_theory.plotting import new_figure
from linprobe_theory.study_tools import CommonConfig, failed_solves, run_sweep


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    eps: tuple = field((1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0), "feature errors ε")
    shift: tuple = field((0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98), "ρ: share of Σ's weight on S⊥")
    seeds: int = field(3, "problems (random heads) per grid cell")

    @classmethod
    def quick(cls):
        return cls(d=40, m=10, n=20, eps=(1e-3, 0.1, 1.0), shift=(0.02, 0.5, 0.98), seeds=1)


def compute(config: Config, store, progress):
    spec = lt.ProblemSpec(d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage)
    base = jax.random.key(config.seed)
    cells = [(e, r, s) for e in config.eps for r in config.shift for s in range(config.seeds)]
    eps, shift, seed = (np.array(c) for c in zip(*cells, strict=True))
    params = {"eps": eps, "shift": shift, "seed": seed}

    def setup(p, key):
        problem = lt.make_problem(
            spec,
            key=jax.random.fold_in(base, p["seed"]),
            eps=p["eps"],
            ood_id_weight=2.0 * (1.0 - p["shift"]),
            ood_orth_weight=2.0 * p["shift"],
        )
        return problem, lt.random_head(problem, key=jax.random.fold_in(base, 10_000 + p["seed"]))

    def one_run(p, key):
        problem, v0 = setup(p, key)
        out = compare_methods(problem, v0, t_final=config.t_final, grad_tol=config.grad_tol)
        keep = (
            "ft_ood_final",
            "lp_ood",
            "lpft_ood_final",
            "ft_id_final",
            "lp_id",
            "lpft_id_final",
            "ft_status",
            "lpft_status",
        )
        return {name: out[name] for name in keep}

    out = run_sweep(one_run, params, key=base, config=config, store=store, progress=progress, setup=setup)
    table = {"run": np.arange(len(eps)), **params, **out}
    table["ood_ft_over_lp"] = table["ft_ood_final"] / table["lp_ood"]
    table["id_lp_minus_ft"] = table["lp_id"] - table["ft_id_final"]
    table["ood_lpft_over_best"] = table["lpft_ood_final"] / np.minimum(table["ft_ood_final"], table["lp_ood"])
    return table


def _grid(table, column, reduce=np.median):
    eps, shift = np.unique(table["eps"]), np.unique(table["shift"])
    values = np.array(
        [[reduce(table[column][(table["eps"] == e) & (table["shift"] == r)]) for e in eps] for r in shift]
    )
    return eps, shift, values


def plot(table, config: Config):
    fig, axes = new_figure(ncols=3, width=4.6, height=4.0)
    panels = (
        ("ood_ft_over_lp", "log10 OOD(FT) / OOD(LP)\n> 0: LP wins OOD", True, "RdBu_r"),
        ("id_lp_minus_ft", "log10 [ID(LP) − ID(FT)]\n(blank where ≤ 0: FT does not win ID)", True, "Greens"),
        (
            "ood_lpft_over_best",
            "log10 OOD(LP-FT) / min(OOD(FT), OOD(LP))\n≤ 0: LP-FT best OOD",
            True,
            "RdBu_r",
        ),
    )
    for ax, (column, title, log, cmap) in zip(axes[0], panels, strict=True):
        eps, shift, values = _grid(table, column)
        shown = np.log10(np.where(values > 0, values, np.nan)) if log else values
        limit = np.nanmax(np.abs(shown))
        kwargs = dict(vmin=-limit, vmax=limit) if cmap == "RdBu_r" else {}
        image = ax.imshow(shown, origin="lower", aspect="auto", cmap=cmap, **kwargs)
        for i in range(len(shift)):
            for j in range(len(eps)):
                ax.text(
                    j,
                    i,
                    f"{shown[i, j]:.1f}" if log else f"{shown[i, j]:.1e}",
                    ha="center",
                    va="center",
                    fontsize=6,
                )
        ax.set_xticks(range(len(eps)), [f"{e:g}" for e in eps], rotation=45, fontsize=7)
        ax.set_yticks(range(len(shift)), [f"{r:g}" for r in shift], fontsize=7)
        ax.set(xlabel="feature error ε", ylabel="shift ρ (Σ weight on S⊥)", title=title)
        ax.title.set_fontsize(9)
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def summarise(table, config: Config) -> str:
    cells = len(np.unique(table["eps"])) * len(np.unique(table["shift"]))
    _, _, ood = _grid(table, "ood_ft_over_lp")
    _, _, idd = _grid(table, "id_lp_minus_ft")
    _, _, both = _grid(table, "ood_lpft_over_best")
    return "\n".join(
        [
            f"tradeoff: {len(table['run'])} runs over {cells} cells (median over {config.seeds} seeds per cell)",
            f"  LP beats FT OOD in {int(np.sum(ood > 1))}/{cells} cells; FT beats LP ID in {int(np.sum(idd > 0))}/{cells}",
            f"  LP-FT within 10% of the best OOD method in {int(np.sum(both <= 1.1))}/{cells} cells "
            f"(median ratio {np.median(both):.3g})",
            f"  solver failures: {failed_solves(table, 'ft_status', 'lpft_status')}",
        ]
    )


STUDY = Study("tradeoff", __doc__, Config, compute, plot, summarise)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

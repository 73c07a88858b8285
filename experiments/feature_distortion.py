"""Feature distortion, the paper's Living-17 measurement, in the linear model.

Fine-tunes with FT and with LP-FT and measures how much the features `B x` move on fresh ID
inputs (in S) and on OOD inputs `x ~ N(0, Σ)`, split into the parts from `P_S x` and `P_{S⊥} x`.
Kumar et al. (ICLR 2022) report ResNet-50 features changing 0.0188 (ID) vs 0.0167 (OOD) under FT,
and about 18× less under LP-FT. In the linear model the S⊥ part is exactly zero, so OOD features
change only through their S component.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before numpy/jax load: sets OPENBLAS_NUM_THREADS
    import _prelude  # noqa: F401  (experiments/_prelude.py)

import dataclasses

import jax
import numpy as np

import linprobe_theory as lt
from linprobe_theory.comparison import log_time_grid
from linprobe_theory.experiment import Study, field
from linprobe_theory.plotting import COLORS, median_band, new_figure, positive
from linprobe_theory.studies import distortion_over_time
from linprobe_theory.study_tools import CommonConfig, run_sweep

PAPER = {"FT ID": 0.0188, "FT OOD": 0.0167, "LP-FT ID": 0.0011, "LP-FT OOD": 0.0009}
METRICS = ("ft_id", "ft_ood", "ft_ood_S", "ft_ood_perp", "lpft_id", "lpft_ood", "lpft_ood_S", "lpft_ood_perp")


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    # A CommonConfig field with this study's default (it keeps its place in the CLI).
    chunk_size: int = field(16, "runs per compiled batch")
    eps: float = field(0.05, "feature error d(B0, B⋆)")
    ood_id_weights: tuple = field((1.0, 0.5), "Σ's weight on S (its weight on S⊥ is 1): one setting each")
    seeds: int = field(6, "problems (random heads) per Σ setting")
    num_inputs: int = field(1024, "fresh ID and OOD inputs for the measurement")
    num_saves: int = field(40, "saved times (0 and a log grid)")

    @classmethod
    def quick(cls):
        return cls(d=40, m=10, n=20, seeds=2, num_inputs=256, num_saves=16)


def compute(config: Config, store, progress):
    spec = lt.ProblemSpec(
        d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage, eps=config.eps
    )
    base = jax.random.key(config.seed)
    weights = np.array(config.ood_id_weights, dtype=float)
    params = {
        "ood_id_weight": np.repeat(weights, config.seeds),
        "seed": np.tile(np.arange(config.seeds), len(weights)),
    }
    save_at = log_time_grid(config.t_final, config.num_saves)

    def one_run(p, key):
        problem = lt.make_problem(
            spec, key=jax.random.fold_in(base, p["seed"]), ood_id_weight=p["ood_id_weight"]
        )
        v0 = lt.random_head(problem, key=jax.random.fold_in(base, 10_000 + p["seed"]))
        out = distortion_over_time(
            problem,
            v0,
            key=key,
            save_at=save_at,
            t_final=config.t_final,
            num_inputs=config.num_inputs,
            grad_tol=config.grad_tol,
        )
        return {**out, "t": save_at}

    out = run_sweep(one_run, params, key=base, config=config, store=store, progress=progress)
    num_runs, num_t = out["t"].shape
    table = {
        "run": np.repeat(np.arange(num_runs), num_t),
        "seed": np.repeat(params["seed"], num_t),
        "ood_id_weight": np.repeat(params["ood_id_weight"], num_t),
        "t": out["t"].ravel(),
    }
    table.update({name: out[name].ravel() for name in METRICS})
    table["ft_status"] = np.repeat(out["ft_status"], num_t)
    table["lpft_status"] = np.repeat(out["lpft_status"], num_t)
    return table


def final_rows(table):
    last = np.concatenate([np.flatnonzero(table["run"] == r)[-1:] for r in np.unique(table["run"])])
    return {name: np.asarray(col)[last] for name, col in table.items()}


def plot(table, config: Config):
    fig, axes = new_figure(ncols=2, width=5.4)
    ax, ax_bar = axes[0]
    weights = np.unique(table["ood_id_weight"])
    w = weights[-1]
    sel = (table["ood_id_weight"] == w) & (table["t"] > 0)
    for name, column, color, ls in (
        ("FT, ID inputs", "ft_id", COLORS["FT"], "-"),
        ("FT, OOD inputs", "ft_ood", COLORS["FT"], "--"),
        ("LP-FT, ID inputs", "lpft_id", COLORS["LP-FT"], "-"),
        ("LP-FT, OOD inputs", "lpft_ood", COLORS["LP-FT"], "--"),
    ):
        t, med, lo, hi = median_band(table["t"][sel], table[column][sel])
        ax.plot(t, positive(med), ls, color=color, label=name)
        ax.fill_between(t, positive(lo), positive(hi), color=color, alpha=0.15, lw=0)
    perp = np.max(np.abs(table["ft_ood_perp"]))
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="time t",
        ylabel="feature change (mean sq. per coordinate)",
        title=f"Feature change over time (Σ weight on S: {w:g}; S⊥ part ≤ {perp:.0e})",
    )
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8)
    final = final_rows(table)
    labels, values, colors = [], [], []
    for wt in weights:
        s = final["ood_id_weight"] == wt
        for method, prefix, color in (("FT", "ft", COLORS["FT"]), ("LP-FT", "lpft", COLORS["LP-FT"])):
            for part in ("id", "ood_S"):
                labels.append(f"{method} {part.replace('_', ' ')}\n(Σ_S={wt:g})")
                values.append(np.median(final[f"{prefix}_{part}"][s]))
                colors.append(color)
    ax_bar.bar(range(len(values)), positive(values), color=colors)
    ax_bar.set_xticks(range(len(values)), labels, rotation=90, fontsize=6)
    ax_bar.set(
        yscale="log",
        ylabel="final feature change (median)",
        title=f"Final change: ID inputs vs OOD inputs\n(S⊥ part of the OOD change ≤ {perp:.0e}: round-off, "
        "0 in exact arithmetic)",
    )
    ax_bar.title.set_fontsize(9)
    return fig


def summarise(table, config: Config) -> str:
    final = final_rows(table)
    lines = [f"feature_distortion: {len(final['run'])} runs, ε={config.eps:g}, t_final={config.t_final:g}"]
    for w in np.unique(final["ood_id_weight"]):
        s = final["ood_id_weight"] == w
        med = {name: np.median(final[name][s]) for name in METRICS}
        lines.append(
            f"  Σ weight on S {w:g}: FT change ID {med['ft_id']:.3g} vs OOD {med['ft_ood']:.3g} "
            f"(S part {med['ft_ood_S']:.3g}, S⊥ part {med['ft_ood_perp']:.1e}); "
            f"LP-FT ID {med['lpft_id']:.3g} vs OOD {med['lpft_ood']:.3g}; "
            f"FT/LP-FT ratio ID {med['ft_id'] / med['lpft_id']:.3g}, OOD {med['ft_ood'] / med['lpft_ood']:.3g}"
        )
    lines.append(
        f"  paper (ResNet-50, Living-17): FT ID {PAPER['FT ID']} vs OOD {PAPER['FT OOD']}; LP-FT ID "
        f"{PAPER['LP-FT ID']} vs OOD {PAPER['LP-FT OOD']} (~{PAPER['FT ID'] / PAPER['LP-FT ID']:.0f}× smaller)"
    )
    lines.append(
        f"  max S⊥ part over all runs and times: {np.max(np.abs(table['ft_ood_perp'])):.2e} (FT), "
        f"{np.max(np.abs(table['lpft_ood_perp'])):.2e} (LP-FT)"
    )
    return "\n".join(lines)


def check(table, config: Config) -> list[str]:
    failures = []
    if max(np.max(np.abs(table["ft_ood_perp"])), np.max(np.abs(table["lpft_ood_perp"]))) > 1e-20:
        failures.append("features moved on S⊥ inputs")
    final = final_rows(table)
    if not np.median(final["ft_id"]) > np.median(final["lpft_id"]):
        failures.append("LP-FT distorted ID features more than FT")
    return failures


STUDY = Study("feature_distortion", __doc__, Config, compute, plot, summarise, check)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

"""Does a small feature learning rate recover LP-FT's OOD benefit, and at what ID cost?

FT with per-layer rates, `∂t v = −η_v ∇_v L̂`, `∂t B = −η_B ∇_B L̂`, for `η_B/η_v` on a log grid
(the faster layer at rate 1, the horizon scaled by the slower one's time scale), from zero and
random heads: OOD and ID risk at FT's best time and at the horizon (where it has converged), against LP and LP-FT run at
the same rates. As `η_B → 0` the head converges before the features move, so FT first acts as
LP and then fine-tunes from near LP's head, as LP-FT does; the study measures how close. The law it tests: the rate-weighted balancedness `η_B v vᵀ − η_v B Bᵀ` is conserved
(`v vᵀ/η_v − B Bᵀ/η_B` scaled), measured along every run.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before numpy/jax load: sets OPENBLAS_NUM_THREADS
    import _prelude  # noqa: F401  (experiments/_prelude.py)

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import linprobe_theory as lt
from linprobe_theory.experiment import Study, field
from linprobe_theory.plotting import COLORS, new_figure, plot_medians
from linprobe_theory.studies import select_head
from linprobe_theory.study_tools import CommonConfig, failed_solves, param_grid, run_sweep
from linprobe_theory.variant_comparison import compare_variant, make_risks

KEEP = [
    f"{m}_{q}"
    for m in ("ft", "lpft")
    for q in (
        "ood_final",
        "ood_min",
        "id_final",
        "id_at_ood_min",
        "t_ood_min",
        "status",
        "t_stop",
        "conserved_drift",
        "conserved_scale",
    )
] + ["lp_ood", "lp_id", "phi"]
HEADS = {1: "zero", 2: "random"}  # studies.HEAD_KINDS codes
# Integration error of the conserved quantity, relative to its size: rtol 1e-8 per step,
# accumulated over up to ~10⁵ steps on the longest horizons.
CONSERVED_RTOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    t_final: float = field(20.0, "horizon in units of the slower layer's time scale 1/min(η_v, η_B)")
    ratios: tuple = field(tuple(float(10.0**e) for e in np.arange(-3.0, 2.01, 0.5)), "η_B/η_v values")
    eps: tuple = field((0.01, 0.1), "feature errors ε")
    seeds: int = field(3, "problems per cell (each from the zero head and a random head)")
    num_saves: int = field(48, "saved times per run (0 and a log grid to the horizon)")
    max_steps: int = field(400_000, "solver step budget (small rates mean long horizons)")

    @classmethod
    def quick(cls):
        return cls(d=40, m=10, n=20, ratios=(1e-3, 1e-1, 1.0, 1e2), eps=(0.1,), seeds=1, num_saves=24)


def rates(ratio):
    """`(η_v, η_B)` with `η_B/η_v = ratio` and the faster layer at rate 1."""
    top = jnp.maximum(1.0, ratio)
    return 1.0 / top, ratio / top


def compute(config: Config, store, progress):
    spec = lt.ProblemSpec(d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage)
    base = jax.random.key(config.seed)
    rows = [
        (r, e, s, h) for r in config.ratios for e in config.eps for s in range(config.seeds) for h in HEADS
    ]
    params = param_grid(("ratio", "eps", "seed", "head_kind"), rows)

    def one_run(p, key):
        problem = lt.make_problem(spec, key=jax.random.fold_in(base, p["seed"]), eps=p["eps"])
        v0 = select_head(problem, p["head_kind"], 0.0, key=jax.random.fold_in(base, 10_000 + p["seed"]))
        eta_v, eta_B = rates(p["ratio"])
        out = compare_variant(
            problem,
            v0,
            risks=make_risks(problem),
            t_final=config.t_final / jnp.minimum(eta_v, eta_B),
            num_saves=config.num_saves,
            learning_rates=lt.LearningRates(eta_v, eta_B),
            # The flow's speed scales with the rates: the steady-state test must too.
            grad_tol=config.grad_tol * jnp.minimum(eta_v, eta_B),
            max_steps=config.max_steps,
        )
        return {name: out[name] for name in KEEP}

    out = run_sweep(one_run, params, key=base, config=config, store=store, progress=progress)
    table = {"run": np.arange(len(params["ratio"])), **params, **out}
    table["head"] = np.array([HEADS[int(h)] for h in params["head_kind"]])
    return table


def conserved_drift(table) -> np.ndarray:
    """Per run, the larger of FT's and LP-FT's max drift of `Q`, each relative to its `‖Q(0)‖`."""
    return np.maximum(
        table["ft_conserved_drift"] / table["ft_conserved_scale"],
        table["lpft_conserved_drift"] / table["lpft_conserved_scale"],
    )


def _median(table, column, mask):
    ratios = np.unique(table["ratio"])
    return ratios, np.array([np.median(table[column][mask & (table["ratio"] == r)]) for r in ratios])


def plot(table, config: Config):
    heads = [h for h in HEADS.values() if np.any(table["head"] == h)]
    fig, axes = new_figure(ncols=2, nrows=len(heads), width=5.0, height=3.6)
    for row, head in enumerate(heads):
        h = table["head"] == head
        ax_ood, ax_id = axes[row]
        ood_curves = (
            ("FT at the horizon", "ft_ood_final", "-o", COLORS["FT"]),
            ("FT at its best t", "ft_ood_min", "--s", COLORS["FT"]),
            ("LP-FT", "lpft_ood_final", "-^", COLORS["LP-FT"]),
            ("LP", "lp_ood", ":", COLORS["LP"]),
        )
        plot_medians(ax_ood, table, "ratio", h, ood_curves, ms=3)
        ax_ood.set(
            xscale="log",
            yscale="log",
            xlabel="η_B / η_v",
            ylabel="OOD loss (median)",
            title=f"OOD, {head} head",
        )
        id_curves = (
            ("FT at its best-OOD t", "ft_id_at_ood_min", "--s", COLORS["FT"]),
            ("FT at the horizon", "ft_id_final", "-o", COLORS["FT"]),
            ("LP", "lp_id", ":", COLORS["LP"]),
        )
        plot_medians(ax_id, table, "ratio", h, id_curves, ms=3)
        ax_id.set(
            xscale="log",
            yscale="log",
            xlabel="η_B / η_v",
            ylabel="ID loss (median)",
            title=f"ID, {head} head",
        )
        for ax in axes[row]:
            ax.axvline(1.0, color="0.8", lw=0.8)
            ax.legend(fontsize=7)
    return fig


def summarise(table, config: Config) -> str:
    lines = [
        f"layerwise_rates: {len(table['run'])} runs; medians over ε and seeds; horizon "
        f"{config.t_final:g}/min(η_v, η_B), where FT's ID loss is ≤ {np.max(table['ft_id_final']):.1e}"
    ]
    lo, hi = np.min(table["ratio"]), np.max(table["ratio"])
    for head in HEADS.values():
        h = table["head"] == head
        if not np.any(h):
            continue
        med = {c: dict(zip(*_median(table, c, h), strict=True)) for c in KEEP + ["lp_ood"]}
        lines.append(
            f"  {head} head: OOD(FT at the horizon) at η_B/η_v = {lo:g}: {med['ft_ood_final'][lo]:.3g}, at 1: "
            f"{med['ft_ood_final'].get(1.0, np.nan):.3g}, at {hi:g}: {med['ft_ood_final'][hi]:.3g}; "
            f"LP-FT {med['lpft_ood_final'][lo]:.3g} (rates {lo:g}) / {med['lpft_ood_final'].get(1.0, np.nan):.3g} (equal); "
            f"LP {med['lp_ood'][lo]:.3g}"
        )
        r_best = min(med["ft_ood_final"], key=med["ft_ood_final"].get)
        lines.append(
            f"    FT at the horizon is best OOD at η_B/η_v = {r_best:g}: {med['ft_ood_final'][r_best]:.3g} "
            f"(×{med['ft_ood_final'][r_best] / med['lpft_ood_final'].get(1.0, np.nan):.3g} of equal-rate LP-FT, "
            f"×{med['ft_ood_final'][r_best] / med['lp_ood'][r_best]:.3g} of LP), ID there {med['ft_id_final'][r_best]:.2g}"
        )
        ratio = (
            table["ft_ood_final"][h & (table["ratio"] == lo)]
            / table["lpft_ood_final"][h & (table["ratio"] == lo)]
        )
        lines.append(
            f"    at η_B/η_v = {lo:g}: OOD(FT)/OOD(LP-FT) median {np.median(ratio):.3g} (max {np.max(ratio):.3g}); "
            f"ID at FT's best-OOD time {med['ft_id_at_ood_min'][lo]:.3g} vs at the horizon {med['ft_id_final'][lo]:.2g}, LP {med['lp_id'][lo]:.3g}"
        )
    drift = conserved_drift(table)
    lines.append(
        f"  conserved η_B vvᵀ − η_v BBᵀ: max relative drift {np.max(drift):.2e}; "
        f"runs reaching steady state: FT {int(np.sum(table['ft_status'] == 1))}/{len(table['run'])}; "
        f"failures {failed_solves(table, 'ft_status', 'lpft_status')}"
    )
    return "\n".join(lines)


def check(table, config: Config) -> list[str]:
    """Fails when the rate-weighted balancedness drifts beyond integration error, or a solve failed."""
    failures = []
    drift = conserved_drift(table)
    if not np.max(drift) <= CONSERVED_RTOL:
        failures.append(f"η_B vvᵀ − η_v BBᵀ drifted by {np.max(drift):.2e} (relative) > {CONSERVED_RTOL:g}")
    if failed_solves(table, "ft_status", "lpft_status"):
        failures.append("some solves failed (status > 1)")
    return failures


STUDY = Study("layerwise_rates", __doc__, Config, compute, plot, summarise, check)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

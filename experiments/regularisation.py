"""Explicit regularisation: where does weight decay's shrinking of S⊥ features hurt OOD, and does
L2-SP help FT OOD?

FT and LP-FT with weight decay `μ‖B‖²` on the features alone, `μ(‖v‖² + ‖B‖²)` on both layers,
or L2-SP `λ‖B − B0‖²` (penalties as written, no ½), for λ on a log grid, from zero and random
heads: OOD and ID loss at the horizon, against the unregularised flows and LP (ridge regression
when the head is penalised). The laws it tests: L2-SP keeps `B x = B0 x` for `x ∈ S⊥`; weight
decay scales them exactly, `B(t) x = s(t) B0 x` with `s(t) = e^{−2μ t}` (both measured in full
coordinates on a subset of runs; the sweep itself runs in exact reduced coordinates).
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
from linprobe_theory.objectives import perp_scale
from linprobe_theory.plotting import COLORS, new_figure, positive
from linprobe_theory.studies import select_head
from linprobe_theory.study_tools import CommonConfig, failed_solves, param_grid, run_sweep
from linprobe_theory.variant_comparison import compare_variant, make_risks

KINDS = ("none", "weight_decay_B", "weight_decay_both", "l2sp")


def regularizer(kind, lam):
    """The penalty of `KINDS[kind]` with strength `lam`, as one sum whose other terms have
    strength 0 — so every kind (and λ, both traceable) shares one compiled sweep."""
    on = [jnp.where(kind == i, lam, 0.0) for i in range(len(KINDS))]
    return [lt.WeightDecay(on[1], on="B"), lt.WeightDecay(on[2], on="both"), lt.L2SP(on[3])]


LABELS = {
    "weight_decay_B": "weight decay on B",
    "weight_decay_both": "weight decay on v and B",
    "l2sp": "L2-SP",
}
HEADS = {1: "zero", 2: "random"}
KEEP = [
    f"{m}_{q}"
    for m in ("ft", "lpft")
    for q in ("ood_final", "ood_min", "id_final", "status", "perp_residual")
] + ["lp_ood", "lp_id", "phi"]
# Full coordinates integrate the S⊥ decay ∂t(B P_{S⊥}) = −2μ B P_{S⊥} numerically, with local
# error control at rtol 1e-8, relative to ‖B0 P_{S⊥}‖ (measured: ≤ 3e-11).
PERP_RTOL = 1e-8


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    t_final: float = field(50.0, "integration horizon (runs stop earlier at steady state)")
    lams: tuple = field(tuple(float(10.0**e) for e in np.arange(-4.0, 0.01, 0.5)), "penalty strengths λ (μ)")
    kinds: tuple = field(("weight_decay_B", "weight_decay_both", "l2sp"), f"regularisers, of {KINDS[1:]}")
    eps: float = field(0.1, "feature error ε")
    seeds: int = field(3, "problems (each from the zero head and a random head)")
    full_checks: int = field(1, "seeds whose random-head runs are repeated in full coordinates (the S⊥ law)")

    @classmethod
    def quick(cls):
        return cls(d=40, m=10, n=20, lams=(1e-3, 1e-1, 1.0), seeds=1)


def _setup(config: Config):
    spec = lt.ProblemSpec(d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage)
    base = jax.random.key(config.seed)

    def setup(p):
        problem = lt.make_problem(spec, key=jax.random.fold_in(base, p["seed"]), eps=config.eps)
        v0 = select_head(problem, p["head_kind"], 0.0, key=jax.random.fold_in(base, 10_000 + p["seed"]))
        return problem, v0

    return setup


def _sweep(config: Config, params, coordinates: str, store, progress):
    setup = _setup(config)
    base = jax.random.key(config.seed)

    def one_run(p, key):
        problem, v0 = setup(p)
        out = compare_variant(
            problem,
            v0,
            risks=make_risks(problem),
            t_final=config.t_final,
            regularizer=regularizer(p["kind_code"], p["lam"]),
            coordinates=coordinates,
            grad_tol=config.grad_tol,
        )
        B0_perp = problem.B0 - (problem.B0 @ problem.Q_S) @ problem.Q_S.T
        return {name: out[name] for name in KEEP} | {"perp_norm": jnp.linalg.norm(B0_perp)}

    sub = None if store is None else store.substore(coordinates)
    out = run_sweep(one_run, params, key=base, config=config, store=sub, progress=progress)
    size = len(params["lam"])
    return {"coordinates": np.array([coordinates] * size), **params, **out}


def _params(cells, seeds, heads):
    rows = [(KINDS.index(kind), lam, s, h) for kind, lam in cells for s in seeds for h in heads]
    return param_grid(("kind_code", "lam", "seed", "head_kind"), rows)


def compute(config: Config, store, progress):
    unknown = set(config.kinds) - set(KINDS[1:])
    if unknown:
        raise ValueError(f"kinds={config.kinds}: unknown {sorted(unknown)}; choose from {KINDS[1:]}")
    cells = [("none", 0.0)] + [(kind, lam) for kind in config.kinds for lam in config.lams]
    checks = range(min(config.full_checks, config.seeds))
    parts = [
        _sweep(config, _params(cells, range(config.seeds), HEADS), "reduced", store, progress),
        _sweep(config, _params(cells[1:], checks, [2]), "full", store, progress),
    ]
    table = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    table["run"] = np.arange(len(table["lam"]))
    table["kind"] = np.array([KINDS[int(c)] for c in table["kind_code"]])
    table["head"] = np.array([HEADS[int(h)] for h in table["head_kind"]])
    # The exact S⊥ scale at the horizon (1 for L2-SP; e^{−2μT} for weight decay).
    table["perp_scale_final"] = np.array(
        [
            float(perp_scale(lt.make_flow(regularizer=regularizer(c, lam)).regularizers, 1.0, config.t_final))
            for c, lam in zip(table["kind_code"], table["lam"], strict=True)
        ]
    )
    return table


def _curve(table, kind, column, head):
    rows = (table["kind"] == kind) & (table["coordinates"] == "reduced") & (table["head"] == head)
    lams = np.unique(table["lam"][rows])
    return lams, np.array([np.median(table[column][rows & (table["lam"] == lam)]) for lam in lams])


def _baseline(table, column, head):
    rows = (table["kind"] == "none") & (table["head"] == head)
    return float(np.median(table[column][rows]))


def plot(table, config: Config):
    heads = [h for h in HEADS.values() if np.any(table["head"] == h)]
    fig, axes = new_figure(ncols=len(config.kinds), nrows=2 * len(heads), width=4.2, height=3.0)
    for h, head in enumerate(heads):
        for j, kind in enumerate(config.kinds):
            for row, (what, columns) in enumerate(
                (
                    ("OOD", ("ft_ood_final", "lpft_ood_final", "lp_ood")),
                    ("ID", ("ft_id_final", "lpft_id_final", "lp_id")),
                )
            ):
                ax = axes[2 * h + row][j]
                for column, label in zip(columns, ("FT", "LP-FT", "LP"), strict=True):
                    lams, y = _curve(table, kind, column, head)
                    ax.plot(lams, positive(y), "-o", ms=3, color=COLORS[label], label=label)
                    ax.axhline(_baseline(table, column, head), color=COLORS[label], ls=":", lw=0.9)
                ax.set(
                    xscale="log",
                    yscale="log",
                    xlabel="λ",
                    ylabel=f"{what} loss at t = {config.t_final:g} (median)",
                    title=f"{LABELS[kind]}, {head} head (dotted: λ = 0)",
                )
                ax.title.set_fontsize(8)
                ax.legend(fontsize=7)
    return fig


def summarise(table, config: Config) -> str:
    lines = [
        f"regularisation: {len(table['run'])} runs (ε = {config.eps:g}, horizon t = {config.t_final:g}); medians"
    ]
    for head in HEADS.values():
        if not np.any(table["head"] == head):
            continue
        base_ft, base_lpft = _baseline(table, "ft_ood_final", head), _baseline(table, "lpft_ood_final", head)
        lines.append(
            f"  {head} head, λ = 0: OOD FT {base_ft:.3g}, LP-FT {base_lpft:.3g}, LP {_baseline(table, 'lp_ood', head):.3g}"
        )
        for kind in config.kinds:
            lams, ft = _curve(table, kind, "ft_ood_final", head)
            _, lpft = _curve(table, kind, "lpft_ood_final", head)
            _, ft_id = _curve(table, kind, "ft_id_final", head)
            hurt = lams[ft > 1.1 * base_ft]
            scale = dict(
                zip(
                    table["lam"][table["kind"] == kind],
                    table["perp_scale_final"][table["kind"] == kind],
                    strict=True,
                )
            )
            worse = (
                f"FT OOD first > 1.1× unregularised at λ = {hurt[0]:g} (S⊥ scale s(T) = {scale[hurt[0]]:.3g})"
                if hurt.size
                else "FT OOD never 10% worse"
            )
            lines.append(
                f"    {LABELS[kind]:>24}: best FT OOD {np.min(ft):.3g} at λ = {lams[np.argmin(ft)]:g} "
                f"(×{np.min(ft) / base_ft:.3g} of λ = 0; ID there {ft_id[np.argmin(ft)]:.2g}); best LP-FT OOD {np.min(lpft):.3g}; {worse}"
            )
    full = table["coordinates"] == "full"
    rel = np.maximum(table["ft_perp_residual"], table["lpft_perp_residual"])[full] / table["perp_norm"][full]
    lines.append(
        f"  S⊥ law in full coordinates ({int(full.sum())} runs): max ‖(B − s(t)B0)P_S⊥‖/‖B0 P_S⊥‖ = {np.max(rel):.2e}; "
        f"failures {failed_solves(table, 'ft_status', 'lpft_status')}"
    )
    return "\n".join(lines)


def check(table, config: Config) -> list[str]:
    """Fails when the S⊥ features leave `s(t) B0 P_{S⊥}` in full coordinates, or a solve failed."""
    failures = []
    full = table["coordinates"] == "full"
    rel = np.maximum(table["ft_perp_residual"], table["lpft_perp_residual"])[full] / table["perp_norm"][full]
    if rel.size and not np.max(rel) <= PERP_RTOL:
        failures.append(f"S⊥ features left s(t)·B0: relative residual {np.max(rel):.2e} > {PERP_RTOL:g}")
    if failed_solves(table, "ft_status", "lpft_status"):
        failures.append("some solves failed (status > 1)")
    return failures


STUDY = Study("regularisation", __doc__, Config, compute, plot, summarise, check)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

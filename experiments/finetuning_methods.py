"""Fine-tuning methods beyond FT, LP and LP-FT: which ones keep LP's OOD advantage?

Four parts, on the same problems (linear model, zero and random heads) unless said:
(a) WiSE-FT, the weights `(1 − α)(v_lp, B0) + α(v_ft, B_ft)` for α ∈ [0, 1]. Law: the OOD loss
    along the path is the exact quartic `e(α)ᵀ Σ e(α)`, `e = e0 + α e1 + α² e2`
    (`linprobe_theory.interpolation`); the sweep of `losses.ood_loss` must match it to round-off.
(b) LP-FT with the LP phase stopped at τ (in units of LP's slowest time constant
    `t_lp = 1/(2 λ_min(AᵀA))`, `A = X B0ᵀ`), then FT to convergence. τ = 0 is FT; τ → ∞ must
    reproduce LP-FT, and LP's residual `‖v_lp(τ) − v_lp‖` and training-loss gap must fall with τ.
(c) FT of the features under the frozen LP head, `learning_rates=(0, 1)`. Laws: the head stays
    exactly `v_lp`, and since `B x` is fixed on S⊥ the S⊥ part of the error is LP's, so
    `L_ood − w_S L_id` (`Σ = w_S P_S + w_⊥ P_{S⊥}`) stays LP's to round-off.
(d) The logistic loss: OOD 0–1 error of FT, LP and LP-FT at a finite t_final against ε and φ.
    Law: S⊥ invariance (checked in full coordinates).
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before numpy/jax load: sets OPENBLAS_NUM_THREADS
    import _prelude  # noqa: F401  (experiments/_prelude.py)

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

import linprobe_theory as lt
from linprobe_theory import interpolation as ip
from linprobe_theory import losses
from linprobe_theory.experiment import Study, field
from linprobe_theory.ood import ood_inputs, ood_zero_one_error
from linprobe_theory.plotting import COLORS, median_band, new_figure, positive
from linprobe_theory.studies import HEAD_KINDS, select_head
from linprobe_theory.study_tools import CommonConfig, failed_solves, run_sweep

METHODS_C = ("FT", "LP", "LP-FT", "FT-frozen-head")
METHODS_D = ("FT", "LP", "LP-FT")
FROZEN_COLOR = "#7b2cbf"
SHADES = ["#1d4ed8", "#2a9d8f", "#8ab17d", "#e76f51", "#d1495b", "#7b2cbf", "#8d6e63"]
WISE_RTOL = 1e-10  # quartic vs losses.ood_loss: both are sums of O(scale) terms in float64
TAU_RTOL = 1e-6  # τ_max vs LP-FT: two FT solves (rtol 1e-8) from heads e^{−τ_max} apart
FROZEN_RTOL = 1e-10  # exact invariances of the frozen-head flow, up to round-off
DRIFT_TOL = 1e-10  # S⊥ drift in full coordinates, round-off
ID_FLOOR = 1e-7  # panel c: converged ID losses (~1e-17, round-off) are drawn here


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    t_final: float = field(50.0, "FT horizon, parts a–c (runs stop earlier at steady state)")
    eps: tuple = field((0.01, 0.03, 0.1, 0.3, 1.0), "feature errors ε (every part)")
    seeds: int = field(3, "problems per ε in parts a–c, each from the zero and a random head")
    num_alpha: int = field(21, "WiSE-FT mixing weights α, equally spaced in [0, 1]")
    tau_min: float = field(1e-3, "shortest LP phase, in units of t_lp = 1/(2 λ_min(AᵀA))")
    tau_max: float = field(100.0, "longest LP phase (units of t_lp); ≥ 30 for the τ → ∞ check")
    num_tau: int = field(16, "LP phase lengths τ, log-spaced in [tau_min, tau_max]")
    logistic_seeds: int = field(6, "problems per ε in part d, each from the zero and a random head")
    logistic_t_final: float = field(20.0, "logistic horizon (no steady state: reported at this t)")
    num_ood_inputs: int = field(4000, "fixed OOD sample x ~ N(0, Σ) for the 0–1 error")
    full_saves: int = field(5, "saved times of the full-coordinate logistic runs (S⊥ drift at each)")

    @classmethod
    def quick(cls):
        return cls(
            d=40,
            m=10,
            n=20,
            t_final=30.0,
            eps=(0.01, 0.3),
            seeds=1,
            num_alpha=11,
            num_tau=6,
            logistic_seeds=1,
            logistic_t_final=10.0,
            num_ood_inputs=1000,
            full_saves=3,
        )


def tau_grid(config: Config) -> np.ndarray:
    """LP phase lengths in units of t_lp: 0 (FT), the log grid, ∞ (LP-FT, the closed-form head)."""
    grid = np.geomspace(config.tau_min, config.tau_max, config.num_tau)
    return np.concatenate([[0.0], grid, [np.inf]])


def _spec(config: Config):
    return lt.ProblemSpec(d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage)


def _params(config: Config, seeds: int) -> dict[str, np.ndarray]:
    rows = [(e, s, kind) for e in config.eps for s in range(seeds) for kind in (1, 2)]  # zero, random
    eps, seed, kind = (np.array(c) for c in zip(*rows, strict=True))
    return {"eps": eps.astype(float), "seed": seed, "head_kind": kind}


def _setup(config: Config):
    spec, base = _spec(config), jax.random.key(config.seed)

    def setup(p, key):
        # One problem (data, frames) and one random head per seed, whatever ε: only B0 moves.
        problem = lt.make_problem(spec, key=jax.random.fold_in(base, p["seed"]), eps=p["eps"])
        head_key = jax.random.fold_in(base, 10_000 + p["seed"])
        return problem, select_head(problem, p["head_kind"], 0.0, key=head_key)

    return setup


def _squared_parts(config: Config, store, progress):
    """Parts a–c: one vmapped FT solve per problem from every head they need."""
    setup = _setup(config)
    grid = tau_grid(config)[1:-1]
    alphas = jnp.linspace(0.0, 1.0, config.num_alpha)
    num_tau = len(grid)

    def one_run(p, key):
        problem, v0 = setup(p, key)
        A = problem.X @ problem.B0.T
        t_lp = 0.5 / jnp.linalg.eigvalsh(A.T @ A)[0]
        # (b) the LP flow itself, saved at each τ; no steady-state stop, so v_lp(τ) is the flow's.
        times = t_lp * jnp.asarray(grid)
        lp = lt.linear_probe(problem, v0, t_final=times[-1], save_at=times, grad_tol=None, check=False)
        v_lp = lt.linear_probe_solution(problem, v0)
        # Heads: v0 (FT, τ = 0), v_lp(τ) (early-stopped LP-FT), v_lp (LP-FT, τ = ∞), v_lp frozen.
        heads = jnp.concatenate([v0[None], lp.v, v_lp[None], v_lp[None]])
        rates = jnp.ones((num_tau + 3, 2)).at[-1, 0].set(0.0)

        def ft(v, r):
            return lt.fine_tune(
                problem,
                v,
                t_final=config.t_final,
                grad_tol=config.grad_tol,
                learning_rates=(r[0], r[1]),
                check=False,
            )

        runs = jax.vmap(ft)(heads, rates)
        v_end, B_end = runs.v[:, -1], runs.B[:, -1]
        B0 = problem.B0
        # (a) WiSE-FT between LP (v_lp, B0) and FT's end state.
        v_ft, B_ft = v_end[0], B_end[0]
        v_a, B_a = ip.interpolate(v_lp, B0, v_ft, B_ft, alphas)
        c_ood = ip.ood_quartic(problem, v_lp, B0, v_ft, B_ft)
        c_id = ip.id_quartic(problem, v_lp, B0, v_ft, B_ft)
        a_best, ood_best = ip.quartic_minimum(c_ood)
        a_id_best, id_best = ip.quartic_minimum(c_id)
        # (b) τ = 0, the grid, ∞.
        b_heads = heads[: num_tau + 2]
        train = losses.train_loss(problem, b_heads, jnp.broadcast_to(B0, (num_tau + 2,) + B0.shape))
        # (c) FT, LP, LP-FT, frozen head.
        v_c = jnp.stack([v_end[0], v_lp, v_end[num_tau + 1], v_end[-1]])
        B_c = jnp.stack([B_end[0], B0, B_end[num_tau + 1], B_end[-1]])
        return {
            "phi": lt.head_alignment_error(problem, v0),
            "t_lp": t_lp,
            "a_ood": losses.ood_loss(problem, v_a, B_a),
            "a_id": losses.id_loss(problem, v_a, B_a),
            "a_ood_quartic": ip.quartic_value(c_ood, alphas),
            "a_id_quartic": ip.quartic_value(c_id, alphas),
            "a_ood_scale": ip.quartic_scale(c_ood, alphas),
            "a_id_scale": ip.quartic_scale(c_id, alphas),
            "a_coeffs": c_ood,
            "a_alpha_best": a_best,
            "a_ood_best": ood_best,
            "a_id_alpha_best": a_id_best,
            "a_id_best": id_best,
            "b_ood": losses.ood_loss(problem, v_end[: num_tau + 2], B_end[: num_tau + 2]),
            "b_id": losses.id_loss(problem, v_end[: num_tau + 2], B_end[: num_tau + 2]),
            "b_residual": jnp.linalg.norm(b_heads - v_lp, axis=-1),
            "b_gap": train - losses.train_loss(problem, v_lp, B0),
            "b_status": runs.status[: num_tau + 2].at[1:-1].max(lp.status),
            "c_ood": losses.ood_loss(problem, v_c, B_c),
            "c_id": losses.id_loss(problem, v_c, B_c),
            "c_train": losses.train_loss(problem, v_c, B_c),
            "c_status": jnp.stack(
                [runs.status[0], 0 * runs.status[0], runs.status[num_tau + 1], runs.status[-1]]
            ),
            "c_head_drift": jnp.max(jnp.abs(runs.v[-1] - v_lp)),
        }

    params = _params(config, config.seeds)
    sub = None if store is None else store.substore("squared")
    base = jax.random.key(config.seed)
    out = run_sweep(one_run, params, key=base, config=config, store=sub, progress=progress, setup=setup)
    return params, out


def _logistic_part(config: Config, store, progress):
    """Part d: FT, LP and LP-FT on the logistic loss, reduced and full coordinates."""
    setup = _setup(config)
    base = jax.random.key(config.seed)
    kw = dict(t_final=config.logistic_t_final, grad_tol=None, loss="logistic", check=False)
    saves = jnp.linspace(0.0, config.logistic_t_final, config.full_saves)

    def one_run(p, key):
        problem, v0 = setup(p, key)
        # LP-FT for the logistic loss: FT from the LP flow's state at t_final (as `lt.lp_ft`).
        lp = lt.linear_probe(problem, v0, **kw)
        v_lp = lp.v[-1]
        heads = jnp.stack([v0, v_lp])
        red = jax.vmap(lambda v: lt.fine_tune(problem, v, **kw))(heads)
        full = jax.vmap(lambda v: lt.fine_tune(problem, v, coordinates="full", save_at=saves, **kw))(heads)
        x = ood_inputs(problem, jax.random.fold_in(base, 30_000 + p["seed"]), config.num_ood_inputs)
        v_m = jnp.stack([red.v[0, -1], v_lp, red.v[1, -1]])
        B_m = jnp.stack([red.B[0, -1], problem.B0, red.B[1, -1]])
        v_f = jnp.stack([full.v[0, -1], v_lp, full.v[1, -1]])
        B_f = jnp.stack([full.B[0, -1], problem.B0, full.B[1, -1]])
        drift = jnp.max(lt.orthogonal_drift(problem, full.B), axis=-1)
        return {
            "phi": lt.head_alignment_error(problem, v0),
            "d_01": ood_zero_one_error(problem, v_m, B_m, inputs=x),
            "d_01_full": ood_zero_one_error(problem, v_f, B_f, inputs=x),
            "d_full_vs_reduced": jnp.max(jnp.abs(v_f - v_m), axis=-1),
            "d_drift": jnp.stack([drift[0], 0.0 * drift[0], drift[1]]),
            # LP-FT fails if either of its phases does.
            "d_status": jnp.stack([red.status[0], lp.status, jnp.maximum(lp.status, red.status[1])]),
        }

    params = _params(config, config.logistic_seeds)
    sub = None if store is None else store.substore("logistic")
    out = run_sweep(one_run, params, key=base, config=config, store=sub, progress=progress)
    return params, out


def _rows(part, run, params, per_run, per_row, labels, nan_columns):
    """Long rows for one part: each run repeated over its `labels` (α, τ or method)."""
    num = len(labels)
    rows = {"part": np.full(len(run) * num, part, dtype=object), "run": np.repeat(run, num)}
    for name, values in {**params, **per_run}.items():
        rows[name] = np.repeat(np.asarray(values), num)
    for name, values in per_row.items():
        rows[name] = np.asarray(values, dtype=float).reshape(-1)
    rows["label"] = np.tile(np.asarray(labels), len(run))
    for name in nan_columns:
        rows.setdefault(name, np.full(len(run) * num, np.nan))
    return rows


COLUMNS = (
    "alpha",
    "tau",
    "tau_time",
    "ood",
    "id",
    "train",
    "ood_quartic",
    "id_quartic",
    "ood_scale",
    "id_scale",
    "c0",
    "c1",
    "c2",
    "c3",
    "c4",
    "alpha_best",
    "ood_best",
    "id_alpha_best",
    "id_best",
    "lp_residual",
    "lp_gap",
    "head_drift",
    "ood_01",
    "ood_01_full",
    "full_vs_reduced",
    "orth_drift",
    "status",
)


def compute(config: Config, store, progress):
    params, out = _squared_parts(config, store, progress)
    num_runs = len(params["eps"])
    run = np.arange(num_runs)
    alphas = np.linspace(0.0, 1.0, config.num_alpha)
    taus = tau_grid(config)
    common = {"phi": out["phi"], "t_lp": out["t_lp"]}
    coeffs = {f"c{p}": out["a_coeffs"][:, p] for p in range(5)}
    a = _rows(
        "a",
        run,
        params,
        {**common, **coeffs}
        | {
            "alpha_best": out["a_alpha_best"],
            "ood_best": out["a_ood_best"],
            "id_alpha_best": out["a_id_alpha_best"],
            "id_best": out["a_id_best"],
        },
        {
            "alpha": np.tile(alphas, num_runs),
            "ood": out["a_ood"],
            "id": out["a_id"],
            "ood_quartic": out["a_ood_quartic"],
            "id_quartic": out["a_id_quartic"],
            "ood_scale": out["a_ood_scale"],
            "id_scale": out["a_id_scale"],
        },
        [f"{x:.3g}" for x in alphas],
        COLUMNS,
    )
    b = _rows(
        "b",
        run,
        params,
        common,
        {
            "tau": np.tile(taus, num_runs),
            "tau_time": np.outer(out["t_lp"], taus),
            "ood": out["b_ood"],
            "id": out["b_id"],
            "lp_residual": out["b_residual"],
            "lp_gap": out["b_gap"],
            "status": out["b_status"],
        },
        ["FT"] + [f"tau={x:.3g}" for x in taus[1:-1]] + ["LP-FT"],
        COLUMNS,
    )
    c = _rows(
        "c",
        run,
        params,
        common,
        {
            "ood": out["c_ood"],
            "id": out["c_id"],
            "train": out["c_train"],
            "status": out["c_status"],
            "head_drift": np.outer(out["c_head_drift"], [np.nan, np.nan, np.nan, 1.0]),
        },
        list(METHODS_C),
        COLUMNS,
    )
    d_params, d_out = _logistic_part(config, store, progress)
    d_run = num_runs + np.arange(len(d_params["eps"]))
    d = _rows(
        "d",
        d_run,
        d_params,
        {"phi": d_out["phi"], "t_lp": np.full(len(d_run), np.nan)},
        {
            "ood_01": d_out["d_01"],
            "ood_01_full": d_out["d_01_full"],
            "full_vs_reduced": d_out["d_full_vs_reduced"],
            "orth_drift": np.where(np.arange(3) == 1, np.nan, d_out["d_drift"]),
            "status": d_out["d_status"],
        },
        list(METHODS_D),
        COLUMNS,
    )
    names = ["part", "run", "eps", "seed", "head_kind", "phi", "t_lp", "label", *COLUMNS]
    table = {name: np.concatenate([part[name] for part in (a, b, c, d)]) for name in names}
    table["head"] = np.array([HEAD_KINDS[int(i)] for i in table["head_kind"]], dtype=object)
    table["method"] = table.pop("label")
    return table


def _part(table, name):
    s = table["part"] == name
    return {key: values[s] for key, values in table.items()}


def _per_run(part, column):
    """`column`'s value in each run (first row) and the runs in order."""
    runs, first = np.unique(part["run"], return_index=True)
    return runs, part[column][first]


def _series(part, column, run):
    return part[column][part["run"] == run]


def _shown_runs(part, config: Config):
    """The runs drawn in panels a and b: seed 0, random head, one per ε."""
    runs = []
    for e in np.unique(part["eps"]):
        s = (part["eps"] == e) & (part["seed"] == 0) & (part["head"] == "random")
        if s.any():
            runs.append((e, part["run"][s][0]))
    return runs


def plot(table, config: Config):
    fig, axes = new_figure(ncols=2, nrows=2, width=5.6, height=4.3)
    ax_a, ax_b = axes[0]
    ax_c, ax_d = axes[1]

    a = _part(table, "a")
    dense = np.linspace(0.0, 1.0, 201)
    for i, (e, r) in enumerate(_shown_runs(a, config)):
        color = SHADES[i % len(SHADES)]
        s = a["run"] == r
        c = [a[f"c{p}"][s][0] for p in range(5)]
        line = sum(c[p] * dense**p for p in range(5))
        ax_a.plot(dense, positive(line), color=color, lw=1.2, label=f"quartic, ε={e:g}")
        ax_a.scatter(a["alpha"][s], positive(a["ood"][s]), color=color, s=14, zorder=3)
        ax_a.scatter(
            a["alpha_best"][s][0], positive(a["ood_best"][s][0]), color=color, marker="*", s=90, zorder=4
        )
    ax_a.scatter([], [], color="#555", s=14, label="ood_loss at the swept α")
    ax_a.scatter([], [], color="#555", marker="*", s=90, label="best α (quartic)")
    ax_a.set(
        yscale="log",
        xlabel="mixing weight α  (0: LP (v_lp, B0), 1: FT's end state)",
        ylabel="OOD loss",
        title="(a) WiSE-FT: OOD loss along the weight interpolation",
    )
    ax_a.legend(fontsize=7)

    b = _part(table, "b")
    for i, (e, r) in enumerate(_shown_runs(b, config)):
        color = SHADES[i % len(SHADES)]
        s = b["run"] == r
        tau, ood = b["tau"][s], b["ood"][s]
        finite = (tau > 0) & np.isfinite(tau)
        ax_b.plot(tau[finite], positive(ood[finite]), color=color, marker="o", ms=3, lw=1.2, label=f"ε={e:g}")
        ax_b.axhline(positive(ood[tau == 0][0]), color=color, ls="--", lw=0.8)
        ax_b.axhline(positive(ood[np.isinf(tau)][0]), color=color, ls=":", lw=1.0)
    ax_b.plot([], [], color="#555", ls="--", lw=0.8, label="FT (τ = 0)")
    ax_b.plot([], [], color="#555", ls=":", lw=1.0, label="LP-FT (τ = ∞)")
    ax_b.set(
        xscale="log",
        yscale="log",
        xlabel="LP phase τ / t_lp  (t_lp = 1/(2 λ_min(AᵀA)))",
        ylabel="OOD loss after FT to convergence",
        title="(b) LP-FT with the LP phase stopped at τ",
    )
    ax_b.legend(fontsize=7, ncol=2)

    c = _part(table, "c")
    colors = [COLORS["FT"], COLORS["LP"], COLORS["LP-FT"], FROZEN_COLOR]
    rng = np.random.default_rng(0)
    for j, (method, color) in enumerate(zip(METHODS_C, colors, strict=True)):
        s = c["method"] == method
        jitter = rng.uniform(-0.12, 0.12, int(s.sum()))
        ax_c.scatter(j - 0.18 + jitter, positive(c["ood"][s]), color=color, s=12, alpha=0.8)
        ax_c.scatter(
            j + 0.18 + jitter, np.maximum(c["id"][s], ID_FLOOR), facecolors="none", edgecolors=color, s=12
        )
        ax_c.hlines(np.median(c["ood"][s]), j - 0.32, j - 0.04, color="k", lw=1.5)
    ax_c.scatter([], [], color="#555", s=12, label="OOD loss")
    ax_c.scatter(
        [],
        [],
        facecolors="none",
        edgecolors="#555",
        s=12,
        label=f"ID loss (below {ID_FLOOR:g}: drawn at {ID_FLOOR:g})",
    )
    ax_c.set_xticks(range(len(METHODS_C)), ["FT", "LP", "LP-FT", "FT, head\nfrozen at v_lp"])
    ax_c.set(
        yscale="log",
        ylabel="loss at convergence",
        title="(c) Features-only FT after LP (all runs; bar: median OOD)",
    )
    ax_c.legend(fontsize=7, loc="center", bbox_to_anchor=(0.5, 0.2))

    d = _part(table, "d")
    for method in METHODS_D:
        s = d["method"] == method
        xs, med, lo, hi = median_band(d["eps"][s], d["ood_01"][s])
        ax_d.plot(xs, med, color=COLORS[method], marker="o", ms=4, label=method)
        ax_d.fill_between(xs, lo, hi, color=COLORS[method], alpha=0.2)
    ax_d.set(
        xscale="log",
        xlabel="feature error ε",
        ylabel=f"OOD 0–1 error at t = {config.logistic_t_final:g}",
        title="(d) Logistic loss: OOD 0–1 error (median, IQR)",
    )
    ax_d.legend(fontsize=8)
    for ax in (ax_a, ax_b, ax_c, ax_d):
        ax.title.set_fontsize(10)
    return fig


def _ranks(x):
    """Ranks with ties averaged; values equal to 12 significant digits tie (every zero head has
    φ = ‖v⋆‖² = 1 up to round-off)."""
    x = np.array([float(f"{value:.12g}") for value in x])
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        ranks[x == value] = ranks[x == value].mean()
    return ranks


def _spearman(x, y):
    """Spearman's rank correlation (average ranks for ties)."""
    if len(x) < 3:
        return float("nan")
    return float(np.corrcoef(_ranks(x), _ranks(y))[0, 1])


def wise_stats(table):
    """Per run of part a: the sweep-vs-quartic error and whether an interior α beats both ends."""
    a = _part(table, "a")
    runs, eps = _per_run(a, "eps")
    out = {"run": runs, "eps": eps}
    for loss in ("ood", "id"):
        rel = np.abs(a[loss] - a[f"{loss}_quartic"]) / np.maximum(a[f"{loss}_scale"], 1e-300)
        ends = np.array([[_series(a, loss, r)[0], _series(a, loss, r)[-1]] for r in runs])
        best_col = "ood_best" if loss == "ood" else "id_best"
        alpha_col = "alpha_best" if loss == "ood" else "id_alpha_best"
        _, best = _per_run(a, best_col)
        _, alpha = _per_run(a, alpha_col)
        scale = np.array([_series(a, f"{loss}_scale", r).max() for r in runs])
        # Interior beats both ends by more than round-off (1e-10 of the terms' size) and 1e-6.
        floor = np.min(ends, axis=1)
        out[f"{loss}_rel_error"] = np.array([rel[a["run"] == r].max() for r in runs])
        out[f"{loss}_alpha_best"] = alpha
        out[f"{loss}_best"] = best
        out[f"{loss}_ends"] = ends
        out[f"{loss}_beats_both"] = best < floor * (1 - 1e-6) - WISE_RTOL * scale
    return out


def tau_stats(table):
    b = _part(table, "b")
    runs, eps = _per_run(b, "eps")
    ft = np.array([_series(b, "ood", r)[0] for r in runs])
    lpft = np.array([_series(b, "ood", r)[-1] for r in runs])
    last = np.array([_series(b, "ood", r)[-2] for r in runs])  # τ = tau_max
    grid = [_series(b, "ood", r)[1:-1] for r in runs]
    taus = _series(b, "tau", runs[0])[1:-1]
    residual = [
        _series(b, "lp_residual", r)[1:-1] / max(_series(b, "lp_residual", r)[0], 1e-300) for r in runs
    ]
    gaps = [_series(b, "lp_gap", r)[:-1] for r in runs]
    best = np.array([g.min() for g in grid])
    tau_best = np.array([taus[np.argmin(g)] for g in grid])
    # The first τ after which OOD stays within 10% of LP-FT's, and LP's residual there.
    settle_tau, settle_res = [], []
    for g, res, target in zip(grid, residual, lpft, strict=True):
        ok = np.abs(g - target) <= 0.1 * target
        after = np.flatnonzero(~ok)
        i = 0 if after.size == 0 else after[-1] + 1
        settle_tau.append(taus[i] if i < len(taus) else np.nan)
        settle_res.append(res[i] if i < len(taus) else np.nan)
    monotone = np.array(
        [
            np.all(np.diff(g) <= 1e-8 * g[0] + 1e-14) and np.all(np.diff(r) <= 1e-8 + 1e-14)
            for g, r in zip(gaps, residual, strict=True)
        ]
    )
    return {
        "run": runs,
        "eps": eps,
        "ft": ft,
        "lpft": lpft,
        "last_rel": np.abs(last - lpft) / lpft,
        "best": best,
        "tau_best": tau_best,
        "settle_tau": np.array(settle_tau),
        "settle_residual": np.array(settle_res),
        "monotone": monotone,
        "tau_max": taus[-1],
    }


def frozen_stats(table):
    c = _part(table, "c")
    runs, _ = _per_run(c, "eps")
    get = {
        m: {
            col: np.array([c[col][(c["run"] == r) & (c["method"] == m)][0] for r in runs])
            for col in ("ood", "id")
        }
        for m in METHODS_C
    }
    # Σ = w_S P_S + w_⊥ P_{S⊥} with the ProblemSpec defaults w_S = w_⊥ = 1.
    w_S = 1.0
    lp_perp = get["LP"]["ood"] - w_S * get["LP"]["id"]
    fr_perp = get["FT-frozen-head"]["ood"] - w_S * get["FT-frozen-head"]["id"]
    scale = np.maximum(get["LP"]["ood"], get["FT-frozen-head"]["ood"])
    drift = np.array([c["head_drift"][(c["run"] == r) & (c["method"] == "FT-frozen-head")][0] for r in runs])
    return {
        "run": runs,
        **{f"{m}_{col}": get[m][col] for m in METHODS_C for col in ("ood", "id")},
        "perp_rel": np.abs(fr_perp - lp_perp) / np.maximum(scale, 1e-300),
        "head_drift": drift,
    }


def summarise(table, config: Config) -> str:
    w = wise_stats(table)
    eps_values = np.unique(w["eps"])
    n_a = len(w["run"])
    by_eps = ", ".join(f"ε={e:g}: {np.median(w['ood_alpha_best'][w['eps'] == e]):.3g}" for e in eps_values)
    ends = np.min(w["ood_ends"], axis=1)
    gain = ends / np.maximum(w["ood_best"], 1e-300)
    beats = w["ood_beats_both"]
    lines = [
        f"finetuning_methods: parts a–c on {n_a} problems (ε ∈ {list(map(float, eps_values))}, "
        f"{config.seeds} seeds, zero and random heads; d={config.d}, k={config.k}, m={config.m}, n={config.n})",
        f" (a) WiSE-FT, {config.num_alpha} α: sweep vs quartic max error {np.max(w['ood_rel_error']):.1e} (OOD), "
        f"{np.max(w['id_rel_error']):.1e} (ID), relative to Σ|c_p|α^p",
        f"     best α (exact minimiser of the quartic), median by ε: {by_eps}",
        f"     an interior α beats both ends OOD in {int(beats.sum())}/{n_a} runs "
        f"(min(LP, FT)/best: median {np.median(gain[beats]) if beats.any() else float('nan'):.3g}, "
        f"max {np.max(gain):.3g}); ID: {int(w['id_beats_both'].sum())}/{n_a} (FT fits the data: ID(FT) "
        f"≤ {np.max(w['id_ends'][:, 1]):.1e})",
    ]
    t = tau_stats(table)
    below = t["best"] < t["lpft"] * (1 - 1e-3)
    lines += [
        f" (b) LP stopped at τ ∈ [{config.tau_min:g}, {config.tau_max:g}] t_lp, then FT: τ_max vs LP-FT max rel. diff "
        f"{np.max(t['last_rel']):.1e}; LP residual and loss gap non-increasing in τ: {int(t['monotone'].sum())}/{n_a}",
        f"     OOD within 10% of LP-FT from τ = {np.nanmedian(t['settle_tau']):.3g} t_lp on (median; LP residual "
        f"there {np.nanmedian(t['settle_residual']):.2g} of its start); FT/LP-FT OOD median {np.median(t['ft'] / t['lpft']):.3g}",
        f"     some finite τ beats LP-FT OOD (by > 0.1%) in {int(below.sum())}/{n_a} runs: best/LP-FT median "
        f"{np.median(t['best'][below] / t['lpft'][below]) if below.any() else float('nan'):.3g}, min "
        f"{np.min(t['best'] / t['lpft']):.3g}, at τ ≈ {np.median(t['tau_best'][below]) if below.any() else float('nan'):.3g} t_lp (median)",
    ]
    f = frozen_stats(table)
    med = {m: (np.median(f[f"{m}_ood"]), np.median(f[f"{m}_id"])) for m in METHODS_C}
    lines += [
        " (c) at convergence, median OOD / ID: "
        + "; ".join(f"{m} {o:.3g} / {i:.2g}" for m, (o, i) in med.items()),
        f"     frozen head: drift max {np.max(f['head_drift']):.1e}; OOD − ID (the S⊥ part) kept LP's to "
        f"{np.max(f['perp_rel']):.1e} rel.; OOD below LP in {int(np.sum(f['FT-frozen-head_ood'] < f['LP_ood']))}/{n_a}, "
        f"below LP-FT in {int(np.sum(f['FT-frozen-head_ood'] < f['LP-FT_ood']))}/{n_a}, below FT in "
        f"{int(np.sum(f['FT-frozen-head_ood'] < f['FT_ood']))}/{n_a}",
    ]
    d = _part(table, "d")
    runs, _ = _per_run(d, "eps")
    err = {m: d["ood_01"][d["method"] == m] for m in METHODS_D}
    eps_d = d["eps"][d["method"] == "FT"]
    phi_d = d["phi"][d["method"] == "FT"]
    cells = "; ".join(
        f"ε={e:g}: " + ", ".join(f"{m} {np.median(err[m][eps_d == e]):.3f}" for m in METHODS_D)
        for e in np.unique(eps_d)
    )
    rho = [_spearman(phi_d[eps_d == e], err["FT"][eps_d == e]) for e in np.unique(eps_d)]
    lines += [
        f" (d) logistic, t = {config.logistic_t_final:g}, {len(runs)} runs, {config.num_ood_inputs} OOD inputs; "
        f"median 0–1 error: {cells}",
        f"     LP < FT in {int(np.sum(err['LP'] < err['FT']))}/{len(runs)}, LP-FT < FT in "
        f"{int(np.sum(err['LP-FT'] < err['FT']))}/{len(runs)}, LP-FT < LP in {int(np.sum(err['LP-FT'] < err['LP']))}/{len(runs)}; "
        f"Spearman(φ, FT error) by ε: {', '.join(f'{x:.2f}' for x in rho)}",
        f"     S⊥ drift (full coordinates, FT and LP-FT): max {np.nanmax(d['orth_drift']):.1e}; full vs reduced: "
        f"head diff max {np.nanmax(d['full_vs_reduced']):.1e}, 0–1 error diff max "
        f"{np.max(np.abs(d['ood_01_full'] - d['ood_01'])):.2g}",
        f"  solver failures: {failed_solves(table, 'status')}",
    ]
    return "\n".join(lines)


def check(table, config: Config) -> list[str]:
    """Fails when a law is broken: the WiSE-FT sweep off its quartic (round-off), τ_max off LP-FT
    (integrator tolerance), LP's residual or loss gap growing with τ, the frozen head moving or
    the S⊥ part of its error changing (round-off), S⊥ drift under the logistic loss, a failed
    solve."""
    failures = []
    w = wise_stats(table)
    for loss in ("ood", "id"):
        worst = np.max(w[f"{loss}_rel_error"])
        if worst > WISE_RTOL:
            failures.append(f"(a) {loss} sweep departs from its quartic by {worst:.2e} (> {WISE_RTOL:g})")
    t = tau_stats(table)
    if t["tau_max"] >= 30 and np.max(t["last_rel"]) > TAU_RTOL:
        failures.append(
            f"(b) τ = {t['tau_max']:g} t_lp departs from LP-FT by {np.max(t['last_rel']):.2e} rel."
        )
    if not np.all(t["monotone"]):
        failures.append(f"(b) LP's residual or loss gap grows with τ in {int(np.sum(~t['monotone']))} runs")
    f = frozen_stats(table)
    if np.max(f["head_drift"]) > FROZEN_RTOL:  # exactly 0: η_v = 0 multiplies the head's field
        failures.append(f"(c) the frozen head moved by {np.max(f['head_drift']):.2e}")
    if np.max(f["perp_rel"]) > FROZEN_RTOL:
        failures.append(
            f"(c) the S⊥ part of the frozen-head error changed by {np.max(f['perp_rel']):.2e} rel."
        )
    d = _part(table, "d")
    if np.nanmax(d["orth_drift"]) > DRIFT_TOL:
        failures.append(f"(d) logistic S⊥ drift {np.nanmax(d['orth_drift']):.2e} > {DRIFT_TOL:g}")
    if failed_solves(table, "status"):
        failures.append("some solves failed (status > 1)")
    return failures


STUDY = Study("finetuning_methods", __doc__, Config, compute, plot, summarise, check)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

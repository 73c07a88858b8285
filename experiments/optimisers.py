"""Which discrete optimisers keep the features of OOD directions fixed, and does GD follow the flow?

Part 1 trains each problem with five optax optimisers (`train_discrete`): full-batch GD,
minibatch SGD, heavy-ball momentum, Adam and sign descent (`optax.sign_sgd`), and compares them at
MATCHED in-distribution fit: for each run, the first saved step where the training loss falls
below `target · L̂(v0, B0)`. There it measures the feature distortion on fresh ID inputs
(`ood.id_inputs`) and OOD inputs (`ood.ood_inputs`), the S⊥ drift `‖(B − B0) P_{S⊥}‖_F`, and the
OOD and ID losses, with linear probing (closed form) for reference. The law (statement 1 of
docs/theory.md): an update that is a linear combination of gradients (GD, SGD, momentum) keeps
every B-row change in S, so the S⊥ drift is 0 to round-off; coordinate-wise rescaling (Adam,
sign) takes the rows out of S, so the drift is positive.

Part 2 measures the order at which full-batch GD with step η approaches gradient flow: after
N = T/η steps, the distance of (v, B) from the flow's state at time T (an rtol = 1e-10 solve in
full coordinates), for a ladder of η. Explicit Euler is first order: slope 1 in log-log.
"""

from __future__ import annotations

if __name__ == "__main__":  # first, before numpy/jax load: sets OPENBLAS_NUM_THREADS
    import _prelude  # noqa: F401  (experiments/_prelude.py)

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

import linprobe_theory as lt
from linprobe_theory.discrete import train_discrete
from linprobe_theory.experiment import Study, field
from linprobe_theory.ood import id_inputs, ood_inputs
from linprobe_theory.plotting import COLORS, new_figure, positive
from linprobe_theory.studies import HEAD_KINDS, select_head
from linprobe_theory.study_tools import CommonConfig, run_sweep

OPTIMISERS = ("gd", "sgd", "momentum", "adam", "sign")
LINEAR = ("gd", "sgd", "momentum")  # updates are linear combinations of gradients: S⊥ stays fixed
OPT_COLORS = {"gd": "#00798c", "sgd": "#2a9d8f", "momentum": "#7b2cbf", "adam": "#d1495b", "sign": "#edae49"}
HEAD_MARKERS = {"zero": "o", "random": "^"}
ROUND_OFF_FLOOR = 1e-17  # exact zeros are drawn here on the log axis
DRIFT_TOL = 1e-10  # round-off for an exact invariance
BROKEN_MIN = 1e-6  # Adam and sign: the invariance fails by more than this


@dataclasses.dataclass(frozen=True)
class Config(CommonConfig):
    chunk_size: int = field(16, "runs per compiled batch")
    eps: tuple = field((0.01, 0.1), "feature errors d(B0, B⋆)")
    heads: tuple = field(("zero", "random"), "initial heads (each problem is run from each)")
    seeds: int = field(8, "problems per ε")
    learning_rates: tuple = field(
        (1e-3, 5e-4, 1e-4, 1e-3, 1e-4), "step sizes of gd, sgd, momentum, adam, sign (in that order)"
    )
    momentum: float = field(0.9, "heavy-ball momentum β")
    batch_size: int = field(10, "minibatch size of sgd")
    num_steps: int = field(5000, "step budget of each optimiser run")
    save_every: int = field(5, "steps between saved states (the matched point is a saved step)")
    target: float = field(1e-3, "matched ID fit: first saved step with L̂ ≤ target · L̂(v0, B0)")
    num_inputs: int = field(4096, "fresh ID and OOD inputs for the feature distortion")
    flow_time: float = field(0.2, "T: time at which GD (N = T/η steps) is compared with the flow")
    etas: tuple = field((4e-4, 2e-4, 1e-4, 5e-5), "GD step sizes η for the convergence order")

    @classmethod
    def quick(cls):
        return cls(
            d=40, m=10, n=20, eps=(0.1,), seeds=1, batch_size=5, num_inputs=1024, etas=(4e-4, 2e-4, 1e-4)
        )


def _optimiser(name: str, config: Config):
    lr = dict(zip(OPTIMISERS, config.learning_rates, strict=True))[name]
    if name == "momentum":
        return optax.sgd(lr, momentum=config.momentum)
    if name == "adam":
        return optax.adam(lr)
    if name == "sign":  # scale_by_sign then the step: optax.chain(scale_by_sign(), scale(-lr))
        return optax.sign_sgd(lr)
    return optax.sgd(lr)


def _grid(config: Config) -> dict[str, np.ndarray]:
    rows = [
        (e, s, HEAD_KINDS.index(h)) for e in config.eps for s in range(config.seeds) for h in config.heads
    ]
    eps, seed, head_kind = (np.array(c) for c in zip(*rows, strict=True))
    return {"eps": eps.astype(float), "seed": seed, "head_kind": head_kind}


def _matched(problem, traj, target, xi, xo):
    """The run's state at its first saved step with L̂ ≤ target · L̂(0), and what it measures."""
    loss = lt.train_loss(problem, traj.v, traj.B)
    below = loss <= target * loss[0]
    reached = jnp.any(below)
    i = jnp.where(reached, jnp.argmax(below), loss.shape[0] - 1)
    v, B = traj.v[i], traj.B[i]
    delta = B - problem.B0
    k = problem.k
    return {
        "reached": reached,
        "step": traj.step[i],
        "train_ratio": loss[i] / loss[0],
        "dist_id": lt.feature_distortion(problem.B0, B, xi),
        "dist_ood": lt.feature_distortion(problem.B0, B, xo),
        "dist_id_exact": jnp.sum((delta @ problem.Q_S) ** 2) / k,  # E over x ~ N(0, P_S)
        "dist_ood_exact": jnp.sum(problem.ood.quadratic_form(delta)) / k,  # E over x ~ N(0, Σ)
        "s_perp_drift": lt.orthogonal_drift(problem, B),
        "s_perp_drift_max": jnp.max(lt.orthogonal_drift(problem, traj.B)),
        "ood_loss": lt.ood_loss(problem, v, B),
        "id_loss": lt.id_loss(problem, v, B),
        "status": traj.status,
    }


def compute(config: Config, store, progress):
    spec = lt.ProblemSpec(d=config.d, k=config.k, m=config.m, n=config.n, coverage=config.coverage)
    base = jax.random.key(config.seed)
    params = _grid(config)
    T = config.flow_time
    ladder = [(eta, int(round(T / eta))) for eta in config.etas]

    def one_run(p, key):
        problem = lt.make_problem(spec, key=jax.random.fold_in(base, p["seed"]), eps=p["eps"])
        v0 = select_head(problem, p["head_kind"], 0.0, key=jax.random.fold_in(base, 10_000 + p["seed"]))
        k_id, k_ood, k_batch = jax.random.split(key, 3)
        xi = id_inputs(problem, k_id, config.num_inputs)
        xo = ood_inputs(problem, k_ood, config.num_inputs)
        out = {}
        for name in OPTIMISERS:
            traj = train_discrete(
                problem,
                v0,
                optimizer=_optimiser(name, config),
                num_steps=config.num_steps,
                save_every=config.save_every,
                batch_size=config.batch_size if name == "sgd" else None,
                key=k_batch,
                check=False,
            )
            for column, value in _matched(problem, traj, config.target, xi, xo).items():
                out[f"{name}/{column}"] = value
        v_lp = lt.linear_probe_solution(problem, v0)
        out["lp_ood"] = lt.ood_loss(problem, v_lp, problem.B0)
        out["lp_id"] = lt.id_loss(problem, v_lp, problem.B0)
        # Part 2: GD with step η for N = T/η steps against the flow at time T.
        flow = lt.fine_tune(
            problem, v0, t_final=T, rtol=1e-10, atol=1e-12, coordinates="full", grad_tol=None, check=False
        )
        vT, BT = flow.v[-1], flow.B[-1]
        g_v, g_B = jax.grad(lambda v, B: lt.train_loss(problem, v, B), argnums=(0, 1))(vT, BT)
        out["flow_grad_norm"] = jnp.sqrt(jnp.sum(g_v**2) + jnp.sum(g_B**2))
        out["flow_status"] = flow.status
        errors, statuses = [], []
        for eta, steps in ladder:
            gd = train_discrete(
                problem, v0, optimizer=optax.sgd(eta), num_steps=steps, save_every=steps, check=False
            )
            errors.append(jnp.sqrt(jnp.sum((gd.v[-1] - vT) ** 2) + jnp.sum((gd.B[-1] - BT) ** 2)))
            statuses.append(gd.status)
        out["flow_error"] = jnp.stack(errors)
        out["gd_status"] = jnp.stack(statuses)
        return out

    out = run_sweep(one_run, params, key=base, config=config, store=store, progress=progress)
    return _tidy(config, params, out, ladder)


def _tidy(config: Config, params, out, ladder) -> dict[str, np.ndarray]:
    """One row per problem × optimiser (part "matched") and per problem × η (part "order")."""
    num = len(params["seed"])
    heads = np.array([HEAD_KINDS[int(i)] for i in params["head_kind"]])
    lrs = dict(zip(OPTIMISERS, config.learning_rates, strict=True))
    metrics = [c.split("/", 1)[1] for c in out if c.startswith("gd/")]
    blocks = []
    for name in OPTIMISERS:
        block = {
            "part": np.full(num, "matched"),
            "optimiser": np.full(num, name),
            "lr": np.full(num, lrs[name]),
            "batch_size": np.full(num, config.batch_size if name == "sgd" else config.n),
        }
        block |= {m: np.asarray(out[f"{name}/{m}"], dtype=float) for m in metrics}
        block |= {"lp_ood": out["lp_ood"], "lp_id": out["lp_id"]}
        blocks.append((np.arange(num), block))
    for j, (eta, steps) in enumerate(ladder):
        block = {
            "part": np.full(num, "order"),
            "optimiser": np.full(num, "gd"),
            "lr": np.full(num, eta),
            "batch_size": np.full(num, config.n),
            "step": np.full(num, float(steps)),
            "status": np.asarray(out["gd_status"][:, j], dtype=float),
            "flow_time": np.full(num, config.flow_time),
            "flow_error": out["flow_error"][:, j],
            "flow_grad_norm": out["flow_grad_norm"],
            "flow_status": np.asarray(out["flow_status"], dtype=float),
        }
        blocks.append((np.arange(num), block))
    names = ["problem", "seed", "eps", "head"] + list(
        dict.fromkeys(name for _, block in blocks for name in block)
    )
    table = {name: [] for name in names}
    for problems, block in blocks:
        table["problem"].append(problems)
        table["seed"].append(params["seed"][problems])
        table["eps"].append(params["eps"][problems])
        table["head"].append(heads[problems])
        for name in names[4:]:
            table[name].append(block.get(name, np.full(num, np.nan)))
    return {name: np.concatenate(values) for name, values in table.items()}


def matched_rows(table, name=None):
    """Part 1 rows (of one optimiser when `name` is given)."""
    sel = table["part"] == "matched"
    return sel if name is None else sel & (table["optimiser"] == name)


def _per_problem(table, name, column) -> np.ndarray:
    """`column` of optimiser `name`'s part-1 rows, in problem order (for paired ratios)."""
    sel = matched_rows(table, name)
    return table[column][sel][np.argsort(table["problem"][sel], kind="stable")]


def fitted_orders(table) -> dict[str, np.ndarray]:
    """Per problem: the slope of log(error) against log(η) (least squares over the ladder)."""
    order = table["part"] == "order"
    problems = np.unique(table["problem"][order])
    slopes, heads = [], []
    for p in problems:
        s = order & (table["problem"] == p)
        slopes.append(np.polyfit(np.log(table["lr"][s]), np.log(table["flow_error"][s]), 1)[0])
        heads.append(table["head"][s][0])
    return {"problem": problems, "order": np.array(slopes), "head": np.array(heads)}


def plot(table, config: Config):
    fig, axes = new_figure(ncols=2, nrows=2, width=5.4, height=4.0)
    (ax_dist, ax_drift), (ax_ood, ax_order) = axes
    names = [n for n in OPTIMISERS if matched_rows(table, n).any()]
    jitter = np.random.default_rng(0)
    for i, name in enumerate(names):
        sel = matched_rows(table, name)
        for offset, column, color, label in (
            (-0.17, "dist_id", COLORS["LP"], "ID inputs"),
            (0.17, "dist_ood", COLORS["FT"], "OOD inputs"),
        ):
            for head, marker in HEAD_MARKERS.items():
                s = sel & (table["head"] == head)
                x = i + offset + jitter.uniform(-0.06, 0.06, s.sum())
                shown = label if (i == 0 and head == "zero") else None
                ax_dist.scatter(x, positive(table[column][s]), s=14, color=color, marker=marker, label=shown)
            ax_dist.hlines(
                np.median(table[column][sel]), i + offset - 0.12, i + offset + 0.12, color="k", lw=1.5
            )
    ax_dist.set_xticks(range(len(names)), names)
    ax_dist.set(yscale="log", ylabel="feature distortion (1/k) mean ‖(B − B0) x‖²")
    ax_dist.set_title(
        f"Feature distortion at matched ID fit (L̂ ≤ {config.target:g}·L̂(0));\n"
        "circles: zero head, triangles: random head; bars: medians",
        fontsize=9,
    )
    ax_dist.legend(fontsize=7)

    for i, name in enumerate(names):
        sel = matched_rows(table, name)
        values = np.maximum(table["s_perp_drift"][sel], ROUND_OFF_FLOOR)
        for head, marker in HEAD_MARKERS.items():
            s = table["head"][sel] == head
            x = i + jitter.uniform(-0.15, 0.15, s.sum())
            ax_drift.scatter(x, values[s], s=14, color=OPT_COLORS.get(name, "#555"), marker=marker)
    ax_drift.axhline(DRIFT_TOL, color=COLORS["bound"], ls="--", lw=1, label=f"law tolerance {DRIFT_TOL:g}")
    ax_drift.axhspan(ROUND_OFF_FLOOR / 2, 1e-13, color="#cccccc", alpha=0.5, lw=0, label="float64 round-off")
    ax_drift.set_xticks(range(len(names)), names)
    ax_drift.set(yscale="log", ylabel="S⊥ drift ‖(B − B0) P_S⊥‖_F")
    ax_drift.set_title(
        "S⊥ drift at the matched point (0 in exact arithmetic for GD, SGD, momentum)", fontsize=9
    )
    ax_drift.legend(fontsize=7, loc="center left")

    first = matched_rows(table, names[0])
    groups = [(name, table["ood_loss"][matched_rows(table, name)]) for name in names]
    groups.append(("LP", table["lp_ood"][first]))
    for i, (name, values) in enumerate(groups):
        heads = table["head"][first]
        color = COLORS["LP"] if name == "LP" else OPT_COLORS.get(name, "#555")
        for head, marker in HEAD_MARKERS.items():
            s = heads == head
            x = i + jitter.uniform(-0.15, 0.15, s.sum())
            ax_ood.scatter(x, positive(values[s]), s=14, color=color, marker=marker)
        ax_ood.hlines(np.median(values), i - 0.25, i + 0.25, color="k", lw=1.5)
    ax_ood.set_xticks(range(len(groups)), [g[0] for g in groups])
    ax_ood.set(yscale="log", ylabel="OOD loss (Bᵀv − w⋆)ᵀ Σ (Bᵀv − w⋆)")
    ax_ood.set_title("OOD loss at matched ID fit, and LP's (closed form); bars: medians", fontsize=9)

    order = table["part"] == "order"
    fits = fitted_orders(table)
    for p in np.unique(table["problem"][order]):
        s = order & (table["problem"] == p)
        head = table["head"][s][0]
        color = COLORS["FT"] if head == "random" else COLORS["LP"]
        ax_order.plot(
            table["lr"][s],
            table["flow_error"][s],
            marker=HEAD_MARKERS.get(head, "o"),
            color=color,
            lw=0.8,
            ms=4,
            alpha=0.7,
        )
    if order.any():
        eta = np.unique(table["lr"][order])
        ref = np.median(table["flow_error"][order & (table["lr"] == eta[-1])])
        ax_order.plot(eta, ref * eta / eta[-1], "k--", lw=1.2, label="slope 1 (Euler)")
        ax_order.plot([], [], color=COLORS["LP"], marker="o", label="zero head")
        ax_order.plot([], [], color=COLORS["FT"], marker="^", label="random head")
        ax_order.set_title(
            f"GD → gradient flow at T = {table['flow_time'][order][0]:g}: fitted order median "
            f"{np.median(fits['order']):.3f} [{np.min(fits['order']):.3f}, {np.max(fits['order']):.3f}]",
            fontsize=9,
        )
    ax_order.set(
        xscale="log",
        yscale="log",
        xlabel="GD step η (N = T/η steps)",
        ylabel="‖(v, B)_GD − (v, B)_flow‖ at T",
    )
    ax_order.legend(fontsize=7)
    return fig


def summarise(table, config: Config) -> str:
    problems = np.unique(table["problem"])
    lines = [
        f"optimisers: {len(problems)} problems (ε ∈ {sorted(set(float(e) for e in table['eps']))}, "
        f"{config.seeds} seeds, heads {list(config.heads)}; d={config.d}, k={config.k}, m={config.m}, "
        f"n={config.n}), matched at the first saved step with L̂ ≤ {config.target:g}·L̂(0) "
        f"(budget {config.num_steps} steps, saved every {config.save_every})",
        "  optimiser  lr      reached  median step  distortion ID    OOD      OOD/ID  "
        "max S⊥ drift  OOD loss  ID loss (medians)",
    ]
    for name in OPTIMISERS:
        sel = matched_rows(table, name)
        if not sel.any():
            continue
        ok = sel & (table["reached"] > 0)
        use = ok if ok.any() else sel
        d_id, d_ood = np.median(table["dist_id"][use]), np.median(table["dist_ood"][use])
        reached = f"{int(ok.sum())}/{int(sel.sum())}"
        lines.append(
            f"  {name:<9s}  {table['lr'][sel][0]:<6.0e}  {reached:<7s}  {np.median(table['step'][use]):>11.0f}  "
            f"{d_id:>13.3g}  {d_ood:>7.3g}  {d_ood / d_id:>6.3g}  {np.max(table['s_perp_drift_max'][sel]):>12.2e}  "
            f"{np.median(table['ood_loss'][use]):>8.3g}  {np.median(table['id_loss'][use]):>7.3g}"
        )
    missed = matched_rows(table) & (table["reached"] == 0)
    if missed.any():
        lines.append(
            "  NOT REACHED within the budget: "
            + ", ".join(
                f"{o} (problem {int(p)})"
                for o, p in zip(table["optimiser"][missed], table["problem"][missed], strict=True)
            )
        )
    broken = matched_rows(table) & np.isin(table["optimiser"], ("adam", "sign"))
    linear = matched_rows(table) & np.isin(table["optimiser"], LINEAR)
    first = matched_rows(table, OPTIMISERS[0])
    lines.append(
        f"  S⊥ drift: GD/SGD/momentum max {np.max(table['s_perp_drift_max'][linear]):.2e} over all saved steps "
        f"(law: ≤ {DRIFT_TOL:g}); Adam/sign min {np.min(table['s_perp_drift'][broken]):.3g} at the matched point"
        if linear.any() and broken.any()
        else "  S⊥ drift: (optimisers missing)"
    )
    exact = {
        name: table["dist_ood_exact"][matched_rows(table, name)]
        / table["dist_id_exact"][matched_rows(table, name)]
        for name in OPTIMISERS
        if matched_rows(table, name).any()
    }
    lines.append(
        "  exact distortion E_OOD/E_ID (Σ = I here: 1 when B − B0 has rows in S), median: "
        + ", ".join(f"{name} {np.median(r):.4f}" for name, r in exact.items())
    )
    ood = {name: _per_problem(table, name, "ood_loss") for name in exact}
    if "gd" in ood:
        lines.append(
            "  OOD loss, paired by problem (median ratio): vs GD "
            + ", ".join(f"{name} {np.median(ood[name] / ood['gd']):.3g}" for name in ood if name != "gd")
            + "; vs LP "
            + ", ".join(
                f"{name} {np.median(ood[name] / _per_problem(table, 'gd', 'lp_ood')):.3g}" for name in ood
            )
        )
    lines.append(
        f"  LP (closed form): median OOD loss {np.median(table['lp_ood'][first]):.3g}, "
        f"median ID loss {np.median(table['lp_id'][first]):.3g}"
    )
    order = table["part"] == "order"
    if order.any():
        fits = fitted_orders(table)
        eta = np.unique(table["lr"][order])
        small = order & (table["lr"] == eta[0])
        lines.append(
            f"  GD → flow at T = {config.flow_time:g} (η ∈ {[float(e) for e in eta[::-1]]}): fitted order median "
            f"{np.median(fits['order']):.4f}, range [{np.min(fits['order']):.4f}, {np.max(fits['order']):.4f}] over "
            f"{fits['order'].size} problems; error at η = {eta[0]:g}: median {np.median(table['flow_error'][small]):.3g}; "
            f"flow still moving at T (median ‖∇L̂‖ {np.median(table['flow_grad_norm'][small]):.3g})"
        )
    return "\n".join(lines)


def check(table, config: Config) -> list[str]:
    """Fails when GD, SGD or momentum move S⊥ features beyond round-off at any saved step, when
    Adam or sign descent keep them fixed (≤ 1e-6: the theory predicts the invariance fails), when
    GD's order of convergence to the flow leaves [0.8, 1.2], or when a run diverged / a solve failed.
    Runs that miss the matched target are flagged in the summary, not failed."""
    failures = []
    for name in OPTIMISERS:
        sel = matched_rows(table, name)
        if not sel.any():
            continue
        if name in LINEAR and np.max(table["s_perp_drift_max"][sel]) > DRIFT_TOL:
            failures.append(
                f"{name} moved S⊥ features by {np.max(table['s_perp_drift_max'][sel]):.2e} > {DRIFT_TOL:g}"
            )
        if name not in LINEAR and np.min(table["s_perp_drift"][sel]) <= BROKEN_MIN:
            failures.append(
                f"{name} kept S⊥ features fixed (drift {np.min(table['s_perp_drift'][sel]):.2e} ≤ {BROKEN_MIN:g})"
            )
    if np.any(table["status"][matched_rows(table)] != 0):
        failures.append("some optimiser runs diverged")
    order = table["part"] == "order"
    if order.any():
        fits = fitted_orders(table)
        bad = (fits["order"] < 0.8) | (fits["order"] > 1.2)
        if bad.any():
            failures.append(f"GD → flow order outside [0.8, 1.2]: {fits['order'][bad]}")
        if np.any(table["status"][order] != 0) or np.any(table["flow_status"][order] > 1):
            failures.append("some GD ladder runs diverged or flow solves failed")
    return failures


STUDY = Study("optimisers", __doc__, Config, compute, plot, summarise, check)

if __name__ == "__main__":
    raise SystemExit(STUDY.main())

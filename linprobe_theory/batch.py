"""One call for a batch of runs: `fine_tune_batch` (and `lp_ft_batch`) over stacked problems.

It does what the sweep recipe in `docs/scaling.md` asks a user to do by hand:

1. reduce every problem to its `O(k m + m²)` exact reduced form (`ReducedProblem`), in
   memory-bounded chunks (the only `O(d)` work);
2. order the runs by their stiffness estimate, so runs of similar cost share a chunk (a vmapped
   adaptive solve runs every member until the slowest finishes);
3. solve the reduced flows in chunked `jit(vmap)` calls sharded over the local devices
   (`sweep.run_batch`, which also drives a progress bar and a `ChunkStore` for resume),
   saving only the end points unless `save_at` is given;

and returns every output with a leading run axis, in the runs' own order. The linear model
with the squared loss (the variants `fine_tune_reduced` takes: `regularizer`, `learning_rates`);
activations and the logistic loss need the inputs, so `jit(vmap(fine_tune))` is their batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import reduced as red
from .fingerprints import batch_digest, frozen
from .flows import make_flow
from .probing import lp_limit
from .problem import Problem
from .reduced_flow import fine_tune_reduced
from .sweep import run_batch, stiffness_order


class BatchResult(eqx.Module):
    """Outputs of a batch, leading axis the run (numpy arrays).

    Attributes:
        t: saved times `(T,)`; without `save_at`, `[0, nan]`: the two ends, the second at each
            run's own `t_stop`.
        v: heads `(runs, T, k)`.
        ood, id, train: the exact OOD, ID and training losses at the saved times `(runs, T)`.
        status, num_steps, t_stop: per run, as in `FlowSolution`.
        v_start: the head the FT phase started from `(runs, k)` (`v0`, or LP's limit for LP-FT).
        observed: with `observe`, its outputs at the saved times, each `(runs, T, …)`; else `None`.
    """

    t: np.ndarray
    v: np.ndarray
    ood: np.ndarray
    id: np.ndarray
    train: np.ndarray
    status: np.ndarray
    num_steps: np.ndarray
    t_stop: np.ndarray
    v_start: np.ndarray
    observed: dict | None = None


def stack_problems(problems: Problem | Sequence[Problem]) -> Problem:
    """A `Problem` with a leading run axis, from a list of problems (or one already stacked)."""
    if isinstance(problems, Problem):
        return problems
    problems = list(problems)
    if not problems:
        raise ValueError("problems must hold at least one problem")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *problems)


def _as_params(tree) -> tuple[dict, object]:
    leaves, treedef = jax.tree.flatten(tree)
    return {f"leaf{i:03d}": leaf for i, leaf in enumerate(leaves)}, treedef


def _from_params(p: dict, treedef):
    return jax.tree.unflatten(treedef, [p[f"leaf{i:03d}"] for i in range(len(p))])


def fine_tune_batch(
    problems: Problem | Sequence[Problem],
    v0s,
    *,
    t_final,
    save_at=None,
    observe=None,
    lp_first: bool = False,
    chunk_size: int = 64,
    group_by_cost: bool = True,
    store=None,
    progress=None,
    sharding: str = "named",
    regularizer=None,
    learning_rates=(1.0, 1.0),
    **solve_kwargs,
) -> BatchResult:
    """FT of every run `i` from `(v0s[i], B0_i)` of `problems[i]`, in one call.

    Args:
        problems: a `Problem` with a leading run axis (e.g. `jax.vmap(make_problem)` over keys)
            or a list of problems of one shape.
        v0s: initial heads `(runs, k)`.
        t_final: the horizon (shared by all runs).
        save_at: the saved times (shared by all runs); without it only the two ends are saved
            (no dense output).
        observe: optional `observe(rp, v, Z, s) -> dict of arrays`, saved beside the losses at
            the saved times (`rp` the run's `ReducedProblem`, `(v, Z)` its reduced state, `s`
            the scale of the S⊥ part, 1 without a weight decay); `BatchResult.observed`.
        lp_first: LP-FT: start FT from LP's closed-form limit instead of `v0s` (`lp_ft_batch`).
        chunk_size: runs per compiled call (bounds memory).
        group_by_cost: order runs by `ReducedProblem.stiffness(v0)` so similar runs share a chunk.
        store: a `ChunkStore` for resume (the solves' finished chunks, in a substore named by
            the batch's settings and inputs), as in `sweep.run_batch`. Under `jax.distributed`,
            a shared one (`distributed.open_store`): every process reduces every run (O(d), not
            stored) and solves only its own chunks; all return the full result.
        progress: a progress bar over the solves, as in `sweep.run_batch`.
        sharding: `"named"` or `"shard_map"`, how a chunk is split over several local devices
            (`sweep.run_batch`).
        regularizer: as in `fine_tune_reduced`.
        learning_rates: as in `fine_tune_reduced`.
        **solve_kwargs: as in `fine_tune_reduced` (`rtol`, `atol`, `grad_tol`, `steady_tol`,
            `max_steps`, `solver`, `dtmin`); by default a run stops at steady state
            (`steady_state.FitStop`) and reports the flow's end point.
    """
    stacked = stack_problems(problems)
    if stacked.B0.ndim != 3:
        raise ValueError("problems must have a leading run axis (or be a list of problems); got one problem")
    v0s = jnp.asarray(v0s, float)
    num_runs = jax.tree.leaves(stacked)[0].shape[0]
    if v0s.shape != (num_runs, stacked.B0.shape[-2]):
        raise ValueError(
            f"v0s must have shape (runs, k) = {(num_runs, stacked.B0.shape[-2])}, got {v0s.shape}"
        )
    key = jax.random.key(0)  # the runs are deterministic; run_batch wants a base key
    params, treedef = _as_params((stacked, v0s))
    rp_treedef = _as_params(red.ReducedProblem.from_problem(jax.tree.map(lambda x: x[0], stacked)))[1]
    settings = dict(
        t_final=t_final,
        save_at=save_at,
        observe=observe,
        regularizer=regularizer,
        learning_rates=learning_rates,
        **solve_kwargs,
    )
    reduce, solve_one = _phase_functions(treedef, rp_treedef, lp_first, settings)
    if store is not None:
        # Finished chunks are reused only by the same batch: the settings and every input array
        # name the substore, so a changed horizon or problem set never picks up stale chunks.
        store = store.substore("batch-" + batch_digest(settings, lp_first, params))
    # Phase 1, O(d) per run: the reduced problems and the heads FT starts from.
    reduced = _reduce_all(reduce, params, key, chunk_size)
    # Phase 2, d-free: the reduced flows, runs of similar stiffness sharing a chunk.
    order = stiffness_order(reduced["stiffness"]) if group_by_cost else None
    solve_params = {n: v for n, v in reduced.items() if n != "stiffness"}
    out = run_batch(
        solve_one,
        solve_params,
        key=key,
        chunk_size=chunk_size,
        store=store,
        progress=progress,
        order=order,
        sharding=sharding,
    )
    t = np.asarray(save_at, float) if save_at is not None else None
    if t is None:  # the two ends: 0 and where each run stopped
        t = np.array([0.0, np.nan])
    return BatchResult(
        t=t,
        v=out["v"],
        ood=out["ood"],
        id=out["id"],
        train=out["train"],
        status=out["status"],
        num_steps=out["num_steps"],
        t_stop=out["t_stop"],
        v_start=reduced["v_start"],
        observed={n[len("obs:") :]: a for n, a in out.items() if n.startswith("obs:")} if observe else None,
    )


_REDUCE_BATCH = 16  # runs per step of the reduction's loop: their d-sized temporaries stay in cache


def _reduce_all(reduce, params: dict, key, chunk_size: int) -> dict[str, np.ndarray]:
    """Phase 1 over all runs: one compiled `lax.map` over the stacked inputs in batches of
    `_REDUCE_BATCH`, on the device they already live on. Gathering chunks for `run_batch`
    copied every d-sized input once more: 1.69 vs 0.90 ms per run at d = 1000, n = 100, more
    than sharding this memory-bound O(d) phase over two CPU devices could win back."""
    batch = min(_REDUCE_BATCH, chunk_size)
    if (reduce, batch) not in _REDUCE_JIT:
        _REDUCE_JIT[(reduce, batch)] = jax.jit(
            lambda p, key: jax.lax.map(lambda q: reduce(q, key), p, batch_size=batch)
        )
    out = _REDUCE_JIT[(reduce, batch)](params, key)
    return {n: np.asarray(a) for n, a in out.items()}


_REDUCE_JIT: dict = {}


_PHASES: dict = {}


def _phase_functions(treedef, rp_treedef, lp_first: bool, settings: dict):
    """The two per-run functions, cached by their settings: `run_batch` compiles once per
    function object, so a repeated call with equal settings reuses the compiled code."""
    try:
        key = (treedef, rp_treedef, lp_first, tuple((n, frozen(v)) for n, v in sorted(settings.items())))
        hash(key)
    except (TypeError, ValueError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        key = None  # a traced or unhashable setting: build afresh
    if key is not None and key in _PHASES:
        return _PHASES[key]
    flow = make_flow(regularizer=settings["regularizer"], learning_rates=settings["learning_rates"])

    def reduce(p, _):
        problem, v0 = _from_params(p, treedef)
        v_start = lp_limit(problem, v0, flow) if lp_first else v0
        rp = red.ReducedProblem.from_problem(problem)
        return {**_as_params(rp)[0], "v_start": v_start, "stiffness": rp.stiffness(v_start)}

    def solve_one(p, _):
        rp = _from_params({n: v for n, v in p.items() if n.startswith("leaf")}, rp_treedef)

        def observe(v, Z, s=1.0):
            # With a weight decay the S⊥ part is s·B0 P_{S⊥} (s = 1 otherwise).
            return {
                "v": v,
                "ood": red.ood_loss(rp, v, Z, s),
                "id": red.id_loss(rp, v, Z),
                "train": red.train_loss(rp, v, Z),
            }

        user_observe = settings["observe"]

        def observe_all(v, Z, s=1.0):
            out = observe(v, Z, s)
            if user_observe is not None:
                out.update({f"obs:{n}": a for n, a in user_observe(rp, v, Z, s).items()})
            return out

        solver_settings = {n: v for n, v in settings.items() if n != "observe"}
        sol = fine_tune_reduced(rp, p["v_start"], observe=observe_all, **solver_settings)
        return {**sol.ys, "status": sol.status, "num_steps": sol.num_steps, "t_stop": sol.t_stop}

    if key is not None:
        if len(_PHASES) >= 16:
            _PHASES.clear()
        _PHASES[key] = (reduce, solve_one)
    return reduce, solve_one


def lp_ft_batch(problems, v0s=None, **kwargs) -> BatchResult:
    """LP-FT of every run: FT from LP's closed-form limit (`probing.lp_limit`; ridge with a head
    penalty). `v0s` (default 0) matters only where `X B0ᵀ` is rank deficient."""
    stacked = stack_problems(problems)
    if v0s is None:
        v0s = jnp.zeros((jax.tree.leaves(stacked)[0].shape[0], stacked.B0.shape[-2]))
    return fine_tune_batch(stacked, v0s, lp_first=True, **kwargs)

"""One call for a batch of runs: `fine_tune_batch` (and `linear_probe_batch`, `lp_ft_batch`)
over stacked problems.

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
from .batch_phases import _as_params, _phase_functions, _reduce_all
from .fingerprints import batch_digest
from .problem import Problem
from .sweep import run_batch, stiffness_order


class BatchResult(eqx.Module):
    """Outputs of a batch, leading axis the run (numpy arrays).

    Attributes:
        t: saved times `(T,)`; without `save_at`, `[0, nan]`: the two ends, the second at each
            run's own `t_stop`.
        v: heads `(runs, T, k)`.
        ood, id, train: the exact OOD, ID and training losses at the saved times `(runs, T)`.
        status, num_steps, t_stop: per run, as in `FlowSolution`.
        v_start: the head the solve started from `(runs, k)` (`v0`, or LP's limit for LP-FT).
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
    return _batch(
        "lpft" if lp_first else "ft",
        problems,
        v0s,
        t_final=t_final,
        save_at=save_at,
        observe=observe,
        chunk_size=chunk_size,
        group_by_cost=group_by_cost,
        store=store,
        progress=progress,
        sharding=sharding,
        regularizer=regularizer,
        learning_rates=learning_rates,
        **solve_kwargs,
    )


def linear_probe_batch(problems, v0s, **kwargs) -> BatchResult:
    """LP of every run: the head's gradient flow from `v0s[i]` with the features frozen at `B0`
    (`linear_probe_reduced`; its limit is `probing.lp_limit`). Keywords as in
    `fine_tune_batch` (`observe` sees `Z = Z0`); `BatchResult.v` is the head along the flow."""
    return _batch("lp", problems, v0s, **kwargs)


METHODS = ("ft", "lp", "lpft")


def _batch(method, problems, v0s, *, t_final, save_at=None, observe=None, chunk_size=64, group_by_cost=True,
           store=None, progress=None, sharding="named", regularizer=None, learning_rates=(1.0, 1.0),
           **solve_kwargs) -> BatchResult:  # fmt: skip
    """`fine_tune_batch` for `method` "ft" (FT from `v0s`), "lpft" (FT from LP's limit) or "lp"."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} must be one of {METHODS}")
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
    reduce, solve_one = _phase_functions(treedef, rp_treedef, method, settings)
    if store is not None:
        # Finished chunks are reused only by the same batch: the settings and every input array
        # name the substore, so a changed horizon or problem set never picks up stale chunks.
        store = store.substore("batch-" + batch_digest(settings, method, params))
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


def lp_ft_batch(problems, v0s=None, **kwargs) -> BatchResult:
    """LP-FT of every run: FT from LP's closed-form limit (`probing.lp_limit`; ridge with a head
    penalty). `v0s` (default 0) matters only where `X B0ᵀ` is rank deficient."""
    stacked = stack_problems(problems)
    if v0s is None:
        v0s = jnp.zeros((jax.tree.leaves(stacked)[0].shape[0], stacked.B0.shape[-2]))
    return _batch("lpft", stacked, v0s, **kwargs)

"""Run a flat batch of independent runs as `jit(vmap(run_fn))`, chunk by chunk.

Each chunk's batch axis is sharded over the local devices (a 1-D `Mesh` named `"runs"`); under
`jax.distributed` each process takes every `process_count`-th chunk, so one command run on
every host covers the sweep. Run `i` always gets the key `fold_in(key, i)`, whatever the chunk
size, ordering or device count, so results do not depend on how the sweep is split.
Outer layer: imports the core, never the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .storage import ChunkStore


def _chunk_plan(num_runs: int, chunk_size: int, order) -> list[np.ndarray]:
    positions = np.arange(num_runs) if order is None else np.asarray(order)
    if sorted(positions.tolist()) != list(range(num_runs)):
        raise ValueError(f"order must be a permutation of range({num_runs})")
    return [positions[s : s + chunk_size] for s in range(0, num_runs, chunk_size)]


def stiffness_order(proxy) -> np.ndarray:
    """An `order` for `run_batch` that puts runs of similar stiffness in the same chunk.

    Adaptive solves under `vmap` step in lockstep until the slowest member finishes, so a chunk
    costs about its stiffest run; sorting by a proxy (e.g. `‖v⋆‖²·n`, or `t_final`) groups them.
    """
    return np.argsort(np.asarray(proxy), kind="stable")


def run_batch(
    run_fn: Callable[[dict, jax.Array], Mapping[str, jax.Array]],
    params: Mapping[str, np.ndarray],
    *,
    key: jax.Array,
    chunk_size: int = 256,
    store: ChunkStore | None = None,
    order=None,
    devices=None,
    progress=None,
) -> dict[str, np.ndarray]:
    """Evaluate `run_fn(params_i, key_i)` for every run `i` and stack the outputs.

    Args:
        run_fn: pure function of one run's parameters (a dict of scalars) and its key, returning
            a dict of arrays; it is vmapped and jitted once (all chunks share one shape).
        params: dict of equal-length 1-D arrays, one entry per run.
        key: base key; run `i` uses `jax.random.fold_in(key, i)`.
        chunk_size: runs per compiled call (bounds memory); rounded up to a multiple of the
            number of devices. The last chunk is padded with copies of its last run.
        store: a `ChunkStore`; finished chunks are written there and chunks already there are
            loaded instead of recomputed (resume).
        order: a permutation of the runs that decides which runs share a chunk
            (see `stiffness_order`); the outputs are always in run order.
        devices: devices to shard each chunk over (default: all local devices).
        progress: anything with `update(n)` (e.g. a `tqdm` bar), told runs done per chunk.

    Returns:
        dict of numpy arrays with leading axis `num_runs`. Under `jax.distributed` with several
        processes, only this process's chunks are computed; chunks of other processes are read
        from the shared `store` if present, and missing ones raise.
    """
    names = list(params)
    if not names:
        raise ValueError("params must name at least one per-run parameter")
    num_runs = len(np.asarray(params[names[0]]))
    for name in names:
        if np.ndim(params[name]) != 1 or len(params[name]) != num_runs:
            raise ValueError(
                f"params[{name!r}] must be 1-D of length {num_runs}, got {np.shape(params[name])}"
            )
    devices = list(jax.local_devices() if devices is None else devices)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be ≥ 1")
    chunk_size = -(-chunk_size // len(devices)) * len(devices)
    chunk_size = min(chunk_size, -(-num_runs // len(devices)) * len(devices))
    mesh = Mesh(np.array(devices), ("runs",))
    sharding = NamedSharding(mesh, PartitionSpec("runs"))

    def one(p, index):
        return run_fn(p, jax.random.fold_in(key, index))

    batched = jax.jit(jax.vmap(one))
    chunks = _chunk_plan(num_runs, chunk_size, order)
    process, num_processes = jax.process_index(), jax.process_count()
    results: list[tuple[np.ndarray, dict]] = []
    for c, idx in enumerate(chunks):
        if store is not None and store.has(c):
            out = store.load(c)
        elif c % num_processes != process:
            raise RuntimeError(
                f"chunk {c} belongs to process {c % num_processes}; run every process to completion "
                f"(or rerun with resume on a shared store) before assembling"
            )
        else:
            padded = np.concatenate([idx, np.full(chunk_size - len(idx), idx[-1])])
            args = {n: jnp.asarray(np.asarray(params[n])[padded]) for n in names}
            args, index = jax.device_put((args, jnp.asarray(padded)), sharding)
            out = {n: np.asarray(a)[: len(idx)] for n, a in batched(args, index).items()}
            if store is not None:
                store.save(c, out)
        results.append((idx, out))
        if progress is not None:
            progress.update(len(idx))
    first = results[0][1]
    stacked = {n: np.empty((num_runs,) + a.shape[1:], a.dtype) for n, a in first.items()}
    for idx, out in results:
        for n in stacked:
            stacked[n][idx] = out[n]
    return stacked

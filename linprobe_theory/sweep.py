"""Run a flat batch of independent runs as `jit(vmap(run_fn))`, chunk by chunk.

Each chunk's batch axis is sharded over the local devices (a 1-D `Mesh` named `"runs"`); under
`jax.distributed` each process computes the chunks `chunks_for_process` assigns it (every
`process_count`-th chunk), so one command run on every host covers the sweep, and the hosts
meet in a shared `ChunkStore`. Run `i` always gets the key `fold_in(key, i)`, whatever the chunk
size, ordering or device count, so results do not depend on how the sweep is split.
Outer layer: imports the core, never the reverse. See `docs/scaling.md`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .reduced import ReducedProblem
from .storage import ChunkStore

RUNS_KEY = "__runs__"  # run indices stored beside each chunk, checked on resume


def chunk_plan(num_runs: int, chunk_size: int, order=None) -> list[np.ndarray]:
    """Split runs (in `order`, default `0…num_runs−1`) into consecutive chunks of `chunk_size`."""
    positions = np.arange(num_runs) if order is None else np.asarray(order)
    if positions.shape != (num_runs,) or not np.array_equal(np.sort(positions), np.arange(num_runs)):
        raise ValueError(f"order must be a permutation of range({num_runs})")
    return [positions[s : s + chunk_size] for s in range(0, num_runs, chunk_size)]


def chunks_for_process(num_chunks: int, process_index: int, process_count: int) -> list[int]:
    """The chunks process `process_index` of `process_count` computes: `c ≡ process_index
    (mod process_count)`. Round robin keeps the load balanced when chunks are sorted by
    stiffness (`stiffness_order`), and every chunk has exactly one owner."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")
    return list(range(process_index, num_chunks, process_count))


def stiffness_order(proxy) -> np.ndarray:
    """An `order` for `run_batch` that puts runs of similar stiffness in the same chunk.

    Adaptive solves under `vmap` step in lockstep until the slowest member finishes, so a chunk
    costs about its stiffest run; sorting by a proxy (e.g. `‖v⋆‖²·n`, or `t_final`) groups them.
    """
    return np.argsort(np.asarray(proxy), kind="stable")


def stiffness_estimates(setup, params, *, key, chunk_size: int = 256) -> np.ndarray:
    """`ReducedProblem.stiffness(v0)` of every run, for `stiffness_order`.

    `setup(p, key) -> (problem, v0)` builds a run's problem and head exactly as its `run_fn`
    does (same `params`, same base `key`, so run `i` sees `fold_in(key, i)` in both). One pass
    of `O(d)` work per run, no solve, done whole by every process of a multi-process run.
    Measured on the main study: grouping by this estimate cut
    the lockstep work of the FT solves 3.3× (run-steps summed over chunks of their slowest run).
    """

    def estimate(p, k):
        problem, v0 = setup(p, k)
        return {"stiffness": ReducedProblem.from_problem(problem).stiffness(v0)}

    # Every process computes every estimate (cheap, deterministic): all derive the same order.
    return run_batch(estimate, params, key=key, chunk_size=chunk_size, processes=(0, 1))["stiffness"]


SHARDINGS = ("named", "shard_map")


@functools.lru_cache(maxsize=64)
def _batched(run_fn, mesh=None, sharding: str = "named"):
    """`jit(vmap(run_fn))` with the base key as an unbatched argument; cached per `run_fn`, so
    repeated sweeps (e.g. a resume in the same process) reuse the compiled executable.

    `sharding="named"`: one vmapped program over the whole chunk, its batch axis sharded by a
    `NamedSharding` (XLA partitions it; a vmapped adaptive `while_loop` then runs until the
    chunk's slowest run is done on every device). `"shard_map"`: each device runs its own vmapped
    loop over its slice, so a device stops when its own slowest run does (diffrax issue #718,
    jax #20968; measured in `benchmarks/bench_batch.py`)."""

    def one(p, index, key):
        return run_fn(p, jax.random.fold_in(key, index))

    vmapped = jax.vmap(one, in_axes=(0, 0, None))
    if sharding == "named" or mesh is None:
        return jax.jit(vmapped)
    runs = PartitionSpec("runs")
    # check_vma=False: equinox's error_if (inside diffrax) builds a cond whose branches the
    # varying-axes check types differently under shard_map.
    mapped = jax.shard_map(
        vmapped, mesh=mesh, in_specs=(runs, runs, PartitionSpec()), out_specs=runs, check_vma=False
    )
    return jax.jit(mapped)


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
    processes: tuple[int, int] | None = None,
    sharding: str = "named",
    wait_timeout: float | None = None,
) -> dict[str, np.ndarray]:
    """Evaluate `run_fn(params_i, key_i)` for every run `i` and stack the outputs.

    Args:
        run_fn: pure function of one run's parameters (a dict of arrays: scalars, or e.g. a
            precomputed `ReducedProblem`'s fields) and its key, returning a dict of arrays; it is
            vmapped and jitted once (all chunks share one shape).
        params: dict of arrays whose leading axis is the run (`num_runs` long), e.g. 1-D
            columns of scalars; numpy or jax arrays (jax arrays are gathered chunk by chunk
            where they live, numpy ones copied over); only the chunk in flight is moved.
        key: base key; run `i` uses `jax.random.fold_in(key, i)`.
        chunk_size: runs per compiled call (bounds memory); rounded up to a multiple of the
            number of devices. The last chunk is padded with copies of its last run.
        store: a `ChunkStore`; finished chunks are written there and chunks already there are
            loaded instead of recomputed (resume). A chunk written under another chunk plan
            (chunk size, `order`, device count) is refused rather than mixed in.
        order: a permutation of the runs that decides which runs share a chunk
            (see `stiffness_order`); the outputs are always in run order.
        devices: devices to shard each chunk over (default: all local devices).
        progress: anything with `update(n)` (e.g. a `tqdm` bar), told runs done per chunk.
        processes: `(process_index, process_count)`; default `jax.process_index()`,
            `jax.process_count()`. Overriding it lets one machine play one process of a sweep.
        sharding: how a chunk is split over several devices: `"named"` (one partitioned
            program) or `"shard_map"` (a loop per device); the same answers either way.
        wait_timeout: under `jax.distributed`, how long (seconds) a process that finished its
            own chunks waits for the others' (None: as long as their owners are alive).

    Returns:
        dict of numpy arrays with leading axis `num_runs`. With several processes each computes
        its own chunks (`chunks_for_process`) into `store`, which must be on a file system all
        processes share (`distributed.open_store`); under a real `jax.distributed` run each
        then waits for the others' chunks to appear there and all return the full table. A
        lost process makes the others raise, naming its missing chunks
        (`distributed.wait_for_chunks`); with `processes` overridden, a chunk of another
        process still missing raises at once.
    """
    names = list(params)
    if not names:
        raise ValueError("params must name at least one per-run parameter")
    first_shape = np.shape(params[names[0]])
    num_runs = first_shape[0] if first_shape else 0
    for name in names:
        shape = np.shape(params[name])
        if not shape or shape[0] != num_runs:
            raise ValueError(
                f"params[{name!r}] must have a leading run axis of length {num_runs}, "
                f"got shape {np.shape(params[name])}"
            )
    if num_runs == 0:
        raise ValueError("params must hold at least one run")
    devices = list(jax.local_devices() if devices is None else devices)
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be ≥ 1")
    chunk_size = -(-chunk_size // len(devices)) * len(devices)
    chunk_size = min(chunk_size, -(-num_runs // len(devices)) * len(devices))
    mesh = Mesh(np.array(devices), ("runs",))
    placement = NamedSharding(mesh, PartitionSpec("runs"))
    process, num_processes = (jax.process_index(), jax.process_count()) if processes is None else processes
    if num_processes > 1 and store is None:
        raise ValueError("a sweep over several processes needs a ChunkStore on a shared file system")

    if sharding not in SHARDINGS:
        raise ValueError(f"sharding={sharding!r} must be one of {SHARDINGS}")
    batched = _batched(run_fn, mesh if len(devices) > 1 else None, sharding)
    chunks = chunk_plan(num_runs, chunk_size, order)
    # jax arrays stay where they are (a chunk is gathered on device); anything else is numpy.
    columns = {n: params[n] if isinstance(params[n], jax.Array) else np.asarray(params[n]) for n in names}

    def compute(idx):
        padded = np.concatenate([idx, np.full(chunk_size - len(idx), idx[-1])])
        # One copy per chunk onto the devices: a d-sized parameter is moved only while in flight.
        args, index = jax.device_put(({n: columns[n][padded] for n in names}, padded), placement)
        return {n: np.asarray(a)[: len(idx)] for n, a in batched(args, index, key).items()}

    def load(c, idx):
        out = store.load(c)
        runs = out.pop(RUNS_KEY, None)
        if runs is None or not np.array_equal(runs, idx):
            raise ValueError(
                f"chunk {c} in {store.directory} holds other runs than this sweep's chunk {c}: the chunk "
                f"plan changed (chunk_size, order or device count); resume with the same plan"
            )
        return out

    results: dict[int, dict] = {}
    mine = chunks_for_process(len(chunks), process, num_processes)
    watch = None
    if processes is None and num_processes > 1:
        from .distributed import PeerWatch  # outer layer, like this module

        others = sorted(set(range(len(chunks))) - set(mine))
        watch = PeerWatch(store, others, owner=lambda c: c % num_processes)
    for c in mine:
        idx = chunks[c]
        if store is not None and store.has(c):
            results[c] = load(c, idx)
        else:
            results[c] = compute(idx)
            if store is not None:
                store.save(c, {**results[c], RUNS_KEY: idx})
        if progress is not None:
            progress.update(len(idx))
        if watch is not None:
            watch.check()  # a lost peer is named now, not after this process's last chunk

    if len(results) < len(chunks):
        missing = [c for c in range(len(chunks)) if c not in results and not store.has(c)]
        if missing and processes is None and num_processes > 1:
            from .distributed import wait_for_chunks  # outer layer, like this module

            wait_for_chunks(
                store, missing, owner=lambda c: c % num_processes, timeout_s=wait_timeout, watch=watch
            )
            missing = []
        if missing:
            raise RuntimeError(
                f"chunks {missing} of other processes are not in {store.directory} yet; run every "
                f"process to completion (or rerun with resume on the shared store) before assembling"
            )
        for c in range(len(chunks)):
            if c not in results:
                results[c] = load(c, chunks[c])

    first = results[0]
    stacked = {n: np.empty((num_runs,) + a.shape[1:], a.dtype) for n, a in first.items()}
    for c, idx in enumerate(chunks):
        for n in stacked:
            stacked[n][idx] = results[c][n]
    return stacked

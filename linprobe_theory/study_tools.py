"""Building blocks shared by the study scripts in `experiments/`: the config fields every study
has, and the batched sweep they all run (outer layer; the CLI itself is in `experiment.py`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from .experiment import field
from .integrate import SolveStatus
from .sweep import run_batch, stiffness_estimates, stiffness_order


@dataclasses.dataclass(frozen=True)
class CommonConfig:
    """Problem size, solver and batching fields shared by every study's config.

    A study's config subclasses this (also frozen) and adds its own fields after these; it
    redeclares a field here only to change its default or help text (the field keeps its place).
    """

    d: int = field(100, "input dimension")
    k: int = field(3, "feature dimension")
    m: int = field(20, "dimension of the ID subspace S")
    n: int = field(40, "number of ID training examples")
    coverage: float = field(0.95, "cos θ_max(R0, S⊥)")
    t_final: float = field(20.0, "integration horizon (runs stop earlier at steady state)")
    grad_tol: float = field(
        1e-7,
        "steady-state stop: gradient norm below this (explicit solvers jitter at ~1e-9, so far smaller "
        "values never trigger and every run integrates to t_final)",
    )
    chunk_size: int = field(64, "runs per compiled batch")
    seed: int = field(0, "base random seed")


def run_sweep(one_run, params, *, key, config, store, progress, setup=None) -> dict:
    """`run_batch(one_run, params)` in chunks of `config.chunk_size`, with the progress bar sized.

    With `setup(p, key) -> (problem, v0)` (built exactly as `one_run` builds them), runs of
    similar stiffness share a chunk: a vmapped chunk runs as long as its slowest run. A sweep
    that fits in one chunk has nothing to group, so it skips the estimates (an `O(d)` pass over
    every run, and a compilation of `setup`: 1.9 s of bound_tightness' 8 s per sweep in --quick).
    """
    num_runs = len(next(iter(params.values())))
    if progress is not None:
        progress.reset(total=num_runs)
    grouped = setup is not None and num_runs > config.chunk_size
    order = stiffness_order(stiffness_estimates(setup, params, key=key)) if grouped else None
    return run_batch(
        one_run, params, key=key, chunk_size=config.chunk_size, store=store, progress=progress, order=order
    )


def param_grid(names, rows) -> dict[str, np.ndarray]:
    """A sweep's parameters as columns: `rows` holds one tuple per run, in the order of `names`."""
    return dict(zip(names, map(np.array, zip(*rows, strict=True)), strict=True))


def failed_solves(table, *columns: str) -> int:
    """How many entries of the status `columns` say a solve failed (beyond steady state)."""
    return int(sum(np.sum(np.asarray(table[c]) > SolveStatus.STEADY_STATE) for c in columns))

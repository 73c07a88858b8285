"""The two per-run functions behind `fine_tune_batch` and their compiled cache.

Phase 1 (`reduce`, O(d) per run): a run's `ReducedProblem`, the head its solve starts from
(`v0`, or LP's limit for LP-FT) and its stiffness estimate, run over all problems by
`_reduce_all` in one compiled loop. Phase 2 (`solve_one`, d-free): the reduced FT or LP flow
from that head, saving the exact OOD, ID and training losses. Inputs travel as flat dicts of
arrays (`_as_params`) so that `sweep.run_batch` can chunk them.
"""

from __future__ import annotations

import jax
import numpy as np

from . import reduced as red
from .fingerprints import frozen
from .flows import make_flow
from .probing import lp_limit
from .reduced_flow import fine_tune_reduced, linear_probe_reduced


def _as_params(tree) -> tuple[dict, object]:
    leaves, treedef = jax.tree.flatten(tree)
    return {f"leaf{i:03d}": leaf for i, leaf in enumerate(leaves)}, treedef


def _from_params(p: dict, treedef):
    return jax.tree.unflatten(treedef, [p[f"leaf{i:03d}"] for i in range(len(p))])


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


def _phase_functions(treedef, rp_treedef, method: str, settings: dict):
    """The two per-run functions, cached by their settings: `run_batch` compiles once per
    function object, so a repeated call with equal settings reuses the compiled code."""
    try:
        key = (treedef, rp_treedef, method, tuple((n, frozen(v)) for n, v in sorted(settings.items())))
        hash(key)
    except (TypeError, ValueError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        key = None  # a traced or unhashable setting: build afresh
    if key is not None and key in _PHASES:
        return _PHASES[key]
    flow = make_flow(regularizer=settings["regularizer"], learning_rates=settings["learning_rates"])

    def reduce(p, _):
        problem, v0 = _from_params(p, treedef)
        v_start = lp_limit(problem, v0, flow) if method == "lpft" else v0
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
        solver = linear_probe_reduced if method == "lp" else fine_tune_reduced
        sol = solver(rp, p["v_start"], observe=observe_all, **solver_settings)
        return {**sol.ys, "status": sol.status, "num_steps": sol.num_steps, "t_stop": sol.t_stop}

    if key is not None:
        if len(_PHASES) >= 16:
            _PHASES.clear()
        _PHASES[key] = (reduce, solve_one)
    return reduce, solve_one

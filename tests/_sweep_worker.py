"""Subprocess helper for tests/test_sharding.py and tests/test_sweep.py (not a test module).

    python _sweep_worker.py sharding OUT.npz        # needs 4 fake CPU devices (XLA_FLAGS)
    python _sweep_worker.py sweep STORE OUT.npz [--resume] [--slow SECONDS]

`sweep` runs a 10-chunk sweep into a ChunkStore at STORE, writing the results and the list of
chunks it computed (not loaded) to OUT.npz; `--slow` sleeps after each chunk so a parent can
kill it mid-sweep.
"""

import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import linprobe_theory as lt  # noqa: E402
from linprobe_theory.comparison import compare_methods  # noqa: E402
from linprobe_theory.storage import ChunkStore  # noqa: E402
from linprobe_theory.sweep import run_batch, stiffness_order  # noqa: E402

SPEC = lt.ProblemSpec(d=12, k=2, m=4, n=6)
NUM_RUNS = 13


def compare_run(p, key):
    k_prob, k_head = jax.random.split(key)
    problem = lt.make_problem(SPEC, key=k_prob, eps=p["eps"])
    v0 = lt.random_head(problem, key=k_head)
    return compare_methods(problem, v0, t_final=p["t_final"], num_saves=8)


def compare_params():
    eps = np.linspace(0.0, 0.5, NUM_RUNS)
    t_final = np.where(np.arange(NUM_RUNS) % 3 == 0, 40.0, 10.0)
    return {"eps": eps, "t_final": t_final}


def cheap_run(p, key):
    """Closed-form LP on a small problem: a sweep whose chunks cost milliseconds."""
    problem = lt.make_problem(SPEC, key=key, eps=p["eps"])
    v_lp = lt.linear_probe_solution(problem, jnp.zeros(SPEC.k))
    return {"lp_ood": lt.ood_loss(problem, v_lp, problem.B0), "v_lp": v_lp, "eps": p["eps"]}


def cheap_params(num_runs=30):
    return {"eps": np.linspace(0.0, 0.6, num_runs)}


class _Recorder(ChunkStore):
    """A ChunkStore that records which chunks were computed (saved) rather than loaded."""

    computed: list

    def save(self, index, arrays):
        self.computed.append(index)
        super().save(index, arrays)


def sharding(out):
    assert jax.device_count() == 4, jax.devices()
    params = compare_params()
    order = stiffness_order(-params["t_final"])  # a non-trivial permutation: slow runs first
    key = jax.random.key(7)
    one = run_batch(compare_run, params, key=key, chunk_size=5, devices=jax.devices()[:1])
    four = run_batch(compare_run, params, key=key, chunk_size=6, order=order)
    mapped = run_batch(compare_run, params, key=key, chunk_size=6, order=order, sharding="shard_map")
    np.savez(
        out,
        **{f"one/{n}": a for n, a in one.items()},
        **{f"four/{n}": a for n, a in four.items()},
        **{f"mapped/{n}": a for n, a in mapped.items()},
    )


def sweep(store_dir, out, resume, slow):
    class Slow:
        def update(self, n):
            time.sleep(slow)

    store = _Recorder(store_dir, "worker-sweep", resume=resume)
    store.computed = []
    res = run_batch(
        cheap_run,
        cheap_params(),
        key=jax.random.key(3),
        chunk_size=3,
        store=store,
        progress=Slow() if slow else None,
    )
    np.savez(out, computed=np.array(store.computed, dtype=int), **res)


def batch_on_devices(out):
    """`fine_tune_batch` with its chunks split over the devices, at a size where batched LAPACK
    calls on two devices at once used to deadlock (the steady-state limit's linear solve)."""
    spec = lt.ProblemSpec(d=1000, k=10, m=50, n=100, eps=0.1)
    keys = jax.random.split(jax.random.key(3), 128)
    problems = jax.vmap(lambda k: lt.make_problem(spec, key=k))(keys)
    v0s = jax.vmap(lambda p, k: lt.random_head(p, key=k))(problems, keys)
    res = lt.fine_tune_batch(problems, v0s, t_final=10.0, chunk_size=64)
    np.savez(out, ood=res.ood, status=res.status)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "sharding":
        sharding(sys.argv[2])
    elif mode == "batch":
        batch_on_devices(sys.argv[2])
    else:
        slow = float(sys.argv[sys.argv.index("--slow") + 1]) if "--slow" in sys.argv else 0.0
        sweep(sys.argv[2], sys.argv[3], "--resume" in sys.argv, slow)

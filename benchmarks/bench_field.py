"""Hand-written vs `jax.grad` vector field of the reduced FT flow, per run-step, in one run.

The flows take their vector fields from `jax.grad` of the objective; the brief keeps a
hand-written gradient only where a benchmark shows it faster. This measures both on the main
path: `fine_tune_reduced`'s flow (`(v, Z)`, diagonal Gram form) under `jit(vmap)` over a batch
of runs, end points saved, no early stop, so both integrate the same steps.

    .venv/bin/python benchmarks/bench_field.py [--quick] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import time

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

import linprobe_theory as lt  # noqa: E402
from linprobe_theory import reduced  # noqa: E402
from linprobe_theory.coordinates import reduced_coordinates  # noqa: E402
from linprobe_theory.flows import ft_field  # noqa: E402
from linprobe_theory.integrate import integrate  # noqa: E402


def hand_written(t, y, rp):
    gv, gZ = reduced.ft_gradients(rp, *y)
    return -gv, -gZ


def autodiff(t, y, rp):
    return ft_field(t, y, (lt.make_flow(), reduced_coordinates(rp)))


def measure(field, rps, v0s, options, repeats):
    run = jax.jit(jax.vmap(lambda rp, v: integrate(field, (v, rp.Z0), rp, options)))
    jax.block_until_ready(run(rps, v0s))  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        sol = jax.block_until_ready(run(rps, v0s))
        best = min(best, time.perf_counter() - start)
    steps = int(jnp.max(sol.num_steps))
    return best, steps, sol


def main(args):
    d, k, m, n, runs = (100, 4, 10, 20, 16) if args.quick else (1000, 10, 50, 100, 64)
    spec = lt.ProblemSpec(d=d, k=k, m=m, n=n, coverage=0.95)
    keys = jax.random.split(jax.random.key(0), runs)
    problems = jax.vmap(lambda key: lt.make_problem(spec, key=key))(keys)
    rps = jax.vmap(reduced.ReducedProblem.from_problem)(problems)
    v0s = jax.vmap(lambda p, key: lt.random_head(p, key=key))(problems, keys)
    options = lt.SolveOptions(t_final=10.0, grad_tol=None)
    row = {"d": d, "k": k, "m": m, "n": n, "runs": runs}
    finals = {}
    for name, field in (("hand_written", hand_written), ("autodiff", autodiff)):
        seconds, steps, sol = measure(field, rps, v0s, options, repeats=1 if args.quick else 3)
        row[name] = {"seconds": seconds, "steps": steps, "us_per_run_step": 1e6 * seconds / (steps * runs)}
        finals[name] = sol.ys
    row["max_abs_difference"] = float(
        max(
            jnp.max(jnp.abs(a - b))
            for a, b in zip(
                jax.tree.leaves(finals["hand_written"]), jax.tree.leaves(finals["autodiff"]), strict=True
            )
        )
    )
    row["hand_over_autodiff"] = row["hand_written"]["us_per_run_step"] / row["autodiff"]["us_per_run_step"]
    print(json.dumps(row, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(row, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--json", default=None, help="also write the measurements here")
    main(parser.parse_args())

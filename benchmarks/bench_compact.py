"""Per-run time of a sweep (problem construction + `compare_methods`) against `d`, on the full
construction (`make_problem`) and the d-free one (`make_compact_problem`), in one run.

Both build the same problems (coverage set: equal up to an isometric embedding) and solve the
same ODEs; the ratio compact/full at each `d` and the spread over `d` are the numbers that
matter (wall-clock per run is machine-specific).

    .venv/bin/python benchmarks/bench_compact.py [--quick] [--json out.json]
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
from linprobe_theory.comparison import compare_methods  # noqa: E402


def per_run_seconds(make, spec, keys, repeats):
    def one(key):
        problem = make(spec, key=key, eps=0.1)
        v0 = lt.random_head(problem, key=jax.random.fold_in(key, 1))
        return compare_methods(problem, v0, t_final=20.0, num_saves=8)["ft_ood_final"]

    run = jax.jit(jax.vmap(one))
    jax.block_until_ready(run(keys))  # compile
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(run(keys))
        best = min(best, time.perf_counter() - start)
    return best / len(keys), out


def main(args):
    runs, dims, repeats = (16, (100, 1000), 1) if args.quick else (64, (100, 1000, 10_000), 3)
    keys = jax.random.split(jax.random.key(0), runs)
    rows = []
    for d in dims + (10**6,):
        spec = lt.ProblemSpec(d=d, k=3, m=20, n=40, coverage=0.95)
        row = {"d": d, "runs": runs}
        compact, c_out = per_run_seconds(lt.make_compact_problem, spec, keys, repeats)
        row["compact_ms_per_run"] = 1e3 * compact
        if d in dims:  # the full construction at d = 10⁶ would need 40 × 10⁶ inputs per run
            full, f_out = per_run_seconds(lt.make_problem, spec, keys, repeats)
            row["full_ms_per_run"] = 1e3 * full
            row["full_over_compact"] = full / compact
            row["max_rel_difference"] = float(jnp.max(jnp.abs(f_out - c_out) / jnp.abs(c_out)))
        rows.append(row)
    compact_times = [r["compact_ms_per_run"] for r in rows]
    full_times = [r["full_ms_per_run"] for r in rows if "full_ms_per_run" in r]
    summary = {
        "rows": rows,
        "compact_spread_over_d": max(compact_times) / min(compact_times),
        "full_spread_over_d": max(full_times) / min(full_times),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None)
    main(parser.parse_args())

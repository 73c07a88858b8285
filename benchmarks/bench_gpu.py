"""One-file accelerator benchmark: runs per second of FT sweeps at 10³, 10⁴ and 10⁵ runs, on one
device and on all local devices, written as JSON. Installs nothing beyond the project; meant to
be run in one go by a session that has an accelerator, and in `--quick` form on a CPU in CI.

    python benchmarks/bench_gpu.py [--quick] [--json OUT] [--budget SECONDS]

Each run builds its own problem d-free (`make_compact_problem` of the benchmark spec: d = 1000,
k = 10, m = 50, n = 100, ε = 0.1, coverage 0.9), draws a random head, reduces the problem and
integrates FT (`fine_tune_reduced`, rtol 1e-8, steady-state stop, horizon 10), returning the
final OOD loss, status and step count: the per-run work of a study, inside `sweep.run_batch`
chunks (memory bounded by the chunk). Compilation is excluded (one warm-up chunk per device
set); the timed sizes reuse the compiled chunk. Sizes whose projected time would overrun
`--budget` (default 420 s, under the 8-minute limit) are skipped and say so in the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_x64", True)

import linprobe_theory as lt  # noqa: E402
from linprobe_theory import reduced as red  # noqa: E402
from linprobe_theory.sweep import run_batch  # noqa: E402

SPEC = lt.ProblemSpec(d=1000, k=10, m=50, n=100, eps=0.1, coverage=0.9)
T_FINAL, RTOL, ATOL = 10.0, 1e-8, 1e-12


def one_run(p, key):
    k_problem, k_head = jax.random.split(key)
    problem = lt.make_compact_problem(SPEC, key=k_problem)
    v0 = lt.random_head(problem, key=k_head)
    rp = red.ReducedProblem.from_problem(problem)
    sol = lt.fine_tune_reduced(rp, v0, t_final=T_FINAL, rtol=RTOL, atol=ATOL)
    v, Z = sol.ys
    return {"ood": red.ood_loss(rp, v[-1], Z[-1]), "status": sol.status, "steps": sol.num_steps}


def sweep(num_runs, devices, chunk_size, sharding):
    params = {"run": np.arange(num_runs)}
    t0 = time.perf_counter()
    out = run_batch(
        one_run, params, key=jax.random.key(0), chunk_size=chunk_size, devices=devices, sharding=sharding
    )
    return time.perf_counter() - t0, out


def measure(sizes, devices, chunk_size, sharding, budget_end):
    # Warm-up: compile the chunk program once (the timed sizes reuse it).
    compile_s, _ = sweep(min(chunk_size, sizes[0]), devices, chunk_size, sharding)
    rows, rate = [], None
    for n in sizes:
        left = budget_end - time.perf_counter()
        if rate is not None and n / rate > left:
            rows.append(
                {"runs": n, "skipped": f"projected {n / rate:.0f} s > {left:.0f} s left in the budget"}
            )
            continue
        seconds, out = sweep(n, devices, chunk_size, sharding)
        rate = n / seconds
        solved = out["status"] <= lt.SolveStatus.STEADY_STATE
        rows.append(
            {
                "runs": n,
                "seconds": round(seconds, 4),
                "runs_per_s": round(rate, 2),
                "solved": int(np.sum(solved)),
                "steps_mean": float(np.mean(out["steps"])),
                "ood_median": float(np.median(out["ood"])),
            }
        )
    return {"devices": len(devices), "sharding": sharding, "compile_s": round(compile_s, 2), "sizes": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: 64 and 256 runs")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole benchmark")
    parser.add_argument("--chunk-size", type=int, default=None, help="runs per compiled call")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    budget_end = started + args.budget
    sizes = [64, 256] if args.quick else [1_000, 10_000, 100_000]
    local = jax.local_devices()
    chunk_size = args.chunk_size or (32 if args.quick else 4096)
    results = {
        "benchmark": "bench_gpu",
        "spec": {"d": SPEC.d, "k": SPEC.k, "m": SPEC.m, "n": SPEC.n, "eps": 0.1, "coverage": 0.9},
        "t_final": T_FINAL,
        "rtol": RTOL,
        "chunk_size": chunk_size,
        "platform": local[0].platform,
        "device_kind": local[0].device_kind,
        "local_devices": len(local),
        "jax": jax.__version__,
        "host": platform.node(),
        "runs": [measure(sizes, local[:1], chunk_size, "named", budget_end)],
    }
    if len(local) > 1:
        for sharding in ("named", "shard_map"):
            results["runs"].append(measure(sizes, local, chunk_size, sharding, budget_end))
    else:
        results["multi_device"] = "skipped: one local device"
    results["total_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

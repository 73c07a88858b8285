"""The one-call path against numpy + scipy: `fine_tune_batch` and `jit(vmap(fine_tune))`.

    python benchmarks/bench_batch.py                    # d=1000, k=10, m=50, n=100, 128 runs
    python benchmarks/bench_batch.py --cpu-devices 2    # each CPU core a JAX device (sharding)
    python benchmarks/bench_batch.py --quick            # CI-sized, no asserts

Two families of FT problems at one size, each solved four ways over the same horizon:
- `benchmark`: `bench_sweep.py`'s instances (`make_problem(eps=0.1)`, heads `random_head`,
  `t_final = 10`);
- `scaled`: a new user's (inputs and targets scaled by 1/√n, heads N(0, I/k), ε = 0.1,
  `t_final = 20`).
Paths, all at rtol 1e-8, atol 1e-12, with their defaults otherwise:
(A) `lt.fine_tune_batch(problems, v0s, t_final=…)`, one call (steady-state stop on);
(B) `jax.jit(jax.vmap(lambda p, v: lt.fine_tune(p, v, t_final=…, save_at=[t_final])))`, what a
    user writes first, then the losses of its end state;
(C) numpy + scipy `solve_ivp(method="DOP853")` on the flattened `(v, B)` to `t_final`, on a
    subset of runs spread over the stiffness range;
(R) the reference: `fine_tune_batch(grad_tol=None, rtol=1e-10)`, every run to `t_final`.
Times are per run, compilation excluded (A and B are called once on the same inputs first);
(A) includes its O(d) reduction. Then (A)'s cost per run-step beside the flop floor, and, with
several devices, `run_batch`'s two shardings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time


def _args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run")
    ap.add_argument("--cpu-devices", type=int, default=0, help="expose this many CPU devices")
    ap.add_argument("--json", default=None, help="write the measurements to this JSON file")
    return ap.parse_args(argv)


ARGS = _args(sys.argv[1:]) if __name__ == "__main__" else None
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see bench_sweep.py
if ARGS is not None and ARGS.cpu_devices > 0:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.cpu_devices}"
    )

import equinox as eqx  # noqa: E402
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import linprobe_theory as lt  # noqa: E402
from linprobe_theory import reduced as red  # noqa: E402
from linprobe_theory.sweep import chunk_plan  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_sweep import scipy_ft  # noqa: E402  (C): the same numpy + scipy FT as bench_sweep's

RTOL, ATOL = 1e-8, 1e-12
FAMILIES = {"benchmark": dict(scale=False, t_final=10.0), "scaled": dict(scale=True, t_final=20.0)}


def build(spec, num_runs, scaled, seed=0):
    """Problems and heads of one family, stacked (run i from `fold_in(key(seed), i)`)."""

    @jax.jit
    @jax.vmap
    def one(i):
        k_prob, k_head = jax.random.split(jax.random.fold_in(jax.random.key(seed), i))
        problem = lt.make_problem(spec, key=k_prob)
        if not scaled:
            return problem, lt.random_head(problem, key=k_head)
        c = 1.0 / np.sqrt(spec.n)
        problem = eqx.tree_at(lambda p: (p.X, p.y), problem, (c * problem.X, c * problem.y))
        return problem, lt.random_head(problem, key=k_head, std=1.0 / np.sqrt(spec.k))

    return jax.block_until_ready(one(jnp.arange(num_runs)))


def timed(fn, *args, repeat=1):
    """(result, seconds) of the fastest of `repeat` calls, after one call to compile."""
    jax.block_until_ready(fn(*args))
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return out, best


def path_a(problems, v0s, t_final, chunk):
    r = lt.fine_tune_batch(problems, v0s, t_final=t_final, rtol=RTOL, atol=ATOL, chunk_size=chunk)
    return r.ood[:, -1], r.train[:, -1], r.num_steps, r.status


def make_path_b(t_final):
    def one(problem, v0):
        tr = lt.fine_tune(problem, v0, t_final=t_final, save_at=[t_final], rtol=RTOL, atol=ATOL, check=False)
        v, B = tr.v[-1], tr.B[-1]
        return lt.ood_loss(problem, v, B), lt.train_loss(problem, v, B), tr.num_steps, tr.status

    return jax.jit(jax.vmap(one))


def path_c(problems, v0s, runs, t_final):
    out, nfev = [], []
    t0 = time.perf_counter()
    for i in runs:
        X, y, B0 = (np.asarray(a[i]) for a in (problems.X, problems.y, problems.B0))
        v, B, n = scipy_ft(X, y, B0, np.asarray(v0s[i]), t_final)
        problem = jax.tree.map(lambda a, i=i: a[i], problems)
        out.append(
            (
                float(lt.ood_loss(problem, jnp.asarray(v), jnp.asarray(B))),
                float(np.sum((X @ (B.T @ v) - y) ** 2)),
            )
        )
        nfev.append(n)
    return np.array(out), (time.perf_counter() - t0) / len(runs), float(np.mean(nfev))


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


def matmul_rate():
    """Flop rate of one core on a (256 × 256) float64 matmul, as XLA runs it: the floor's unit."""
    a = jnp.ones((256, 256))
    f = jax.jit(lambda a: a @ a)
    _, s = timed(f, a, repeat=20)
    return 2 * 256**3 / s


def per_step(problems, v0s, t_final, chunk, steps):
    """(A)'s solve phase alone: seconds per run-step, counted two ways — per step a run takes,
    and per step its chunk takes (a vmapped chunk steps until its slowest run is done)."""
    rps = jax.jit(jax.vmap(red.ReducedProblem.from_problem))(problems)
    stiffness = np.asarray(jax.vmap(lambda rp, v: rp.stiffness(v))(rps, v0s))
    # Re-solve from the reduced problems only: fine_tune_batch on the compact problems of these.
    order = np.argsort(stiffness, kind="stable")
    lockstep = sum(len(c) * int(np.max(steps[c])) for c in chunk_plan(len(steps), chunk, order))

    def solve(rps, v0s):
        sol = jax.vmap(lambda rp, v: lt.fine_tune_reduced(rp, v, t_final=t_final, rtol=RTOL, atol=ATOL))(
            rps, v0s
        )
        return sol.num_steps

    chunks = chunk_plan(len(steps), chunk, order)
    take = lambda tree, idx: jax.tree.map(lambda a: a[idx], tree)
    f = jax.jit(solve)
    jax.block_until_ready(f(take(rps, chunks[0]), v0s[chunks[0]]))
    seconds = np.inf
    for _ in range(3):  # best of 3 passes over the chunks
        t0 = time.perf_counter()
        for c in chunks:
            jax.block_until_ready(f(take(rps, c), v0s[c]))
        seconds = min(seconds, time.perf_counter() - t0)
    return seconds / float(np.sum(steps)), seconds / lockstep


def reduction_parts(problems):
    """ms per run of (A)'s O(d) reduction and its parts, each compiled alone as `_reduce_all`
    runs it (a `lax.map` over the stacked problems, 16 at a time; best of 5): `X Q_S` (the
    inputs read once), the SVD of `X Q_S` (one matrix at a time, `linalg.thin_svd`), the whole
    `ReducedProblem.from_problem`, and, for comparison only, the Gram route the library does not
    take (`eigh` of `(X Q_S)ᵀ X Q_S`, which squares the condition number)."""
    from linprobe_theory import linalg

    parts = {
        "X_QS": lambda p: p.X @ p.Q_S,
        "svd_of_X_QS": lambda p: linalg.thin_svd(p.X @ p.Q_S),
        "from_problem": red.ReducedProblem.from_problem,
        "gram_eigh_instead": lambda p: linalg.symmetric_eigh((p.X @ p.Q_S).T @ (p.X @ p.Q_S)),
    }
    num_runs = problems.X.shape[0]
    out = {}
    for name, part in parts.items():
        f = jax.jit(lambda ps, part=part: jax.lax.map(part, ps, batch_size=16))
        out[name] = 1e3 * timed(f, problems, repeat=5)[1] / num_runs
    return out


def shardings(problems, v0s, t_final, chunk):
    """`fine_tune_batch` with each of `run_batch`'s shardings over the local devices."""
    out = {}
    for sharding in ("named", "shard_map"):
        fn = lambda p, v, s=sharding: (
            lt.fine_tune_batch(p, v, t_final=t_final, rtol=RTOL, atol=ATOL, chunk_size=chunk, sharding=s).ood
        )
        ood, seconds = timed(fn, problems, v0s)
        out[sharding] = {"ms_per_run": 1e3 * seconds / len(v0s), "ood": ood}
    out["same_answers"] = bool(np.array_equal(out["named"].pop("ood"), out["shard_map"].pop("ood")))
    return out


def d_scan(dims, num_runs, chunk, t_final=10.0):
    """Per-run time on the full path, set-up included, as `d` grows: `make_problem` (timed) and
    `fine_tune_batch` of problems with `coverage=0.9`, whose reduced problem (hence ODE) is the
    same for every `d`, so any change is cost per run, not work."""
    rows = []
    for d in dims:
        spec = lt.ProblemSpec(d=d, k=10, m=50, n=100, eps=0.1, coverage=0.9)
        make = jax.jit(
            jax.vmap(lambda i, spec=spec: lt.make_problem(spec, key=jax.random.fold_in(jax.random.key(1), i)))
        )
        problems, s_make = timed(make, jnp.arange(num_runs), repeat=2)
        v0s = jax.vmap(lambda p, i: lt.random_head(p, key=jax.random.fold_in(jax.random.key(2), i)))(
            problems, jnp.arange(num_runs)
        )
        fn = lambda p, v: lt.fine_tune_batch(p, v, t_final=t_final, rtol=RTOL, atol=ATOL, chunk_size=chunk)
        result, s_solve = timed(lambda p, v, fn=fn: fn(p, v).ood, problems, v0s, repeat=2)
        rows.append(
            {
                "d": d,
                "make_ms_per_run": 1e3 * s_make / num_runs,
                "batch_ms_per_run": 1e3 * s_solve / num_runs,
                "total_ms_per_run": 1e3 * (s_make + s_solve) / num_runs,
                "ood_final_mean": float(np.mean(result[:, -1])),
            }
        )
        print(
            f"  d={d:>6}: make_problem {rows[-1]['make_ms_per_run']:7.2f} ms/run, fine_tune_batch "
            f"{rows[-1]['batch_ms_per_run']:6.2f} ms/run, total {rows[-1]['total_ms_per_run']:7.2f}",
            flush=True,
        )
    totals = [r["total_ms_per_run"] for r in rows]
    batches = [r["batch_ms_per_run"] for r in rows]
    return {
        "rows": rows,
        "total_max_over_min": max(totals) / min(totals),
        "batch_max_over_min": max(batches) / min(batches),
    }


def main(args):
    if args.quick:
        d, k, m, n, num_runs, loop_n, chunk = 200, 5, 20, 40, 32, 4, 16
    else:
        d, k, m, n, num_runs, loop_n, chunk = 1000, 10, 50, 100, 128, 16, 64
    spec = lt.ProblemSpec(d=d, k=k, m=m, n=n, eps=0.1)
    versions = {name: __import__(name).__version__ for name in ("jax", "diffrax", "numpy", "scipy")}
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "devices": [str(dev) for dev in jax.devices()],
        **versions,
    }
    rate = matmul_rate()
    floor_flops = 6 * 4 * k * m  # the floor: 6 evaluations × ~4km flops per step
    print(
        f"machine: {machine}\nmatmul rate {rate / 1e9:.2f} GFLOP/s; floor {floor_flops} flops/run-step",
        flush=True,
    )
    results = {
        "machine": machine,
        "size": dict(d=d, k=k, m=m, n=n, runs=num_runs, chunk=chunk),
        "families": {},
    }
    results["matmul_gflops"] = rate / 1e9
    for name, fam in FAMILIES.items():
        t_final = fam["t_final"]
        problems, v0s = build(spec, num_runs, fam["scale"])
        # Best of 5: a single call varies by up to 1.6x run to run on this 2-core machine.
        (ood_a, train_a, steps_a, status_a), s_a = timed(
            lambda p, v, t=t_final: path_a(p, v, t, chunk), problems, v0s, repeat=5
        )
        path_b = make_path_b(t_final)
        (ood_b, train_b, steps_b, status_b), s_b = timed(path_b, problems, v0s, repeat=5)
        ref = lt.fine_tune_batch(problems, v0s, t_final=t_final, grad_tol=None, rtol=1e-10, chunk_size=chunk)
        stiffness = np.asarray(
            jax.vmap(lambda p, v: red.ReducedProblem.from_problem(p).stiffness(v))(problems, v0s)
        )
        subset = np.argsort(stiffness)[num_runs // (2 * loop_n) :: num_runs // loop_n][:loop_n]
        res_c, s_c, nfev_c = path_c(problems, v0s, subset, t_final)
        step_s, lockstep_s = per_step(problems, v0s, t_final, chunk, np.asarray(steps_a))
        row = {
            "t_final": t_final,
            "a_ms_per_run": 1e3 * s_a / num_runs,
            "b_ms_per_run": 1e3 * s_b / num_runs,
            "c_ms_per_run": 1e3 * s_c,
            "c_over_a": s_c / (s_a / num_runs),
            "c_over_b": s_c / (s_b / num_runs),
            "a_steps_mean": float(np.mean(steps_a)),
            "b_steps_mean": float(np.mean(steps_b)),
            "c_nfev_mean": nfev_c,
            "ref_steps_mean": float(np.mean(ref.num_steps)),
            "a_steady_fraction": float(np.mean(np.asarray(status_a) == 1)),
            "a_status_max": int(np.max(status_a)),
            "b_status_max": int(np.max(status_b)),
            "a_vs_ref_ood_rel": rel(ood_a, ref.ood[:, -1]),
            "b_vs_ref_ood_rel": rel(ood_b, ref.ood[:, -1]),
            "c_vs_ref_ood_rel": rel(res_c[:, 0], ref.ood[subset, -1]),
            "a_vs_c_ood_rel": rel(np.asarray(ood_a)[subset], res_c[:, 0]),
            "train_max": {
                "a": float(np.max(train_a)),
                "b": float(np.max(train_b)),
                "c": float(np.max(res_c[:, 1])),
            },
            "a_us_per_run_step": 1e6 * step_s,
            "a_us_per_lockstep_run_step": 1e6 * lockstep_s,
            "floor_us_per_run_step": 1e6 * floor_flops / rate,
        }
        row["reduction_ms_per_run"] = reduction_parts(problems)
        row["a_step_over_floor"] = row["a_us_per_run_step"] / row["floor_us_per_run_step"]
        row["a_lockstep_over_floor"] = row["a_us_per_lockstep_run_step"] / row["floor_us_per_run_step"]
        if len(jax.local_devices()) > 1:
            row["shardings"] = shardings(problems, v0s, t_final, chunk)
        results["families"][name] = row
        print(
            f"{name} (t_final={t_final}, {num_runs} runs, d={d} k={k} m={m} n={n}):\n"
            f"  (A) fine_tune_batch   {row['a_ms_per_run']:8.3f} ms/run  c/A = {row['c_over_a']:6.1f}x  "
            f"steps {row['a_steps_mean']:.0f} (steady {row['a_steady_fraction']:.3f})  OOD vs ref {row['a_vs_ref_ood_rel']:.1e}\n"
            f"  (B) jit(vmap(fine_tune)) {row['b_ms_per_run']:6.3f} ms/run  c/B = {row['c_over_b']:6.1f}x  "
            f"steps {row['b_steps_mean']:.0f}  OOD vs ref {row['b_vs_ref_ood_rel']:.1e}\n"
            f"  (C) numpy+scipy DOP853 {row['c_ms_per_run']:7.1f} ms/run  nfev {nfev_c:.0f}  OOD vs ref "
            f"{row['c_vs_ref_ood_rel']:.1e}  (ref: {row['ref_steps_mean']:.0f} steps to t_final at rtol 1e-10)\n"
            f"  (A) per run-step {row['a_us_per_run_step']:.2f} us ({row['a_us_per_lockstep_run_step']:.2f} us per "
            f"lockstep run-step), floor {row['floor_us_per_run_step']:.3f} us: {row['a_step_over_floor']:.1f}x "
            f"({row['a_lockstep_over_floor']:.1f}x)\n"
            f"  (A) reduction ms/run: "
            + ", ".join(f"{n} {v:.3f}" for n, v in row["reduction_ms_per_run"].items())
            + (f"\n  shardings: {row['shardings']}" if "shardings" in row else ""),
            flush=True,
        )
    dims = (100, 400) if args.quick else (100, 1000, 10_000)
    print(f"full path over d ({num_runs // 2} runs each, coverage 0.9: one ODE for every d):", flush=True)
    results["d_scan"] = d_scan(dims, num_runs // 2, chunk)
    print(
        f"  max/min over d: total {results['d_scan']['total_max_over_min']:.2f}x, "
        f"fine_tune_batch alone {results['d_scan']['batch_max_over_min']:.2f}x",
        flush=True,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(ARGS))

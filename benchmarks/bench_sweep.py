"""FT sweep throughput: batched reduced coordinates vs full coordinates vs numpy + scipy.

    python benchmarks/bench_sweep.py --quick            # CI-sized (about a minute), no asserts
    python benchmarks/bench_sweep.py                    # d=1000, k=10, m=50, n=100, 256 runs
    python benchmarks/bench_sweep.py --cpu-devices 2    # the same, each CPU core a JAX device

All paths integrate the same FT gradient flow from the same problems and heads over the same
interval `[0, t_final]` (no steady-state stop for any of them), at rtol 1e-8, atol 1e-12:
(a) this toolkit: `ReducedProblem.from_problem` (the O(d) Gram precompute) and the stiffness
    proxy for every run in one `jit(vmap)` call, then `fine_tune_reduced` for every run via
    `run_batch`, runs of similar stiffness grouped per chunk (`stiffness_order`); both phases
    timed, compilation excluded (reported separately);
(b) `fine_tune(coordinates="full")`, one run at a time in a Python loop;
(c) numpy + scipy `solve_ivp(method="DOP853")` on the flattened (v, B), written here as a
    researcher would.
(b) and (c) run on a subset spread evenly over the stiffness range (every `N/loop`-th run in
stiffness order), so its mean cost is the sweep's. Generating the problems (`make_problem`) is
common to all paths and not timed for any of them. Final OOD and training losses of the three
are compared. Then (a)'s cost per run as `d` grows (problems built with `coverage`, whose
reduced problem, hence ODE, is the same for every `d`), and peak memory of sweeps of several
sizes and chunk sizes (in child processes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time


def _early_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run (small d, few runs)")
    ap.add_argument(
        "--cpu-devices", type=int, default=0, help="expose this many CPU devices (0: JAX's default, one)"
    )
    ap.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    ap.add_argument(
        "--memory-child", nargs=5, metavar=("RUNS", "CHUNK", "D", "T", "REPORT"), help=argparse.SUPPRESS
    )
    return ap.parse_args(argv)


ARGS = _early_args(sys.argv[1:]) if __name__ == "__main__" else None
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU calls LAPACK (OpenBLAS) inside batched kernels; OpenBLAS's own threads then fight XLA's
# for the cores (measured: a batched make_problem at d=1000 took 30.6 s with default threads and
# 0.21 s with one).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
if ARGS is not None and ARGS.cpu_devices > 0:
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={ARGS.cpu_devices}"
    )

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import linprobe_theory as lt  # noqa: E402
from linprobe_theory import reduced as red  # noqa: E402
from linprobe_theory.sweep import run_batch, stiffness_order  # noqa: E402

RTOL, ATOL = 1e-8, 1e-12
T_FINAL = 10.0  # FT is converged by t ≈ 1–2 here (training loss ~1e-18 at t = 10)
MAX_STEPS = 200_000
KEY = jax.random.key(0)


# --- problems ------------------------------------------------------------------------------------


def build(spec, num_runs, seed=0, chunk=16):
    """Problems and random heads for runs 0…num_runs−1 (run i from `fold_in(key(seed), i)`),
    stacked on the device, built by `jit(vmap)` in chunks; returns (problems, heads, seconds)."""

    @jax.jit
    @jax.vmap
    def one(i):
        k_prob, k_head = jax.random.split(jax.random.fold_in(jax.random.key(seed), i))
        problem = lt.make_problem(spec, key=k_prob)
        return problem, lt.random_head(problem, key=k_head)

    jax.block_until_ready(one(jnp.arange(chunk)))  # compile
    t0 = time.perf_counter()
    parts = [jax.block_until_ready(one(jnp.arange(s, s + chunk))) for s in range(0, num_runs, chunk)]
    seconds = time.perf_counter() - t0
    problems, heads = jax.tree.map(lambda *a: jnp.concatenate(a)[:num_runs], *parts)
    return problems, heads, seconds


# --- (a) the toolkit -----------------------------------------------------------------------------


def final_losses(rp):
    def observe(v, Z):
        return {"ood": red.ood_loss(rp, v, Z), "train": red.train_loss(rp, v, Z)}

    return observe


def reduce_one(problem, v0):
    """Phase 1 of (a), per run: the O(d) reduction and the stiffness proxy."""
    rp = red.ReducedProblem.from_problem(problem)
    return rp, rp.stiffness(v0)


REDUCE = jax.jit(jax.vmap(reduce_one))
RP_FIELDS = [f.name for f in dataclasses.fields(red.ReducedProblem)]


def solve_run(p, key):
    """Phase 2 of (a), per run: the d-free reduced FT flow to t_final, final losses only."""
    rp = red.ReducedProblem(**{name: p[name] for name in RP_FIELDS})
    sol = lt.fine_tune_reduced(
        rp,
        p["v0"],
        t_final=T_FINAL,
        observe=final_losses(rp),
        rtol=RTOL,
        atol=ATOL,
        grad_tol=None,
        max_steps=MAX_STEPS,
    )
    return {
        "ood": sol.ys["ood"][-1],
        "train": sol.ys["train"][-1],
        "steps": sol.num_steps,
        "status": sol.status,
    }


def toolkit_timed(problems, heads, chunk_size):
    """(a). Phase 1 reduces every problem in one `jit(vmap)` call on the device, where a sweep
    that builds its problems has them (so no d-sized array crosses to the host); phase 2 runs
    the reduced flows through `run_batch` in chunks of runs of similar stiffness. Both are
    compiled first (phase 1 on the same shapes, phase 2 on one chunk), then timed."""

    def phase_1():
        rps, stiffness = jax.block_until_ready(REDUCE(problems, heads))
        return {**{name: getattr(rps, name) for name in RP_FIELDS}, "v0": heads}, np.asarray(stiffness)

    t0 = time.perf_counter()
    columns, _ = phase_1()
    # The same on-device gather run_batch does per chunk (compiled once per shape).
    warm = {name: col[np.arange(min(len(heads), chunk_size))] for name, col in columns.items()}
    run_batch(solve_run, warm, key=KEY, chunk_size=chunk_size)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    columns, stiffness = phase_1()
    t1 = time.perf_counter()
    order = stiffness_order(stiffness)
    out = run_batch(solve_run, columns, key=KEY, chunk_size=chunk_size, order=order)
    t2 = time.perf_counter()
    return out, order, t1 - t0, t2 - t1, compile_s


# --- (b) full coordinates, (c) numpy + scipy -----------------------------------------------------


def toolkit_full_loop(problems, heads, runs):
    """(b): fine_tune in full coordinates, one run at a time."""

    def one(problem, v0):
        tr = lt.fine_tune(
            problem,
            v0,
            t_final=T_FINAL,
            rtol=RTOL,
            atol=ATOL,
            grad_tol=None,
            coordinates="full",
            max_steps=MAX_STEPS,
        )
        v, B = tr.v[-1], tr.B[-1]
        return lt.ood_loss(problem, v, B), lt.train_loss(problem, v, B)

    get = lambda i: (jax.tree.map(lambda a: jnp.asarray(a[i]), problems), jnp.asarray(heads[i]))
    jax.block_until_ready(one(*get(runs[0])))  # compile
    t0 = time.perf_counter()
    res = [jax.block_until_ready(one(*get(i))) for i in runs]
    return np.array(res), time.perf_counter() - t0


def scipy_ft(X, y, B0, v0, t_final):
    """(c): what a researcher writes: full coordinates, flattened state, DOP853."""
    k, d = B0.shape

    def field(t, z):
        v, B = z[:k], z[k:].reshape(k, d)
        r = X @ (B.T @ v) - y
        Xr = X.T @ r
        return np.concatenate([-2.0 * B @ Xr, (-2.0 * np.outer(v, Xr)).ravel()])

    sol = solve_ivp(
        field, (0.0, t_final), np.concatenate([v0, B0.ravel()]), method="DOP853", rtol=RTOL, atol=ATOL
    )
    return sol.y[:k, -1], sol.y[k:, -1].reshape(k, d), sol.nfev


def scipy_loop(problems, heads, runs):
    res, nfev = [], []
    t0 = time.perf_counter()
    for i in runs:
        X, y, B0, B_star, v_star = (
            np.asarray(a[i]) for a in (problems.X, problems.y, problems.B0, problems.B_star, problems.v_star)
        )
        v, B, n = scipy_ft(X, y, B0, np.asarray(heads[i]), T_FINAL)
        e = B.T @ v - B_star.T @ v_star
        ood = jax.tree.map(lambda a, i=i: a[i], problems.ood)
        res.append((float(ood.quadratic_form(jnp.asarray(e))), float(np.sum((X @ (B.T @ v) - y) ** 2))))
        nfev.append(n)
    return np.array(res), time.perf_counter() - t0, np.array(nfev)


# --- d scan and memory ---------------------------------------------------------------------------


def per_d(ds, k, m, n, num_runs, chunk_size):
    rows = []
    for d in ds:
        spec = lt.ProblemSpec(d=d, k=k, m=m, n=n, eps=0.1, coverage=0.9)
        problems, heads, data_s = build(spec, num_runs)
        out, _, reduce_s, solve_s, _ = toolkit_timed(problems, heads, chunk_size)
        row = {
            "d": d,
            "data_ms": 1e3 * data_s / num_runs,
            "reduce_ms": 1e3 * reduce_s / num_runs,
            "solve_ms": 1e3 * solve_s / num_runs,
            "steps_mean": float(np.mean(out["steps"])),
        }
        row["toolkit_ms"] = row["reduce_ms"] + row["solve_ms"]
        rows.append(row)
        print(
            f"  d={d:6d}: data {row['data_ms']:7.2f} | reduce {row['reduce_ms']:6.2f} + solve "
            f"{row['solve_ms']:6.2f} = {row['toolkit_ms']:6.2f} ms/run (mean steps {row['steps_mean']:.0f})",
            flush=True,
        )
    return rows


def memory_child(num_runs, chunk_size, d, t_final, report):
    """A sweep that builds each problem inside the run (nothing d-sized outlives its chunk)."""
    spec = lt.ProblemSpec(d=d, k=10, m=50, n=100, eps=0.1)

    def run_fn(p, key):
        k_prob, k_head = jax.random.split(key)
        problem = lt.make_problem(spec, key=k_prob)
        rp = red.ReducedProblem.from_problem(problem)
        v0 = lt.random_head(problem, key=k_head)
        sol = lt.fine_tune_reduced(rp, v0, t_final=t_final, observe=final_losses(rp), grad_tol=None)
        return {"ood": sol.ys["ood"][-1], "status": sol.status}

    start = _rss_mib("VmRSS")
    t0 = time.perf_counter()
    out = run_batch(run_fn, {"run": np.arange(num_runs)}, key=KEY, chunk_size=chunk_size)
    wall = time.perf_counter() - t0
    failed = int(np.sum(out["status"] > 1))
    row = {"start_rss_mib": start, "peak_rss_mib": _rss_mib("VmHWM"), "wall_s": wall, "failed": failed}
    with open(report, "w") as f:
        json.dump(row, f)


def _rss_mib(field):
    """This process's resident memory (`VmRSS`) or its peak (`VmHWM`), from /proc. Not
    `getrusage`: its `ru_maxrss` carries over the parent's peak through fork + exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory(configs, d, t_final):
    rows = []
    for num_runs, chunk in configs:
        report = f"/tmp/bench_sweep_memory_{os.getpid()}.json"
        cmd = [
            sys.executable,
            __file__,
            "--memory-child",
            str(num_runs),
            str(chunk),
            str(d),
            str(t_final),
            report,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if proc.returncode != 0:
            print(f"  memory child failed: {proc.stderr[-500:]}", flush=True)
            continue
        with open(report) as f:
            row = {"runs": num_runs, "chunk": chunk, **json.load(f)}
        os.unlink(report)
        rows.append(row)
        print(
            f"  {num_runs:6d} runs, chunk {chunk:5d}: peak RSS {row['peak_rss_mib']:7.0f} MiB "
            f"(at start {row['start_rss_mib']:.0f} MiB; {row['wall_s']:.1f} s, {row['failed']} failed)",
            flush=True,
        )
    return rows


# --- main ----------------------------------------------------------------------------------------


def main(args):
    if args.memory_child:
        runs, chunk, d, t_final, report = args.memory_child
        return memory_child(int(runs), int(chunk), int(d), float(t_final), report)
    if args.quick:
        d, k, m, n, num_runs, loop_n, chunk = 200, 5, 20, 40, 64, 4, 16
        ds, per_d_runs = (100, 1000), 16
        mem_d, mem_configs = 100, [(256, 32), (1024, 32), (1024, 128)]
    else:
        d, k, m, n, num_runs, loop_n, chunk = 1000, 10, 50, 100, 256, 16, 32
        ds, per_d_runs = (100, 300, 1000, 3000, 10_000), 64
        mem_d, mem_configs = 1000, [(1024, 64), (4096, 64), (4096, 256), (4096, 1024)]
    versions = {
        name: __import__(name).__version__
        for name in ("jax", "jaxlib", "diffrax", "equinox", "numpy", "scipy")
    }
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "devices": [str(dev) for dev in jax.devices()],
        "python": platform.python_version(),
        **versions,
    }
    print(f"machine: {machine}", flush=True)
    results = {"machine": machine, "mode": "quick" if args.quick else "full", "rtol": RTOL, "atol": ATOL}

    # Memory first, while this process is small (children are measured on their own).
    print(f"peak memory of sweeps (d={mem_d}, t_final=1, problems built inside each run):", flush=True)
    results["memory"] = memory(mem_configs, mem_d, 1.0)

    spec = lt.ProblemSpec(d=d, k=k, m=m, n=n, eps=0.1)
    problems, heads, data_s = build(spec, num_runs)
    out_a, order, reduce_s, solve_s, compile_s = toolkit_timed(problems, heads, chunk)
    t_a = reduce_s + solve_s
    subset = order[num_runs // (2 * loop_n) :: num_runs // loop_n][:loop_n]
    res_b, t_b = toolkit_full_loop(problems, heads, subset)
    res_c, t_c, nfev_c = scipy_loop(problems, heads, subset)
    per = {"a": t_a / num_runs, "b": t_b / loop_n, "c": t_c / loop_n}
    a_sub = np.stack([out_a["ood"][subset], out_a["train"][subset]], axis=1)
    main_row = {
        "d": d, "k": k, "m": m, "n": n, "runs": num_runs, "loop_runs": loop_n, "chunk": chunk,
        "t_final": T_FINAL,
        "data_ms_per_run": 1e3 * data_s / num_runs,
        "a_reduce_ms_per_run": 1e3 * reduce_s / num_runs,
        "a_solve_ms_per_run": 1e3 * solve_s / num_runs,
        "a_ms_per_run": 1e3 * per["a"], "b_ms_per_run": 1e3 * per["b"], "c_ms_per_run": 1e3 * per["c"],
        "c_over_a": per["c"] / per["a"], "b_over_a": per["b"] / per["a"], "c_over_b": per["c"] / per["b"],
        "a_compile_s": compile_s,
        "a_steps": [int(out_a["steps"].min()), float(out_a["steps"].mean()), int(out_a["steps"].max())],
        "a_steps_subset_mean": float(out_a["steps"][subset].mean()),
        "c_nfev_subset_mean": float(nfev_c.mean()),
        "a_status_max": int(out_a["status"].max()),
        "max_abs_diff_a_b": float(np.max(np.abs(a_sub - res_b))),
        "max_abs_diff_a_c": float(np.max(np.abs(a_sub - res_c))),
        "max_rel_diff_ood_a_c": float(np.max(np.abs(a_sub[:, 0] - res_c[:, 0]) / res_c[:, 0])),
    }  # fmt: skip
    results["main"] = main_row
    print(
        f"d={d} k={k} m={m} n={n}, {num_runs} runs, t_final={T_FINAL}, rtol={RTOL}, atol={ATOL}\n"
        f"  data (make_problem, not timed for any path): {main_row['data_ms_per_run']:.2f} ms/run\n"
        f"  (a) batched reduced: {1e3 * per['a']:.2f} ms/run = reduce {main_row['a_reduce_ms_per_run']:.2f} "
        f"+ solve {main_row['a_solve_ms_per_run']:.2f} ({1 / per['a']:.1f} runs/s; chunks of {chunk}, "
        f"compile {compile_s:.1f} s; steps {main_row['a_steps']}, worst status {main_row['a_status_max']})\n"
        f"  (b) full-coordinate loop: {1e3 * per['b']:.1f} ms/run ({loop_n} runs)\n"
        f"  (c) numpy+scipy DOP853: {1e3 * per['c']:.1f} ms/run ({loop_n} runs, mean nfev "
        f"{nfev_c.mean():.0f}; (a) took {main_row['a_steps_subset_mean']:.0f} steps = "
        f"{6 * main_row['a_steps_subset_mean']:.0f} evaluations on them)\n"
        f"  ratios per run: c/a = {per['c'] / per['a']:.1f}x, b/a = {per['b'] / per['a']:.1f}x, "
        f"c/b = {per['c'] / per['b']:.2f}x\n"
        f"  agreement on final (ood, train): max|a−b| = {main_row['max_abs_diff_a_b']:.2e}, "
        f"max|a−c| = {main_row['max_abs_diff_a_c']:.2e} "
        f"(OOD relative {main_row['max_rel_diff_ood_a_c']:.1e})",
        flush=True,
    )

    print(f"(a) per run as d grows (k={k}, m={m}, n={n}, {per_d_runs} runs per d, coverage=0.9):", flush=True)
    rows = per_d(ds, k, m, n, per_d_runs, chunk)
    solve = [r["solve_ms"] for r in rows]
    total = [r["toolkit_ms"] for r in rows]
    results["per_d"] = rows
    results["per_d_spread"] = {"solve": max(solve) / min(solve), "reduce_plus_solve": max(total) / min(total)}
    print(
        f"  spread (max/min over d): solve {max(solve) / min(solve):.2f}x, "
        f"reduce + solve {max(total) / min(total):.2f}x",
        flush=True,
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(ARGS))

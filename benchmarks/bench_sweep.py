"""FT sweep throughput: batched reduced coordinates vs full coordinates vs numpy + scipy.

    python benchmarks/bench_sweep.py --quick     # CI-sized, tens of seconds, no timing asserts
    python benchmarks/bench_sweep.py             # d=1000, k=10, m=50, n=100, 256 runs

All three integrate the same FT gradient flow from the same problems and heads to a fixed
`t_final` (no steady-state stop, `grad_tol=None`, for all three), at rtol 1e-8, atol 1e-12:
(a) this toolkit's reduced path, jit(vmap) over runs via `run_batch`;
(b) `fine_tune(coordinates="full")`, one run at a time in a Python loop;
(c) numpy + scipy `solve_ivp(method="DOP853")` on the flattened (v, B), written here as a
    researcher would. Final OOD and train losses of the three are compared (max |diff|).
Problems are built with a jit(vmap) of `make_problem` and their Gram quantities
(`ReducedProblem`, O(d)) precomputed; (a) is timed without
compilation, which is reported separately. Set OPENBLAS_NUM_THREADS=1 on shared machines.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# XLA:CPU calls LAPACK (OpenBLAS) inside batched kernels; OpenBLAS's own threads then fight XLA's
# for the cores (measured: a batched make_problem at d=1000 took 30.6 s with default threads and
# 0.21 s with one).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

import linprobe_theory as lt  # noqa: E402
from linprobe_theory import reduced as red  # noqa: E402
from linprobe_theory.dynamics import _ft_field_reduced, integrate_gradient_flow  # noqa: E402
from linprobe_theory.sweep import run_batch  # noqa: E402

RTOL, ATOL = 1e-8, 1e-12


_BUILDERS: dict = {}


def build(spec, num_runs, seed=0):
    """Problems, heads and reduced problems for runs 0…num_runs−1, built in one jit(vmap) call
    (compiled once per spec; call once to warm up before timing)."""
    if spec not in _BUILDERS:

        def one(key):
            k_prob, k_head = jax.random.split(key)
            problem = lt.make_problem(spec, key=k_prob)
            return problem, lt.random_head(problem, key=k_head), red.ReducedProblem.from_problem(problem)

        _BUILDERS[spec] = jax.jit(jax.vmap(one))
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(num_runs))
    problems, heads, rps = jax.block_until_ready(_BUILDERS[spec](keys))
    return [jax.tree.map(lambda a, i=i: a[i], (problems, heads, rps)) for i in range(num_runs)]


def toolkit_batched(runs, t_final, chunk_size):
    """(a): the reduced flow under jit(vmap) via run_batch; returns (outputs, seconds)."""
    rps = jax.tree.map(lambda *a: jnp.stack(a), *[r[2] for r in runs])
    v0s = jnp.stack([r[1] for r in runs])

    def run_fn(p, key):
        i = p["run"]
        rp = jax.tree.map(lambda a: a[i], rps)
        sol = integrate_gradient_flow(
            _ft_field_reduced,
            (v0s[i], rp.Z0),
            rp,
            t_final=p["t_final"],
            save_at=jnp.stack([p["t_final"]]),
            rtol=RTOL,
            atol=ATOL,
            grad_tol=None,
            max_steps=200_000,
            solver=__import__("diffrax").Tsit5(),
            save_fn=lambda y: {"ood": red.ood_loss(rp, *y), "train": red.train_loss(rp, *y)},
        )
        return {
            "ood": sol.ys["ood"][-1],
            "train": sol.ys["train"][-1],
            "steps": sol.num_steps,
            "status": sol.status,
        }

    params = {"run": np.arange(len(runs)), "t_final": np.full(len(runs), t_final)}
    t0 = time.perf_counter()
    run_batch(run_fn, params, key=jax.random.key(0), chunk_size=chunk_size)  # compile + run
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = run_batch(run_fn, params, key=jax.random.key(0), chunk_size=chunk_size)
    return out, time.perf_counter() - t0, first


def toolkit_full_loop(runs, t_final):
    """(b): fine_tune in full coordinates, one run at a time."""

    def one(problem, v0):
        tr = lt.fine_tune(
            problem, v0, t_final=t_final, rtol=RTOL, atol=ATOL, grad_tol=None, coordinates="full"
        )
        v, B = tr.v[-1], tr.B[-1]
        return lt.ood_loss(problem, v, B), lt.train_loss(problem, v, B)

    jax.block_until_ready(one(runs[0][0], runs[0][1]))  # compile
    t0 = time.perf_counter()
    res = [jax.block_until_ready(one(p, v0)) for p, v0, _ in runs]
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
    return sol.y[:k, -1], sol.y[k:, -1].reshape(k, d)


def scipy_loop(runs, t_final):
    res = []
    t0 = time.perf_counter()
    for problem, v0, _ in runs:
        X, y, B0 = (np.asarray(a) for a in (problem.X, problem.y, problem.B0))
        v, B = scipy_ft(X, y, B0, np.asarray(v0), t_final)
        e = B.T @ v - np.asarray(problem.w_star)
        res.append(
            (float(problem.ood.quadratic_form(jnp.asarray(e))), float(np.sum((X @ (B.T @ v) - y) ** 2)))
        )
    return np.array(res), time.perf_counter() - t0


def per_d(ds, k, m, n, num_runs, t_final, chunk_size):
    rows = []
    for d in ds:
        spec = lt.ProblemSpec(d=d, k=k, m=m, n=n, eps=0.1)
        build(spec, num_runs)  # compile
        t0 = time.perf_counter()
        runs = build(spec, num_runs)
        setup = time.perf_counter() - t0
        _, solve, _ = toolkit_batched(runs, t_final, chunk_size)
        rows.append((d, setup / num_runs, solve / num_runs, (setup + solve) / num_runs))
        print(
            f"d={d:6d}: setup {1e3 * setup / num_runs:7.3f} ms/run, solve {1e3 * solve / num_runs:7.3f} ms/run, "  # noqa: E501
            f"total {1e3 * (setup + solve) / num_runs:7.3f} ms/run",
            flush=True,
        )
    return rows


def memory_child(num_runs, d, chunk_size, t_final):
    spec = lt.ProblemSpec(d=d, k=10, m=50, n=100, eps=0.1)

    def run_fn(p, key):
        k_prob, k_head = jax.random.split(key)
        problem = lt.make_problem(spec, key=k_prob)
        v0 = lt.random_head(problem, key=k_head)
        tr = lt.fine_tune(problem, v0, t_final=p["t_final"], grad_tol=None, check=False)
        return {"ood": lt.ood_loss(problem, tr.v[-1], tr.B[-1])}

    run_batch(run_fn, {"t_final": np.full(num_runs, t_final)}, key=jax.random.key(0), chunk_size=chunk_size)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-child", nargs=4, type=float, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        n, d, c, t = args.memory_child
        return memory_child(int(n), int(d), int(c), t)
    if args.quick:
        d, k, m, n, runs_n, loop_n, t_final, ds = 200, 5, 20, 40, 32, 4, 10.0, (100, 300)
    else:
        d, k, m, n, runs_n, loop_n, t_final, ds = (
            1000,
            10,
            50,
            100,
            256,
            16,
            10.0,
            (100, 300, 1000, 3000, 10000),
        )
    print(
        f"machine: {platform.processor() or platform.machine()}, nproc {os.cpu_count()}, jax {jax.__version__}, "  # noqa: E501
        f"devices {jax.devices()}",
        flush=True,
    )
    spec = lt.ProblemSpec(d=d, k=k, m=m, n=n, eps=0.1)
    runs = build(spec, runs_n)
    out_a, t_a, first_a = toolkit_batched(runs, t_final, chunk_size=runs_n)
    res_b, t_b = toolkit_full_loop(runs[:loop_n], t_final)
    res_c, t_c = scipy_loop(runs[:loop_n], t_final)
    per = {"a": t_a / runs_n, "b": t_b / loop_n, "c": t_c / loop_n}
    print(
        f"d={d} k={k} m={m} n={n} t_final={t_final} rtol={RTOL} atol={ATOL}; steps (a) "
        f"{out_a['steps'].min()}–{out_a['steps'].max()}, status max {out_a['status'].max()}"
    )
    print(
        f"(a) batched reduced: {runs_n} runs in {t_a:.3f} s = {1e3 * per['a']:.3f} ms/run "
        f"({runs_n / t_a:.1f} runs/s); compile+first run {first_a:.1f} s"
    )
    print(f"(b) full-coordinate loop: {1e3 * per['b']:.2f} ms/run ({1 / per['b']:.2f} runs/s, {loop_n} runs)")
    print(f"(c) numpy+scipy DOP853: {1e3 * per['c']:.2f} ms/run ({1 / per['c']:.2f} runs/s, {loop_n} runs)")
    print(
        f"ratios per run: c/a = {per['c'] / per['a']:.1f}x, b/a = {per['b'] / per['a']:.1f}x, c/b = {per['c'] / per['b']:.2f}x"  # noqa: E501
    )
    a_sub = np.stack([out_a["ood"][:loop_n], out_a["train"][:loop_n]], axis=1)
    print(
        f"agreement on final (ood, train): max|a−b| = {np.max(np.abs(a_sub - res_b)):.2e}, "
        f"max|a−c| = {np.max(np.abs(a_sub - res_c)):.2e}"
    )
    per_d(ds, k, m, n, 16 if args.quick else 64, t_final, 64)
    num, chunks = (512, (64, 256)) if args.quick else (4096, (128, 1024))
    for c in chunks:
        mem = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                str(num),
                "100" if args.quick else "1000",
                str(c),
                "1.0",
            ],
            capture_output=True,
            text=True,
            env=os.environ,
        )
        print(f"peak RSS, {num} runs, chunk {c}: {mem.stdout.strip() or mem.stderr[-300:]} MiB", flush=True)


if __name__ == "__main__":
    main()

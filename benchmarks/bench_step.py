"""Three ways to write one Tsit5 step of the reduced FT flow, per run-step, in one run.

Issue 12 asks for the cost per run-step within 10× of its flop floor. This measures whether the
way a step is written moves it, on the flow `fine_tune_reduced` solves (`v̇ = −2 Z g`,
`Ż = −2 v gᵀ`, `g = λ ⊙ (Zᵀ v) − b`), with a constant step (200 steps, no controller, so only
the step's own cost is timed), `jit` over a batch of `R` runs:

- `stages`: the stages as FusedTsit5 forms them — every stage point `Z + h Σ a_ij k_j` is a
  `k × m` array, runs on the leading axis (what `vmap` produces);
- `rank_one`: every stage's `Z`-slope is the rank-one `−2 v_j g_jᵀ`, so a stage point is `Z`
  plus a sum of rank-one terms and `Zᵀ v`, `Z g` at it are `Z`'s products plus inner products
  of `k`- and `m`-vectors: no `k × m` array is formed inside the step, only `Z1` and its error;
- `batch_last`: the `stages` arithmetic with the run axis last (minor), as elementwise
  products and sums, so that every operation vectorises along the runs;
- `fields_only`: six evaluations of the field, each at the previous one's Euler point, and
  nothing else — a lower bound for any six-stage step written with these operations.

Then `fine_tune_batch` itself at several chunk sizes (both of bench_batch's families, 128 runs):
ms per run, and µs per step a run takes and per lockstep run-step.

    .venv/bin/python benchmarks/bench_step.py [--quick] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import sys

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import linprobe_theory as lt  # noqa: E402
from linprobe_theory import reduced  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_batch as bb  # noqa: E402  (its families, timer and per-step count)

_T = diffrax.Tsit5.tableau
ROWS = [np.asarray(r, float) for r in _T.a_lower]
B_SOL, B_ERR = np.asarray(_T.b_sol, float), np.asarray(_T.b_error, float)
STEPS, H = 200, 1e-3


def _sum(coefficients, terms):
    return sum(float(a) * t for a, t in zip(coefficients, terms, strict=False) if a != 0.0)


def leading_field(lam, b, v, Z):
    """The FT field with the run axis leading: `v (R, k)`, `Z (R, k, m)`, `λ, b (R, m)`."""
    g = lam * jnp.einsum("rkm,rk->rm", Z, v) - b
    return -2.0 * jnp.einsum("rkm,rm->rk", Z, g), -2.0 * v[:, :, None] * g[:, None, :]


def last_field(lam, b, v, Z):
    """The FT field with the run axis last: `v (k, R)`, `Z (k, m, R)`, `λ, b (m, R)`."""
    g = lam * jnp.sum(Z * v[:, None, :], 0) - b
    return -2.0 * jnp.sum(Z * g[None], 1), -2.0 * v[:, None, :] * g[None]


def full_stages_step(field):
    """A step whose every stage point is a full `k × m` array per run (`stages`, `batch_last`)."""

    def step(lam, b, v, Z, f, h=H):
        fs = [f]
        for row in ROWS:
            vs = v + h * _sum(row, [fv for fv, _ in fs])
            Zs = Z + h * _sum(row, [fz for _, fz in fs])
            fs.append(field(lam, b, vs, Zs))
        err = jnp.sum(_sum(B_ERR, [fv for fv, _ in fs]) ** 2) + jnp.sum(
            _sum(B_ERR, [fz for _, fz in fs]) ** 2
        )
        return vs, Zs, fs[-1], h * h * err

    return step


def rank_one_step(lam, b, v, Z, f, h=H):
    """Stage points of `Z` kept as `Z + Σ_j c_j v_j g_jᵀ`; `f = (v̇, g, v)` of the step's start."""
    fvs, gs, vs_list = [f[0]], [f[1]], [f[2]]
    for row in ROWS:
        vs = v + h * _sum(row, fvs)
        terms = [(-2.0 * h * float(a), vj, gj) for a, vj, gj in zip(row, vs_list, gs, strict=False) if a]
        u = jnp.einsum("rkm,rk->rm", Z, vs) + sum(
            c * gj * jnp.sum(vj * vs, -1, keepdims=True) for c, vj, gj in terms
        )
        g = lam * u - b
        Zg = jnp.einsum("rkm,rm->rk", Z, g) + sum(
            c * vj * jnp.sum(gj * g, -1, keepdims=True) for c, vj, gj in terms
        )
        fvs.append(-2.0 * Zg)
        gs.append(g)
        vs_list.append(vs)
    V, G = jnp.stack(vs_list, -1), jnp.stack(gs, -1)  # (R, k, 7), (R, m, 7)
    Z1 = Z + jnp.einsum("rks,rms->rkm", V * (-2.0 * h * B_SOL), G)
    Z_err = jnp.einsum("rks,rms->rkm", V * (-2.0 * h * B_ERR), G)
    err = h * h * jnp.sum(_sum(B_ERR, fvs) ** 2) + jnp.sum(Z_err**2)
    return vs, Z1, (fvs[-1], gs[-1], vs_list[-1]), err


def fields_only_step(lam, b, v, Z, f, h=H):
    """Six field evaluations, each at the previous one's Euler point, and nothing else: the
    least any six-stage step written with these ops can cost (no stage sums, no error)."""
    for _ in range(6):
        v, Z = v + h * f[0], Z + h * f[1]
        f = leading_field(lam, b, v, Z)
    return v, Z, f, 0.0


def solver(step, first):
    @jax.jit
    def run(lam, b, v, Z):
        def body(carry, _):
            v, Z, f, err = carry
            v, Z, f, e = step(lam, b, v, Z, f)
            return (v, Z, f, err + e), None

        return jax.lax.scan(body, (v, Z, first(lam, b, v, Z), 0.0), None, length=STEPS)[0]

    return run


def first_rank_one(lam, b, v, Z):
    g = lam * jnp.einsum("rkm,rk->rm", Z, v) - b
    return -2.0 * jnp.einsum("rkm,rm->rk", Z, g), g, v


def instances(spec, runs):
    """λ, b, v0, Z0 of `runs` reduced problems of the benchmark's family (run i: fold_in(key(0), i))."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(runs))
    problems = jax.vmap(lambda key: lt.make_problem(spec, key=key))(keys)
    rps = jax.vmap(reduced.ReducedProblem.from_problem)(problems)
    v0s = jax.vmap(lambda p, key: lt.random_head(p, key=key))(problems, keys)
    return rps.curvature, rps.b, v0s, rps.Z0


def chunk_scan(chunks, num_runs):
    """`fine_tune_batch` on bench_batch's two families at each chunk size."""
    spec = lt.ProblemSpec(d=1000, k=10, m=50, n=100, eps=0.1)
    rows = []
    for family, setting in bb.FAMILIES.items():
        problems, v0s = bb.build(spec, num_runs, setting["scale"])
        t_final = setting["t_final"]
        for chunk in chunks:
            out, seconds = bb.timed(lambda p, v, c=chunk, t=t_final: bb.path_a(p, v, t, c), problems, v0s)
            steps = np.asarray(out[2])
            per_run_step, per_lockstep = bb.per_step(problems, v0s, t_final, chunk, steps)
            row = {
                "family": family,
                "chunk": chunk,
                "ms_per_run": 1e3 * seconds / num_runs,
                "us_per_run_step": 1e6 * per_run_step,
                "us_per_lockstep_run_step": 1e6 * per_lockstep,
                "mean_steps": float(steps.mean()),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(args):
    spec = (
        lt.ProblemSpec(d=100, k=4, m=10, n=20, eps=0.1)
        if args.quick
        else lt.ProblemSpec(d=1000, k=10, m=50, n=100, eps=0.1)
    )
    sizes = (8,) if args.quick else (8, 64, 256)
    rows = []
    for runs in sizes:
        lam, b, v, Z = instances(spec, runs)
        row = {"runs": runs, "k": spec.k, "m": spec.m, "steps": STEPS}
        ref, s = bb.timed(
            solver(full_stages_step(leading_field), leading_field), lam, b, v, Z, repeat=args.repeats
        )
        row["stages_us"] = 1e6 * s / (STEPS * runs)
        _, s = bb.timed(solver(fields_only_step, leading_field), lam, b, v, Z, repeat=args.repeats)
        row["fields_only_us"] = 1e6 * s / (STEPS * runs)
        out, s = bb.timed(solver(rank_one_step, first_rank_one), lam, b, v, Z, repeat=args.repeats)
        row["rank_one_us"] = 1e6 * s / (STEPS * runs)
        row["rank_one_max_abs_diff_Z"] = float(jnp.max(jnp.abs(out[1] - ref[1])))
        last = (lam.T, b.T, v.T, jnp.transpose(Z, (1, 2, 0)))
        out, s = bb.timed(solver(full_stages_step(last_field), last_field), *last, repeat=args.repeats)
        row["batch_last_us"] = 1e6 * s / (STEPS * runs)
        row["batch_last_max_abs_diff_Z"] = float(jnp.max(jnp.abs(jnp.transpose(out[1], (2, 0, 1)) - ref[1])))
        rows.append(row)
        print(json.dumps(row), flush=True)
    chunks = chunk_scan((8, 32) if args.quick else (8, 16, 32, 64, 128), 32 if args.quick else 128)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"step_forms": rows, "chunk_sizes": chunks}, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small size (smoke test)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (best kept)")
    parser.add_argument("--json", default=None, help="write the rows here")
    main(parser.parse_args())

"""The main job's cost and what its steady-state stop changes, in one run.

Issue 12 asks for the main job's default run (`experiments/sweep_alignment.py`) in ≤ 30 s on
2 cores, with its answers unchanged by the steady-state stop (final losses equal to runs to
t_final within 1e-7 relative). This times the script as a user runs it (a fresh interpreter,
wall clock, imports, compilation and figure included), then computes its table three ways in
this process — the default (steady-state stop, rtol 1e-8), every run to t_final at the same
rtol, and every run to t_final at rtol 1e-10 (the reference) — and reports the largest relative
differences of the final and best-over-time losses (runs whose reference value is below 1e-12,
where only absolute round-off is meaningful, are reported by their absolute difference).

    .venv/bin/python benchmarks/bench_main_job.py [--quick] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import dataclasses
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "experiments" / "sweep_alignment.py"
LOSSES = [
    f"{method}_{loss}"
    for method in ("ft", "lpft")
    for loss in ("ood_final", "ood_min", "id_final", "train_final")
]
TINY = 1e-12


def load_study():
    spec = importlib.util.spec_from_file_location("experiments_sweep_alignment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def wall_clock_of_the_script(quick: bool) -> float:
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, str(SCRIPT), "--out", out, "--no-progress"] + (["--quick"] if quick else [])
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True, cwd=out)
        return time.perf_counter() - t0


def differences(table, reference) -> dict:
    out = {}
    for name in LOSSES:
        x, y = np.asarray(table[name]), np.asarray(reference[name])
        big = np.abs(y) > TINY
        out[name] = {
            "max_rel": float(np.max(np.abs(x - y)[big] / np.abs(y[big]))) if big.any() else None,
            "runs_compared_relatively": int(big.sum()),
            "max_abs_where_tiny": float(np.max(np.abs(x - y)[~big])) if (~big).any() else None,
        }
    return out


def main(args):
    study = load_study()
    base = study.Config.quick() if args.quick else study.Config()
    result = {"quick": args.quick, "script_wall_s": wall_clock_of_the_script(args.quick)}
    tables = {}
    for name, grad_tol, rtol in (
        ("stop", base.grad_tol, base.rtol),
        ("to_t_final", None, base.rtol),
        ("reference", None, 1e-10),
    ):
        config = dataclasses.replace(base, grad_tol=grad_tol, rtol=rtol)
        t0 = time.perf_counter()
        tables[name] = study.compute(config, None, None)
        result[f"{name}_compute_s"] = time.perf_counter() - t0
        result[f"{name}_ft_steps_mean"] = float(np.mean(tables[name]["ft_steps"]))
    result["runs"] = len(tables["stop"]["ft_steps"])
    result["stop_vs_reference"] = differences(tables["stop"], tables["reference"])
    result["to_t_final_vs_reference"] = differences(tables["to_t_final"], tables["reference"])
    result["stop_vs_to_t_final"] = differences(tables["stop"], tables["to_t_final"])
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the main job's --quick size")
    parser.add_argument("--json", default=None, help="write the results here")
    main(parser.parse_args())
